"""Finished units of a sweep, one JSON line each, so a killed sweep resumes where it stopped.

``units.jsonl`` in the output folder gets one line per finished (model, task) unit, written and
``fsync``-ed before the next unit starts: a kill loses at most the unit in progress. A line cut
short by the kill (the last one, without its newline) is ignored on reading; any other line
that is not a unit record is an error naming the file and line, since the store would otherwise
be silently wrong; the next write removes the cut line. A unit already present is never written twice.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

FILE = "units.jsonl"


def _finite_or_none(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def encode(record: dict) -> str:
    """One line of JSON; NaN and infinities as null (JSON has neither)."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return _finite_or_none(v)

    return json.dumps(clean(record), sort_keys=True, allow_nan=False)


class UnitStore:
    """The units of one output folder (``folder=None``: in memory only, nothing kept)."""

    def __init__(self, folder=None):
        self.path = None if folder is None else Path(folder) / FILE
        self.units: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            self._read()

    def _read(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = record["key"]
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):  # the last line, cut short by a kill
                    continue
                raise ValueError(f"{self.path}:{number} is not a sweep unit record ({exc}); remove the line or "
                                 f"use a new --out") from None
            self.units[key] = record

    def __contains__(self, key: str) -> bool:
        return key in self.units

    def add(self, record: dict, write: bool = True) -> None:
        """Keep ``record`` (a dict with ``"key"``); append it to the file when ``write`` (rank 0)."""
        if record["key"] in self.units:
            return
        self.units[record["key"]] = record
        if self.path is None or not write:
            return
        line = encode(record) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_cut_line()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _drop_cut_line(self) -> None:
        """Remove a last line without its newline (a write a kill cut short), which was never a unit."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with open(self.path, "r+b") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":  # the usual case: one byte read, not the whole store per unit
                return
            f.seek(0)
            f.truncate(f.read().rfind(b"\n") + 1)
