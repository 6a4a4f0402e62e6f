"""``emergence-fast bench``: throughput of a model under Information Emergence scoring, of the ICL
prompt runner, and of every native kernel against a peer measured in the same run.

Three parts, each with absolute rates and the ratio to its peer:

* **model**: tokens/s of a bare ``model(input_ids)`` forward (logits included) against the IE
  macro pass (hooks at every block + streaming Gaussian accumulation) on the same token batches,
  the overhead ``macro_pass_s / bare_forward_s - 1``, and the micro-pass and estimate-stage times;
* **icl**: judgment-style prompts/s of :class:`~emergence_fast.icl.runner.PromptRunner` (batched,
  shared-prefix KV cache) against one prompt per forward, with the largest readout difference;
* **kernels**: per available backend, ``ops.gram.gram`` against dense ``torch.matmul``
  (GFLOP/s), the fused softmax entropy against ``Tensor.clone`` of the same logits (GB/s,
  fraction of copy bandwidth) and the max-norm kNN search with KSG counts against scipy's
  ``cKDTree`` (queries/s).

Writes ``DIR/bench.json`` atomically and prints a table. ``--quick`` uses small sizes (tests, CI).
Register the subcommand with :func:`add_parser`; it sets ``func=run``. Python API: :func:`run_bench`.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from ._validation import check_positive_float, check_positive_int
from ._version import __version__
from .report import OutputFolder, text_table, write_json

BENCH_FILE = "bench.json"
ICL_CONCEPTS = ((0, 1), (0, 1, 1))
KNN_K = 3


# ---------------------------------------------------------------- sizes


def default_sizes(quick: bool = False, device: str = "cpu") -> dict:
    """The sizes :func:`run_bench` uses unless told otherwise.

    Parameters
    ----------
    quick : bool
        Small sizes that finish in seconds on a tiny model (tests, CI).
    device : str
        ``"cpu"`` or ``"cuda"``: kernel shapes are larger on a GPU.

    Returns
    -------
    dict
        ``n_samples`` (sequences for the model part), ``k_shots`` (ICL shots; ``T = 2 k_shots``
        tokens per sequence), ``batch_size`` (sequences per forward), ``icl_max_len`` (longest
        context in flips; ``2 * icl_max_len`` prompts), ``icl_batch_size``, ``repeats`` (timed
        samples per kernel, median reported), ``min_time_s`` (seconds per timed sample, at least),
        ``gram_shapes`` ``[(B, N, d)]``, ``entropy_shapes`` ``[(rows, V)]``, ``knn_shapes``
        ``[(B, N, dx, dy)]`` and ``dtypes`` (kernel dtypes, names).
    """
    gpu = device == "cuda"
    if quick:
        return {"n_samples": 64, "k_shots": 4, "batch_size": 32, "icl_max_len": 4, "icl_batch_size": 16,
                "repeats": 3, "min_time_s": 0.002,
                "gram_shapes": [(1, 1024, 128), (8, 256, 32)], "entropy_shapes": [(16, 8192)],
                "knn_shapes": [(2, 512, 2, 2)], "dtypes": ["float32"]}
    sizes = {"n_samples": 256, "k_shots": 4, "batch_size": 64, "icl_max_len": 12, "icl_batch_size": 32,
             "repeats": 5, "min_time_s": 0.05, "dtypes": ["float32"]}
    if gpu:
        sizes.update(gram_shapes=[(1, 65536, 1152), (240, 4096, 256)],
                     entropy_shapes=[(4096, 50257), (1024, 256000)],
                     knn_shapes=[(8, 8192, 4, 4), (1, 32768, 1, 1)], dtypes=["float32", "bfloat16"])
    else:
        sizes.update(gram_shapes=[(1, 8192, 576), (32, 1024, 64)], entropy_shapes=[(64, 49152), (8, 256000)],
                     knn_shapes=[(4, 4096, 4, 4), (1, 8192, 1, 1)])
    return sizes


_SCALARS = ("n_samples", "k_shots", "batch_size", "icl_max_len", "icl_batch_size", "repeats")


def _check_scalars(sizes: dict, name) -> None:
    """Each of ``sizes`` a positive integer, ``n_samples`` at least 17; ValueError naming ``name(key)`` otherwise."""
    for key, value in sizes.items():
        check_positive_int(value, name(key))
    if sizes.get("n_samples", 17) < 17:
        raise ValueError(f"{name('n_samples')} must be at least 17 (IE's default estimator, top-8 PCA with the Wishart "
                         f"correction, needs more than 16 samples), got {sizes['n_samples']}")


def _check_sizes(sizes: dict, flag: bool = False) -> dict:
    """Positive integers and shapes, or a ValueError naming the argument (``--x-y`` when ``flag``)."""
    def name(key):
        return "--" + key.replace("_", "-") if flag else key

    _check_scalars({key: sizes[key] for key in _SCALARS}, name)
    if check_positive_float(sizes["min_time_s"], name("min_time_s"), allow_zero=True) > 60:
        raise ValueError(f"{name('min_time_s')} must be a number of seconds in [0, 60], got {sizes['min_time_s']!r}")
    for key, arity in (("gram_shapes", 3), ("entropy_shapes", 2), ("knn_shapes", 4)):
        shapes = sizes[key]
        if not isinstance(shapes, (list, tuple)):
            raise ValueError(f"{name(key)} must be a list of shapes, got {type(shapes).__name__}")
        for shape in shapes:
            if not isinstance(shape, (list, tuple)) or len(shape) != arity:
                raise ValueError(f"{name(key)} entries must be {arity} positive integers, got {shape!r}")
            for size in shape:
                check_positive_int(size, f"each size in {name(key)} entry {list(shape)!r}")
    for shape in sizes["knn_shapes"]:
        if shape[1] <= KNN_K:
            raise ValueError(f"{name('knn_shapes')}: N must exceed k={KNN_K}, got {shape!r}")
    for dtype in sizes["dtypes"]:
        if dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ValueError(f"{name('dtypes')} entries must be float32, bfloat16, float16 or float64, got {dtype!r}")
    return sizes


def _check_out_dir(out_dir) -> Path:
    name = "out_dir"
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ValueError(f"{name} must be a folder path, got {out_dir!r}")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} must be a folder, but {str(path)!r} is a file")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{name}: {str(parent)!r} in {str(path)!r} is a file, not a folder")
    try:  # fail now, not after minutes of measuring
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{name} {str(path)!r} cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{name} {str(path)!r} is not writable")
    return path


# ---------------------------------------------------------------- timing and provenance


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device, repeats: int = 5, min_time_s: float = 0.05) -> float:
    """Median wall time of one call of ``fn``, in seconds.

    One warm-up call, then one call to size the inner loop so that a timed sample lasts at least
    ``min_time_s`` seconds (at most 1000 calls; when one call is enough, that call is the first
    sample), then ``repeats`` samples in all; CUDA is synchronised around every sample.

    Parameters
    ----------
    fn : callable
        Called with no arguments.
    device : torch.device or str
        Where ``fn`` runs (decides whether to synchronise).
    repeats : int
        Timed samples; their median is returned.
    min_time_s : float
        Seconds, the shortest timed sample.

    Returns
    -------
    float
        Seconds per call.
    """
    device = torch.device(device)
    fn()
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    once = time.perf_counter() - start
    number = max(1, min(1000, math.ceil(min_time_s / max(once, 1e-9))))
    samples = [once] if number == 1 else []  # a slow call's sizing run is already a sample
    while len(samples) < repeats:
        _sync(device)
        start = time.perf_counter()
        for _ in range(number):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device) -> str:
    """The accelerator's name (CUDA), or the CPU's model name and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{_cpu_name()}, {os.cpu_count()} CPUs"


