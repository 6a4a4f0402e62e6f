"""IE checkpoints: one file per rank, written atomically, refused when another run wrote it."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .. import distributed

CHECKPOINT_NAME = "ie_checkpoint.pt"


def _fingerprint(input_ids: torch.Tensor) -> str:
    return hashlib.sha256(input_ids.cpu().numpy().tobytes()).hexdigest()[:16]


def _save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, config: dict):
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); it was left in "
                         "place: delete it or run without resume") from exc
    if not isinstance(payload, dict) or not {"config", "state", "folds_done", "batches_done"} <= payload.keys():
        raise ValueError(f"checkpoint {path} is corrupt: it does not hold an IE checkpoint (config, state, "
                         "folds_done, batches_done); it was left in place: delete it or run without resume")
    if payload.get("config") != config:
        saved = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        differ = [key for key in sorted({*saved, *config}, key=str) if saved.get(key) != config.get(key)]
        first = differ[0] if differ else None
        raise ValueError(f"checkpoint {path} was written by a different run configuration ({', '.join(map(str, differ))} "
                         f"differ; {first}: checkpoint {saved.get(first)!r}, this run {config.get(first)!r}); it was "
                         "left in place: delete it or run without resume")
    return payload


def checkpoint_path(checkpoint_dir, world) -> Path | None:
    """This rank's checkpoint file in ``checkpoint_dir`` (one per rank when there are several)."""
    if checkpoint_dir is None:
        return None
    name = CHECKPOINT_NAME if not world.distributed else \
        CHECKPOINT_NAME.replace(".pt", f".rank{world.rank}-of-{world.world_size}.pt")
    return Path(checkpoint_dir) / name


def _check_checkpoint_world(checkpoint_dir: Path, world) -> None:
    """``resume`` with another number of ranks would silently start over: refuse, naming the files."""
    ours = {checkpoint_path(checkpoint_dir, distributed.World(rank, world.world_size)).name
            for rank in range(world.world_size)}
    others = sorted(p.name for p in checkpoint_dir.glob(CHECKPOINT_NAME.replace(".pt", "*.pt")) if p.name not in ours)
    if others:
        raise ValueError(f"resume: {checkpoint_dir} holds checkpoints of a run on another number of ranks ({', '.join(others)}"
                         f"), and this run has {world.world_size}; resume with that number, or delete them to start over")
