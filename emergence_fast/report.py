"""Report: results to files and pictures. Nothing upstream writes or prints.

Every output file of every command (``ie``, ``icl``, ``mirage``, ``bench``) goes through the
three writers here, :func:`write_json`, :func:`write_csv` and :func:`write_figure`, all built
on :func:`atomic_write`, and every plain-text table through :func:`text_table`; :class:`OutputFolder` checks and locks a command's ``--out`` before
any model loads.
"""
from __future__ import annotations

import csv
import datetime
import json
import math
import os
import socket
import sys
import uuid
from pathlib import Path

import numpy as np

from ._optional import MissingDependency, require

NONFINITE_KEY = "nonfinite"
NONFINITE_NOTE = ("null in this file stands for a number that is not finite (JSON has no NaN or infinity); "
                  "'values' maps the JSON pointer (RFC 6901) of each such null to the number it stands for: "
                  "nan, inf or -inf")


def atomic_write(path, write) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    Readers never see half a file, and a failed ``write`` (any exception, Ctrl-C included)
    leaves the old file, if any, untouched and no temporary behind. The temporary name is
    hidden, unique to the call (two processes writing one path never share it) and keeps the
    suffix, so writers that infer a format from it (``savefig``) still can. Returns ``path``
    as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _plain(value):
    """numpy/torch arrays and scalars as Python lists and numbers; other values as they are."""
    if isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("torch"):
        return value.tolist() if hasattr(value, "tolist") else value
    return value


def json_ready(value, nonfinite: dict | None = None, pointer: str = ""):
    """``value`` as strict-JSON-ready Python: non-finite floats as None, dict keys as strings.

    Each replaced float is recorded in ``nonfinite`` (when given) under its JSON pointer, as
    ``"nan"``, ``"inf"`` or ``"-inf"``. numpy and torch arrays and scalars become lists and numbers.
    """
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        if nonfinite is not None:
            nonfinite[pointer] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v, nonfinite, f"{pointer}/{_escape(str(k))}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v, nonfinite, f"{pointer}/{i}") for i, v in enumerate(value)]
    return value


def _escape(key: str) -> str:  # RFC 6901: ~ and / inside a key
    return key.replace("~", "~0").replace("/", "~1")


def write_json(data, path) -> Path:
    """``data`` (a dict, or an object whose ``to_dict()`` returns one) as strict JSON, atomically.

    Numbers that are not finite are written as ``null`` (never as strings inside numeric
    arrays), and the top level then gains the key ``"nonfinite"``: ``{"note": ..., "values":
    {json pointer: "nan" | "inf" | "-inf"}}`` saying what each null stands for.

    Raises ``TypeError`` when ``data`` is not a dict (nor has ``to_dict``), or holds a value
    JSON cannot encode; ``ValueError`` when it already has a ``"nonfinite"`` key. Nothing is
    written then.
    """
    if hasattr(data, "to_dict") and not isinstance(data, dict):
        data = data.to_dict()
    if not isinstance(data, dict):
        raise TypeError(f"data must be a dict or have to_dict(), got {type(data).__name__}")
    if NONFINITE_KEY in data:
        raise ValueError(f"data must not have a top-level key {NONFINITE_KEY!r}: write_json adds it")
    nonfinite = {}
    ready = json_ready(data, nonfinite)
    if nonfinite:
        ready[NONFINITE_KEY] = {"note": NONFINITE_NOTE, "values": nonfinite}
    text = json.dumps(ready, indent=1, allow_nan=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_csv(rows, path) -> Path:
    """CSV of ``rows`` (a non-empty list of dicts, or an object whose ``to_rows()`` returns one), atomically.

    The columns are the union of the rows' keys in first-seen order; a row without a column
    leaves it empty. Floats are written by ``repr``, so they round-trip, ``nan`` and ``inf``
    included. Raises ``ValueError`` when ``rows`` is not a non-empty list of dicts.
    """
    if hasattr(rows, "to_rows") and not isinstance(rows, list):
        rows = rows.to_rows()
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("rows must be a non-empty list of dicts")
    fields = list(dict.fromkeys(key for row in rows for key in row))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows({key: _plain(value) for key, value in row.items()} for row in rows)
    return atomic_write(path, write)


def text_table(rows, header, *, left: int = 0) -> str:
    """``rows`` (lists of cells, any type, shown by ``str``) under ``header`` as aligned plain text.

    Columns are as wide as their widest cell and two spaces apart; a dashed line sits under the
    header. The first ``left`` columns (labels) are left-aligned, the others right-aligned
    (numbers). Every row must have ``len(header)`` cells; ``ValueError`` otherwise.
    """
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row must have {len(header)} cells (one per header column), "
                         f"got lengths {sorted({len(row) for row in rows})}")
    widths = [max(len(str(row[i])) for row in [*rows, header]) for i in range(len(header))]

    def line(row):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def write_figure(fig, path, dpi: int = 120) -> Path:
    """Save the matplotlib figure ``fig`` to ``path`` atomically (format from the suffix, PNG when none), then close it."""
    plt = require("matplotlib.pyplot", "writing figures")

    path = Path(path)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix[1:] or "png"))
    finally:
        plt.close(fig)