def _provenance(model, device, command, model_source) -> dict:
    from .capture import model_identity

    identity = model_identity(model)
    identity["source"] = model_source
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "emergence_fast": __version__, "torch": torch.__version__, "device": str(device),
            "device_name": machine_description(device), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "load_average_at_start": load,
            "command": command, "model": identity}


# ---------------------------------------------------------------- model: bare forward vs IE


def _benchmark_data(tokenizer, model, n_samples: int, k_shots: int, seed: int = 0):
    """``(dataset_or_ids, description)``: icl-animal with a real tokenizer, else seeded random ids."""
    from . import datasets

    note = None
    if tokenizer is not None:
        try:
            data = datasets.load_dataset("icl-animal", tokenizer, n_samples, k_shots=k_shots, seed=seed)
            return data, f"icl-animal, N={n_samples}, {k_shots} shots"
        except ValueError as exc:  # a tokenizer without one-token animals: still benchmark the model
            note = f"icl-animal unavailable for this tokenizer ({exc})"
    vocab = int(model.get_input_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n_samples, 2 * k_shots), generator=generator)
    description = f"random ids, N={n_samples}"
    return ids, description + (f"; {note}" if note else "")


def bench_model(model, tokenizer, *, n_samples: int, k_shots: int, batch_size: int, backend=None) -> dict:
    """Tokens/s of a bare forward and of the Information Emergence macro pass on the same batches.

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM (Hugging Face), in eval mode.
    tokenizer : tokenizer or None
        With a real tokenizer the data are ``icl-animal`` samples; ``None`` gives seeded random ids.
    n_samples, k_shots, batch_size : int
        ``n_samples`` sequences of ``T = 2 k_shots`` tokens (plus BOS when the tokenizer adds one),
        ``batch_size`` per forward.
    backend : str, optional
        Backend of the IE accumulation (default: automatic).

    Returns
    -------
    dict
        ``tokens`` (count), ``bare_forward_s`` and ``ie_macro_pass_s`` (seconds), ``bare_tokens_per_s``
        and ``ie_tokens_per_s`` (tokens/s), ``overhead`` (``ie_macro_pass_s / bare_forward_s - 1``, a
        fraction), ``ratio`` (``ie_tokens_per_s / bare_tokens_per_s``), the IE timings in seconds
        (``ie_forward_s``, ``ie_accumulate_s``, ``ie_pilot_s``: state setup, ``ie_micro_pass_s``,
        ``ie_estimate_s``, ``ie_total_s``), the kind of IE state (``ie_state``) and a description of the data.
    """
    from .capture import input_device
    from .emergence import information_emergence

    data, description = _benchmark_data(tokenizer, model, n_samples, k_shots)
    input_ids = data.input_ids if hasattr(data, "input_ids") else data
    device = input_device(model)
    with torch.no_grad():
        model(input_ids[:batch_size].to(device))  # warm-up: allocator and kernel setup, paid by neither side
    _sync(device)
    result = information_emergence(model, tokenizer, data, batch_size=batch_size, backend=backend)
    t = result.provenance["timings"]
    macro = t["macro_pass_s"]
    bos = result.config["bos"]  # the bare pass sees exactly the tokens IE fed
    ids = input_ids if bos is None else torch.cat([torch.full((input_ids.shape[0], 1), bos), input_ids], 1)
    ids = ids.to(device)
    tokens = ids.numel()
    with torch.no_grad():
        _sync(device)
        start = time.perf_counter()
        for lo in range(0, ids.shape[0], batch_size):
            model(ids[lo:lo + batch_size])
        _sync(device)
        bare = time.perf_counter() - start
    bare_rate, ie_rate = tokens / bare, tokens / macro
    return {"data": description, "n_samples": int(ids.shape[0]), "seq_len": int(ids.shape[1]),
            "batch_size": batch_size, "layers": len(result.layers), "positions": len(result.positions),
            "ie_state": (result.config.get("state") or {}).get("kind"),
            "tokens": tokens, "bare_forward_s": bare, "bare_tokens_per_s": bare_rate,
            "ie_macro_pass_s": macro, "ie_tokens_per_s": ie_rate, "ie_tokens_per_s_reported": t["tokens_per_s_macro"],
            "ratio": ie_rate / bare_rate, "overhead": macro / bare - 1,
            "ie_forward_s": t["forward_s"], "ie_accumulate_s": t["accumulate_s"],
            "ie_pilot_s": t.get("pilot_s", 0.0), "ie_micro_pass_s": t["micro_pass_s"], "ie_estimate_s": t["estimate_s"],
            "ie_total_s": t.get("pilot_s", 0.0) + macro + t["micro_pass_s"] + t["estimate_s"]}


