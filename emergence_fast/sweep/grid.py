"""The model axis of a sweep: what each model is, where it sits on x, and the grid of work units.

A model is named by a string (:func:`parse_model`): a local folder (a Hugging Face checkpoint,
e.g. one of ``emergence-fast make-family``'s), a ``.gguf`` file, a Hugging Face id already in the
local cache with an optional ``@revision`` (``EleutherAI/pythia-70m@step1000``), or ``default``
(the embedded SmolLM2-135M-Instruct). Models keep the order given: the *declared* order; their
x (:data:`X_KINDS`) is the training step, the parameter count, the position in the list, or
values the user gives, and curves along models are fitted against x.

A *unit* of work is one (model, task) with the task's axis values and settings: it is evaluated
in one go on the loaded model and stored as one record, so a resumed sweep skips every unit
already stored and loads a model only when one of its units is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

X_KINDS = ("step", "params", "index", "values")
_STEP_NAME = re.compile(r"(?:^|[-_/])(?:step|checkpoint|ckpt|global_step)[-_]?(\d+)$", re.IGNORECASE)
DEFAULT_ALIASES = ("default",)


@dataclass(frozen=True)
class ModelSpec:
    """A model of the sweep: ``source`` (folder, hub id or ``"default"``), ``revision`` (hub ids
    only), ``gguf_file`` (a file name inside ``source``) and its ``label`` in tables and plots."""

    source: str
    revision: str | None = None
    gguf_file: str | None = None
    label: str = ""

    @property
    def key(self) -> str:
        """Identity in the store: the resolved folder or id, revision and GGUF file."""
        return json.dumps([self.source, self.revision, self.gguf_file])

    @cached_property
    def weights(self) -> str:
        """What the weights are now, so that a checkpoint retrained at the same path is new work: for a
        folder, the name, size and modification time of its files; for a hub id, the cached snapshot
        (its commit) of the revision; ``""`` for the embedded default."""
        if self.source in DEFAULT_ALIASES:
            return ""
        folder = Path(self.source)
        if folder.is_dir():
            files = [folder / self.gguf_file] if self.gguf_file else sorted(p for p in folder.iterdir() if p.is_file())
            stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if not p.name.startswith(".")]
            return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
        if folder.is_absolute() or self.source.startswith((".", "~")):
            return ""  # a folder that is gone: nothing to fingerprint (loading it will say so)
        from .._optional import require

        found = require("huggingface_hub", "a model named by a Hugging Face id").try_to_load_from_cache(
            self.source, "config.json", revision=self.revision)
        return Path(found).parent.name if isinstance(found, str) else ""

    def load_kwargs(self) -> dict:
        return {"model": None if self.source in DEFAULT_ALIASES else self.source, "revision": self.revision,
                "gguf_file": self.gguf_file}


def parse_model(text) -> ModelSpec:
    """``FOLDER``, ``FILE.gguf``, ``HUB_ID`` or ``HUB_ID@REVISION``, or ``default``; ValueError naming ``models``."""
    if isinstance(text, ModelSpec):
        return text
    if not isinstance(text, (str, os.PathLike)) or not os.fspath(text):
        raise ValueError(f"models: each model must be a folder, a .gguf file, a Hugging Face id (optionally "
                         f"@revision) or 'default', got {text!r}")
    text = os.fspath(text)
    if text in DEFAULT_ALIASES:
        return ModelSpec("default", label="default")
    path = Path(os.path.expanduser(text))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"models: {text!r} ends in .gguf but is not a file")
        with open(path, "rb") as f:  # checked here, not at its load after the models before it
            if f.read(4) != b"GGUF":
                raise ValueError(f"models: {text!r} does not start with the GGUF magic bytes, so it is not a GGUF file")
        return ModelSpec(str(path.parent.resolve()), gguf_file=path.name, label=path.stem)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"models: {text!r} is a file, not a model folder or a .gguf file")
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if not ggufs:
                raise ValueError(f"models: the folder {text!r} holds no model (no config.json, no .gguf file)")
            raise ValueError(f"models: the folder {text!r} holds no config.json but GGUF files {ggufs}: name the "
                             f"file instead, e.g. {os.path.join(text, ggufs[0])!r}")
        # What a load would refuse, refused here: a sweep must not stop at its tenth model for it.
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ValueError(f"models: the folder {text!r} holds a config.json but no weights (*.safetensors, *.bin)")
        from ..models import _check_tokenizer_files

        try:
            _check_tokenizer_files(path)
        except ValueError as exc:
            raise ValueError(f"models: {exc}") from None
        return ModelSpec(str(path.resolve()), label=path.name)
    source, _, revision = text.partition("@")
    if "@" in text and not revision:
        raise ValueError(f"models: {text!r} ends in '@' with no revision after it")
    if not source:
        raise ValueError(f"models: {text!r} names a revision but no model before the '@'")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ValueError(f"models: {text!r} is neither an existing folder nor a Hugging Face id (owner/name[@revision])")
    return ModelSpec(source, revision or None, label=f"{source}@{revision}" if revision else source)


def check_cached(spec: ModelSpec) -> None:
    """A hub id (at its revision) must be in the local Hugging Face cache: checked before any work,
    so a sweep does not stop at its tenth model for a typo in it. ValueError naming ``models``."""
    if spec.source in DEFAULT_ALIASES or Path(spec.source).is_dir():
        return
    from .._optional import require

    hub = require("huggingface_hub", "a model named by a Hugging Face id")
    try:
        found = hub.try_to_load_from_cache(spec.source, "config.json", revision=spec.revision)
    except ValueError as exc:  # HFValidationError: not the form of an id (often a shell glob that matched nothing)
        raise ValueError(f"models: {spec.source!r} is neither an existing folder nor a Hugging Face id: {exc}") from None
    if not isinstance(found, str):
        at = "" if spec.revision is None else f" at revision {spec.revision!r}"
        raise ValueError(f"models: {spec.source!r}{at} is not in the local Hugging Face cache (no config.json), and "  # noqa: TRY004 (a cache miss, not a wrong type)
                         f"emergence_fast never downloads at run time; check the id and the revision")


def parse_models(models) -> list[ModelSpec]:
    """Every entry parsed, at least one, none named twice (after resolving paths), hub ids cached."""
    if isinstance(models, (str, os.PathLike, ModelSpec)):
        models = [models]
    specs = [parse_model(m) for m in models]
    for spec in specs:
        check_cached(spec)
    if not specs:
        raise ValueError("models: the list is empty; name at least one model")
    seen = {}
    for spec in specs:
        seen.setdefault(spec.key, []).append(spec.label)
    repeated = [labels for labels in seen.values() if len(labels) > 1]
    if repeated:
        raise ValueError("models: each model once; named more than once: " + "; ".join(" and ".join(r) for r in repeated))
    labels = [s.label for s in specs]
    if len(set(labels)) < len(labels):  # two folders of the same name in different places
        specs = [ModelSpec(s.source, s.revision, s.gguf_file, s.source if s.gguf_file is None else
                           f"{s.source}/{s.gguf_file}") if labels.count(s.label) > 1 else s for s in specs]
    return specs


def checkpoint_step(spec: ModelSpec) -> int | None:
    """The training step of a checkpoint, if something records it: the folder's
    ``emergence_fast.json`` (``make-family``), a Trainer's ``trainer_state.json`` (``global_step``),
    a revision such as ``step1000`` (Pythia) or a folder name ending ``step-1000``/``checkpoint-1000``."""
    folder = Path(spec.source)
    if spec.revision is None and folder.is_dir():
        for name, key in (("emergence_fast.json", "step"), ("trainer_state.json", "global_step")):
            path = folder / name
            if path.is_file():
                try:
                    value = json.loads(path.read_text(encoding="utf-8")).get(key)
                except (ValueError, AttributeError) as exc:
                    raise ValueError(f"models: {str(path)!r} is not a JSON object with {key!r}: {exc}") from None
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    return value
    for text in ((spec.revision,) if spec.revision else (folder.name,)):
        match = _STEP_NAME.search(text)
        if match:
            return int(match.group(1))
    return None


def family_info(spec: ModelSpec) -> dict | None:
    """The ``emergence_fast.json`` of a ``make-family`` checkpoint, or None."""
    path = Path(spec.source) / "emergence_fast.json"
    if spec.revision is not None or not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"models: {str(path)!r} is not valid JSON: {exc}") from None
    return info if isinstance(info, dict) else None


def unfinished_family(spec: ModelSpec) -> str | None:
    """The folder of the ``make-family`` run ``spec`` is a checkpoint of, when that run has not
    finished (no ``family.json`` yet: killed, or still training), else None."""
    from ..families.induction import FAMILY_FILE

    if family_info(spec) is None or (Path(spec.source).parent / FAMILY_FILE).is_file():
        return None
    return str(Path(spec.source).parent)


def unit_key(spec: ModelSpec, task: str, values, settings: dict, dtype: str | None = None) -> str:
    """A unit's identity in the store: model, its weights (:attr:`ModelSpec.weights`), task, axis values,
    the settings the task reads and the
    weights' ``dtype`` name (None or ``"float32"``, the default, leave it out: float32 units keep their keys)."""
    unit = {"model": spec.key, "weights": spec.weights, "task": task, "values": list(values), "settings": settings}
    if dtype not in (None, "float32"):
        unit["dtype"] = dtype
    text = json.dumps(unit, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