def optional_figures(plot, *args, **kwargs) -> list[Path]:
    """``plot(*args, **kwargs)``'s files as a list, or ``[]`` with a note on stderr when matplotlib is
    missing: figures are the one output a command can do without, and a long run must not fail at the end
    for want of them."""
    try:
        written = plot(*args, **kwargs)
    except MissingDependency as exc:
        print(f"emergence-fast: note: {exc}; figures skipped, every other file written", file=sys.stderr)
        return []
    return list(written) if isinstance(written, (list, tuple)) else [written]


LOCK_NAME = ".emergence-fast.lock"


class OutputFolder:
    """A command's ``--out`` folder: checked writable and locked before the work, tidied after.

    :meth:`claim` creates the folder (and missing parents), takes an exclusive ``flock`` on
    ``.emergence-fast.lock`` inside it and writes who holds it (pid, host, start time,
    command). A second run on the same folder is refused with that holder named. The kernel
    drops an ``flock`` when its process ends, however it ends, so the lock of a run that was
    killed never blocks: its file is left, but nobody holds it, and the next run takes it over.
    (``flock`` over NFS is emulated with POSIX locks by Linux; on file systems without any
    locking, concurrent runs are not detected.)

    :meth:`release` drops the lock and removes the lock file; with ``failed=True`` it also
    removes the folders :meth:`claim` created if they are still empty, so a run that stopped on
    a user error leaves nothing behind (a checkpoint worth resuming keeps its folder).
    """

    def __init__(self, path, flag: str = "--out"):
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ValueError(f"{flag} must be a folder path, got {path!r}")
        self.path = Path(path)
        self.flag = flag
        self._handle = None
        self._created: list[Path] = []

    def check(self) -> None:
        """Refuse (``ValueError``) a path that is a file or lies under a file; creates nothing."""
        for folder in (self.path, *self.path.parents):
            if folder.exists() and not folder.is_dir():
                where = "is a file" if folder == self.path else f"lies under the file {str(folder)!r}"
                raise ValueError(f"{self.flag} must be a folder, but {str(self.path)!r} {where}")

    def claim(self) -> OutputFolder:
        """Create and lock the folder (see the class docstring); ``ValueError`` naming the flag when it cannot."""
        import fcntl

        self.check()
        missing = [folder for folder in (self.path, *self.path.parents) if not folder.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{self.flag} {str(self.path)!r} cannot be created: {exc.strerror or exc}") from None
        self._created = missing  # deepest first: the order release() removes them in
        lock = self.path / LOCK_NAME
        while True:
            try:
                handle = open(lock, "a+")  # noqa: SIM115 (held, locked, until release())
            except OSError as exc:
                self._remove_created()
                raise ValueError(f"{self.flag} {str(self.path)!r} cannot be written to: {exc.strerror or exc}") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another emergence-fast run"
                handle.close()
                raise ValueError(f"{self.flag} {str(self.path)!r} is in use by {holder}; wait for it to finish or "
                                 f"choose another {self.flag}") from None
            # A run that finished between our open and our flock unlinked the file we hold: lock the new one.
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started} "
                     f"({' '.join(['emergence-fast', *sys.argv[1:]])})\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self, failed: bool = False) -> None:
        """Unlock, remove the lock file, and after a failure the folders :meth:`claim` created if empty."""
        if self._handle is None:
            return
        (self.path / LOCK_NAME).unlink(missing_ok=True)  # before closing: nobody can lock a file we still hold
        self._handle.close()
        self._handle = None
        if failed:
            self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:  # not empty (a checkpoint, someone's file) or gone: keep it
                break
        self._created = []