# ---------------------------------------------------------------- ICL prompts


class _IdsOnly:
    """Stands in for a tokenizer when prompts are given as token ids (PromptRunner never encodes them)."""

    def __call__(self, *args, **kwargs):
        raise TypeError("this benchmark runs token-id prompts and has no tokenizer")

    def batch_decode(self, *args, **kwargs):
        raise TypeError("this benchmark runs token-id prompts and has no tokenizer")


def _max_positions(model):
    config = getattr(model, "config", None)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def _icl_prompts(model, tokenizer, max_len: int, seed: int = 0):
    """Judgment prompts for (01)^n and (011)^n, n = 1..max_len, as token ids, and their description."""
    from .icl import prompts as P
    from .icl.runner import PromptRunner

    contexts = [P.concept_context(c, n) for c in ICL_CONCEPTS for n in range(1, max_len + 1)]
    if tokenizer is not None:
        seqs = PromptRunner(model, tokenizer).encode([P.judgment_prompt(x) for x in contexts])
        description = "judgment prompts"
    else:
        # The judgment prompt's shape in token ids: a fixed header, one (flip, comma) pair per
        # flip, a fixed question; ids drawn once from the vocabulary with a seeded generator.
        vocab = int(model.get_input_embeddings().weight.shape[0])
        pick = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))[:15].tolist()
        header, question, (heads, tails, comma) = pick[:8], pick[8:12], pick[12:15]
        seqs = [tuple(header + [t for f in x for t in ((tails if f else heads), comma)] + question) for x in contexts]
        description = "judgment-shaped token-id prompts (no tokenizer)"
    longest = max(map(len, seqs))
    limit = _max_positions(model)
    if limit is not None and longest > limit:
        raise ValueError(f"icl_max_len={max_len} gives prompts of {longest} tokens; the model takes {limit}")
    return seqs, f"{description}, (01)^n and (011)^n, n = 1..{max_len}"