def plot_result(result, out_dir, layers=None) -> list[Path]:
    """Heatmap of E over layers x positions; E, macro and the ceiling against position for chosen layers."""
    matplotlib = require("matplotlib", "writing PNGs")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * len(result.positions), 1.5 + 0.18 * len(result.layers)))
    image = ax.imshow(result.emergence.numpy(), aspect="auto", cmap="RdBu_r", origin="lower",
                      vmin=-float(result.emergence.abs().nan_to_num(posinf=0, neginf=0).max()),
                      vmax=float(result.emergence.abs().nan_to_num(posinf=0, neginf=0).max()))
    ax.set_xticks(range(len(result.positions)), result.positions)
    ax.set_yticks(range(len(result.layers)), result.layers)
    ax.set_xlabel("position t")
    ax.set_ylabel("block l")
    ax.set_title(f"Information Emergence E(l, t) [{result.unit}]")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    paths.append(write_figure(fig, out_dir / "ie_heatmap.png"))

    chosen = layers if layers is not None else sorted({result.layers[0], result.layers[len(result.layers) // 2],
                                                        result.layers[-1]})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for layer in chosen:
        row = result.layers.index(layer)
        axes[0].errorbar(result.positions, result.emergence[row].numpy(), yerr=result.emergence_stderr[row].numpy(),
                         marker="o", capsize=2, label=f"E, block {layer}")
        axes[1].plot(result.positions, result.macro[row].numpy(), marker="o", label=f"macro MI, block {layer}")
    axes[0].plot(result.positions, result.ceiling_emergence.numpy(), "k--", label="ceiling of E")
    axes[1].plot(result.positions, result.ceiling_macro.numpy(), "k--", label="ceiling: prefix entropy")
    for ax, title in zip(axes, ("emergence", "sequence-level MI")):
        ax.set_xlabel("position t")
        ax.set_ylabel(result.unit)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(write_figure(fig, out_dir / "ie_positions.png"))
    return paths


def summary_table(result) -> str:
    """Per-layer means, and how the estimate's shape compares with the ceiling's."""
    summary = result.layer_summary()
    lines = [f"Information Emergence [{result.unit}], {result.config['n_samples']} samples x {result.config['seq_len']} "
             f"tokens, estimator={result.config['estimator']} {result.config['estimator_options']}",
             f"{'block':>5}  {'mean E':>9}  {'mean macro':>10}  {'mean micro':>10}"]
    for layer, e, macro, micro in zip(summary["layer"], summary["mean_emergence"], summary["mean_macro"],
                                      summary["mean_micro"]):
        lines.append(f"{layer:>5}  {e:>9.3f}  {macro:>10.3f}  {micro:>10.3f}")
    ceiling = ", ".join(f"{v:.2f}" for v in result.ceiling_macro.tolist())
    lines.append(f"peak block: {'none' if summary['peak_layer'] is None else summary['peak_layer']}; ceiling (prefix entropy) by position: [{ceiling}]")
    shape = result.shape_agreement()
    pearson, steps = shape["pearson_with_ceiling"], shape["steps_where_ceiling_steps"]
    lines.append(f"shape vs ceiling: pearson={'n/a' if pearson is None else f'{pearson:+.2f}'}, "
                 f"steps agree at {'n/a' if steps is None else f'{steps:.0%}'} of positions")
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)