def bench_icl(model, tokenizer, *, max_len: int, batch_size: int) -> dict:
    """Prompts/s of the batched, prefix-cached :class:`PromptRunner` against one prompt per forward.

    Both read the entropy (nats) of the next-token distribution after each prompt (one pass over
    the full vocabulary); ``max_abs_diff`` is the largest difference between the two readouts.

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM.
    tokenizer : tokenizer or None
        Encodes the judgment prompts; ``None`` uses judgment-shaped token-id prompts.
    max_len : int
        Longest context in flips: ``2 * max_len`` prompts.
    batch_size : int
        Rows per forward of the batched runner.

    Returns
    -------
    dict
        ``prompts``, ``single_s`` / ``batched_s`` (seconds), ``single_prompts_per_s`` /
        ``batched_prompts_per_s`` (prompts/s), ``ratio`` (batched / single), tokens fed by each,
        forward calls and ``max_abs_diff`` (nats).
    """
    import inspect

    from .capture import input_device
    from .estimators.token_entropy import token_entropy
    from .icl.runner import PromptRunner

    seqs, description = _icl_prompts(model, tokenizer, max_len)
    device = input_device(model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

    def readout(logits):
        return token_entropy(logits.float())

    with torch.no_grad():
        model(torch.tensor([seqs[0]], device=device))  # warm-up
        _sync(device)
        start = time.perf_counter()
        single = torch.cat([readout(model(torch.tensor([s], device=device), **keep).logits[:, -1]) for s in seqs])
        _sync(device)
        single_s = time.perf_counter() - start
    runner = PromptRunner(model, tokenizer if tokenizer is not None else _IdsOnly(), batch_size=batch_size,
                          prefix_cache=True)
    start = time.perf_counter()
    batched = runner.map_last_logits(seqs, readout)
    _sync(device)
    batched_s = time.perf_counter() - start
    n = len(seqs)
    return {"prompts": description, "n_prompts": n, "batch_size": batch_size,
            "single_s": single_s, "single_prompts_per_s": n / single_s, "single_tokens_fed": sum(map(len, seqs)),
            "batched_s": batched_s, "batched_prompts_per_s": n / batched_s,
            "batched_tokens_fed": runner.stats.tokens_fed, "batched_forward_calls": runner.stats.forward_calls,
            "ratio": single_s / batched_s,
            "max_abs_diff": float((batched.cpu().double() - single.cpu().double()).abs().max())}


# ---------------------------------------------------------------- kernels


def kernel_backends(device) -> tuple[list[str], list[dict]]:
    """Backends to time on ``device`` and the ones skipped, with the reason.

    The Triton interpreter (Triton on a CPU) is a correctness tool, hundreds of times slower than
    the torch path, so it is skipped on CPU even when ``TRITON_INTERPRET=1`` makes it available.
    """
    from . import backends

    device = torch.device(device)
    use, skipped = [], []
    for name, status in backends().items():
        if not status.available or device.type not in status.devices:
            skipped.append({"backend": name, "reason": status.reason})
        elif name == "triton" and device.type == "cpu":
            skipped.append({"backend": name, "reason": "Triton interpreter on CPU: a correctness tool, not timed"})
        else:
            use.append(name)
    return use, skipped


def _row(op, shape, dtype, backend, device, seconds, rate, unit, peer, peer_seconds, peer_rate, **extra) -> dict:
    return {"op": op, "shape": list(shape), "dtype": dtype, "backend": backend, "device": str(device),
            "seconds": seconds, "rate": rate, "unit": unit, "peer": peer, "peer_seconds": peer_seconds,
            "peer_rate": peer_rate, "ratio": rate / peer_rate, **extra}


def _bench_gram(shape, dtype, device, names, timing) -> list[dict]:
    from .ops.gram import gram

    batch, n, d = shape
    a = torch.randn(batch, n, d, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    gflop = 2 * batch * n * d * d / 1e9
    peer_s = median_time(lambda: torch.matmul(a.transpose(-1, -2), a), device, **timing)
    reference = torch.matmul(a.double().transpose(-1, -2), a.double())
    rows = []
    for name in names:
        seconds = median_time(lambda: gram(a, a, backend=name), device, **timing)
        error = float(((gram(a, a, backend=name).double() - reference).abs().max()
                       / reference.abs().max().clamp_min(1e-300)))
        rows.append(_row("gram", shape, str(dtype)[6:], name, device, seconds, gflop / seconds, "GFLOP/s",
                         "torch.matmul", peer_s, gflop / peer_s, max_rel_error=error))
    return rows


def _bench_entropy(shape, dtype, device, names, timing) -> list[dict]:
    from .ops.softmax_entropy import softmax_entropy, softmax_entropy_torch

    logits = (4 * torch.randn(*shape, generator=torch.Generator().manual_seed(1))).to(device=device, dtype=dtype)
    gbytes = logits.numel() * logits.element_size() / 1e9
    peer_s = median_time(logits.clone, device, **timing)
    peer_rate = 2 * gbytes / peer_s  # a copy reads and writes every byte
    reference = softmax_entropy_torch(logits.double())
    rows = []
    for name in names:
        seconds = median_time(lambda: softmax_entropy(logits, backend=name), device, **timing)
        error = float((softmax_entropy(logits, backend=name).double() - reference).abs().max())
        rows.append(_row("softmax_entropy", shape, str(dtype)[6:], name, device, seconds, gbytes / seconds, "GB/s",
                         "Tensor.clone", peer_s, peer_rate, max_abs_error_nats=error))
    return rows


def _tree_counts(z, dx: int, k: int, workers: int):
    """KSG variant-1 counts with scipy's cKDTree (max-norm), one cell ``z [N, D]`` (float64 numpy)."""
    import numpy as np
    from scipy.spatial import cKDTree

    eps = cKDTree(z).query(z, k=k + 1, p=np.inf, workers=workers)[0][:, -1]
    radius = np.nextafter(eps, 0.0)  # cKDTree counts d <= r; KSG variant 1 counts d < eps
    counts = [cKDTree(m).query_ball_point(m, radius, p=np.inf, return_length=True, workers=workers) - 1
              for m in (z[:, :dx], z[:, dx:])]
    return eps, counts[0], counts[1]


def _bench_knn(shape, device, names, timing) -> list[dict]:
    import numpy as np

    from .ops.knn import knn_maxnorm

    batch, n, dx, dy = shape
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(batch, n, dx, generator=generator)
    z = torch.cat([x, x[..., :1].expand(-1, -1, dy) + torch.randn(batch, n, dy, generator=generator)], -1)
    cells = z.double().numpy()
    workers = torch.get_num_threads()
    peer_s = median_time(lambda: [_tree_counts(c, dx, KNN_K, workers) for c in cells], "cpu", **timing)
    tree = [_tree_counts(c, dx, KNN_K, workers) for c in cells]
    tree_nx = torch.from_numpy(np.stack([t[1] for t in tree]))
    z_dev = z.to(device)
    queries = batch * n
    rows = []
    for name in names:
        seconds = median_time(lambda: knn_maxnorm(z_dev, dx, KNN_K, 1, backend=name), device, **timing)
        _, n_x, _ = knn_maxnorm(z_dev, dx, KNN_K, 1, backend=name)
        agree = float((n_x.cpu() == tree_nx).double().mean())
        rows.append(_row("knn_maxnorm (KSG counts)", shape, "float32", name, device, seconds, queries / seconds,
                         "queries/s", "scipy cKDTree (f64, CPU)", peer_s, queries / peer_s, k=KNN_K,
                         counts_agree_with_peer=agree))
    return rows


def bench_kernels(device, *, gram_shapes, entropy_shapes, knn_shapes, dtypes=("float32",), repeats=5,
                  min_time_s=0.05) -> tuple[list[dict], list[dict]]:
    """Each native kernel per available backend against a peer, timed in the same run.

    Parameters
    ----------
    device : torch.device or str
        Where the kernels run.
    gram_shapes : list of (B, N, d)
        ``a [B, N, d]``; ``gram(a, a)`` against ``torch.matmul(a^T, a)``, rate ``2 B N d^2`` flop
        per call, in GFLOP/s.
    entropy_shapes : list of (rows, V)
        Logits; the fused softmax entropy's rate is the bytes it reads per second (GB/s) and the
        peer is ``logits.clone()``, counted as read + write bytes per second: the ratio is the
        fraction of copy bandwidth.
    knn_shapes : list of (B, N, dx, dy)
        ``B`` cells of ``N`` points; the max-norm k-NN search with KSG variant-1 counts (``k=3``)
        against three scipy ``cKDTree`` searches per cell (joint ``query``, two marginal
        ``query_ball_point``; CPU, float64, ``workers`` = torch's threads), in queries/s.
    dtypes : sequence of str
        Dtypes for the Gram and entropy rows (kNN is float32).
    repeats : int
        Timed samples per measurement; the median is reported.
    min_time_s : float
        Seconds, the shortest timed sample.

    Returns
    -------
    rows : list of dict
        ``op``, ``shape``, ``dtype``, ``backend``, ``seconds`` (median per call), ``rate`` and
        ``unit``, ``peer``, ``peer_seconds``, ``peer_rate``, ``ratio`` (``rate / peer_rate``) and a
        correctness check against the peer or a float64 reference.
    skipped : list of dict
        Backends not timed here and why.
    """
    device = torch.device(device)
    names, skipped = kernel_backends(device)
    timing = {"repeats": repeats, "min_time_s": min_time_s}
    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for shape in gram_shapes:
            rows += _bench_gram(tuple(shape), dtype, device, names, timing)
        for shape in entropy_shapes:
            rows += _bench_entropy(tuple(shape), dtype, device, names, timing)
    for shape in knn_shapes:
        rows += _bench_knn(tuple(shape), device, names, timing)
    return rows, skipped


# ---------------------------------------------------------------- all of it


def run_bench(model, tokenizer=None, *, out_dir=None, quick: bool = False, sizes: dict | None = None,
              backend: str | None = None, model_source: str | None = None, command: str | None = None,
              out=None) -> dict:
    """Benchmark ``model`` (IE scoring, ICL prompts) and the native kernels; write ``bench.json``.

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM in eval mode; the kernels run on its device.
    tokenizer : tokenizer, optional
        A real tokenizer gives icl-animal data and judgment prompts; ``None`` seeded random ids
        and judgment-shaped id prompts (tiny random models, tests).
    out_dir : str or path, optional
        Folder for ``bench.json`` (created; written atomically). ``None`` writes nothing.
    quick : bool
        Start from the small sizes of ``default_sizes(quick=True)``.
    sizes : dict, optional
        Overrides of :func:`default_sizes` keys.
    backend : str, optional
        Backend of the IE accumulation.
    model_source, command : str, optional
        Recorded in the provenance.
    out : file, optional
        Where the table is printed (default stdout); ``False`` prints nothing.

    Returns
    -------
    dict
        ``{"provenance", "sizes", "model", "icl", "kernels", "skipped_backends"}`` as written to
        ``bench.json``: absolute rates (units in the keys or ``unit``) and their ratios to peers.

    Raises
    ------
    ValueError
        Naming the argument: ``out_dir`` is a file, or a size is not a positive integer.
    """
    from .capture import input_device

    device = input_device(model)
    merged = default_sizes(quick, device.type)
    if sizes:
        unknown = set(sizes) - set(merged)
        if unknown:
            raise ValueError(f"sizes has unknown keys {sorted(unknown)}; known: {sorted(merged)}")
        merged.update(sizes)
    _check_sizes(merged)
    path = _check_out_dir(out_dir) if out_dir is not None else None

    provenance = _provenance(model, device, command or "run_bench(...)",
                             model_source or getattr(getattr(model, "config", None), "_name_or_path", "") or None)
    was_training = model.training
    model.eval()
    try:
        model_part = bench_model(model, tokenizer, n_samples=merged["n_samples"], k_shots=merged["k_shots"],
                                 batch_size=merged["batch_size"], backend=backend)
        icl_part = bench_icl(model, tokenizer, max_len=merged["icl_max_len"], batch_size=merged["icl_batch_size"])
    finally:
        model.train(was_training)
    rows, skipped = bench_kernels(device, gram_shapes=merged["gram_shapes"], entropy_shapes=merged["entropy_shapes"],
                                  knn_shapes=merged["knn_shapes"], dtypes=merged["dtypes"],
                                  repeats=merged["repeats"], min_time_s=merged["min_time_s"])
    result = {"provenance": provenance, "sizes": merged, "model": model_part, "icl": icl_part, "kernels": rows,
              "skipped_backends": skipped}
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        result["path"] = str(write_json(result, path / BENCH_FILE))
    if out is not False:
        print(format_table(result), file=out or sys.stdout)
        if path is not None:
            print(f"wrote {result['path']}", file=out or sys.stdout)
    return result


# ---------------------------------------------------------------- table


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"


def format_table(result: dict) -> str:
    """The benchmark as readable text: provenance line, model, ICL and kernel tables."""
    p, m, icl = result["provenance"], result["model"], result["icl"]
    lines = [f"emergence_fast {p['emergence_fast']} bench  {p['date']}",
             f"model {p['model']['source'] or p['model']['name']} ({p['model']['n_parameters']:,} parameters, "
             f"{p['model']['dtype']}) on {p['device']}: {p['device_name']}, torch {p['torch']}, {p['threads']} threads",
             "", f"Model: bare forward vs IE macro pass ({m['data']}; T={m['seq_len']}, batch {m['batch_size']}, "
             f"{m['layers']} blocks x {m['positions']} positions, {m['tokens']:,} tokens)",
             text_table([["bare forward (logits included)", f"{m['bare_forward_s']:.2f}", _num(m["bare_tokens_per_s"]), "-"],
                     ["IE macro pass (capture + accumulate)", f"{m['ie_macro_pass_s']:.2f}",
                      _num(m["ie_tokens_per_s"]), f"{100 * m['overhead']:+.0f}%"],
                     ["  of which accumulate", f"{m['ie_accumulate_s']:.2f}", "", ""],
                     *([[f"IE state setup ({m.get('ie_state') or 'state'}; pilot pass if subspace)",
                         f"{m['ie_pilot_s']:.2f}", "", ""]] if m["ie_pilot_s"] > 0.005 else []),
                     ["IE micro pass", f"{m['ie_micro_pass_s']:.2f}", "", ""],
                     ["IE estimates", f"{m['ie_estimate_s']:.2f}", "", ""]],
                    ["pass", "seconds", "tokens/s", "overhead"], left=1),
             "", f"ICL: {icl['prompts']} ({icl['n_prompts']} prompts; readouts agree to {icl['max_abs_diff']:.1e} nats)",
             text_table([["one prompt per forward", f"{icl['single_s']:.2f}", _num(icl["single_prompts_per_s"]),
                      f"{icl['single_tokens_fed']:,}", "1.0x"],
                     [f"PromptRunner, batch {icl['batch_size']} + prefix cache", f"{icl['batched_s']:.2f}",
                      _num(icl["batched_prompts_per_s"]), f"{icl['batched_tokens_fed']:,}", f"{icl['ratio']:.1f}x"]],
                    ["method", "seconds", "prompts/s", "tokens fed", "speed-up"], left=1),
             "", "Kernels vs peers (same device, same run; ratio = rate / peer rate)"]
    rows = [[r["op"], "x".join(map(str, r["shape"])), r["dtype"], r["backend"], f"{r['seconds'] * 1e3:.3g}",
             f"{_num(r['rate'])} {r['unit']}", r["peer"], f"{_num(r['peer_rate'])} {r['unit']}", f"{r['ratio']:.2f}"]
            for r in result["kernels"]]
    lines.append(text_table(rows, ["op", "shape", "dtype", "backend", "ms", "rate", "peer", "peer rate", "ratio"], left=1))
    if result["skipped_backends"]:
        lines.append("skipped: " + "; ".join(f"{s['backend']} ({s['reason']})" for s in result["skipped_backends"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="local folder or cached Hugging Face id (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--gguf-file", help="GGUF file name inside --model (default: none, the folder's weights)")
    parser.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cuda when available, else cpu)")
    parser.add_argument("--out", default="runs/bench", help="output folder for bench.json; locked while a run uses it")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds on a tiny model; CI)")
    sized = " (default: the --quick or full size for the device, recorded in bench.json's sizes)"
    parser.add_argument("--n-samples", type=int, default=None, help="sequences for the bare-forward vs IE part" + sized)
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per forward" + sized)
    parser.add_argument("--icl-max-len", type=int, default=None, help="longest ICL context in flips (2x prompts)" + sized)
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per kernel (median reported)" + sized)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--backend", default=None, help="backend of the IE accumulation (default: auto)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``); sets ``func=run``."""
    if not hasattr(subparsers, "add_parser"):
        raise TypeError(f"subparsers must come from ArgumentParser.add_subparsers, got {type(subparsers).__name__}")
    parser = subparsers.add_parser("bench", help="throughput: IE scoring vs bare forward, ICL prompts, kernels vs peers",
                                   description=__doc__.split("\n\n")[0].replace("``", ""))
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args, out=None) -> dict:
    """Run the benchmark described by ``args`` (from :func:`add_parser`); return the result dict.

    Raises ValueError naming the command-line argument on bad input, before ``--out`` is
    created and locked (:class:`emergence_fast.report.OutputFolder`) and before the model
    loads; a run that fails leaves no folder it created behind.
    """
    from . import models

    sizes = {key: getattr(args, key) for key in ("n_samples", "batch_size", "icl_max_len", "repeats")
             if getattr(args, key, None) is not None}
    folder = OutputFolder(args.out)
    folder.check()
    _check_scalars(sizes, lambda key: "--" + key.replace("_", "-"))
    threads = getattr(args, "threads", None)
    if threads is not None:
        check_positive_int(threads, "--threads")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {args.device!r} is not a torch device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device!r}: no CUDA device is visible")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:i], got {args.device!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    command = getattr(args, "command_line", None) or shlex.join(["emergence-fast", *sys.argv[1:]])
    folder.claim()
    try:
        model, tokenizer = models.load_model(args.model, gguf_file=args.gguf_file, device=device)
        result = run_bench(model, tokenizer, out_dir=args.out, quick=args.quick, sizes=sizes, backend=args.backend,
                           model_source=args.model or models.DEFAULT_MODEL, command=command, out=out)
    except BaseException:
        folder.release(failed=True)
        raise
    folder.release()
    return result


def main(argv=None) -> int:
    """``python -m emergence_fast.bench [options]``: the ``bench`` subcommand on its own."""
    parser = argparse.ArgumentParser(prog="emergence-fast bench", description=__doc__.splitlines()[0].replace("``", ""))
    _add_arguments(parser)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["emergence-fast", "bench", *(argv if argv is not None else sys.argv[1:])])
    try:
        run(args)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
