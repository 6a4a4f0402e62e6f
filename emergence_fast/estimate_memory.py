r"""Working memory of the sample-based estimators inside Information Emergence, and the chunk plan.

IE runs a sample-based estimator (KSG with its delete-half jackknife, matrix Rényi, the neural
bounds, the ``chen2024`` preset) on a reservoir of ``m`` kept rows per (layer, position) cell.
Run on all cells at once, its temporaries grow with the number of cells: KSG's jackknife stacks
``R = 32`` half-samples per cell, about 300 MB per cell at ``m = 1024``, ``d = 576`` (measured),
so the 240 cells of SmolLM2 would need 72 GB. :func:`plan_chunks` picks how many cells (and, when
even two cells do not fit, how many jackknife resamples) one call may take so that the stage's
peak stays within the room the state leaves in ``state_memory``.

The cost model (:func:`estimator_bytes`) follows each estimator's code: a term per input element
``n (dx + dy)``, per Gram entry ``n^2``, per critic parameter, per score-matrix entry, with
coefficients set at or above peak resident memory measured in a subprocess (``VmHWM`` after
``/proc/self/clear_refs``; tracemalloc does not see torch's allocations):
``python -m benchmarks.estimate_memory`` prints measured against modelled bytes, and
``benchmarks/RESULTS.md`` records a run. Inputs are float32 (the reservoir's dtype for a float32
or half-precision model); a float64 model's rows cost twice as much and are not modelled.

Exactness. A cell's estimate does not depend on the chunk it is in: the estimators draw their
random numbers once for all cells (KSG jitter, Lanczos probes, neural critics and splits) and take
per-cell reductions only. One more thing is needed on a multi-threaded CPU: a batched matrix
product of batch 1 runs as one multi-threaded GEMM, which splits the inner dimension and rounds
differently from the same product inside a batch of two or more (measured with MKL, torch 2.13,
2 and 8 threads; batches of 2, 3, 4, 6, 8 and 12 agree bit for bit). So every chunk holds at
least two cells (three when an odd number of cells would leave one alone), and the jackknife runs
at least two resamples per call; with those chunks the results equal one batch bit for bit.
"""
from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass

import torch

from . import _dispatch
from .estimators import knn, neural, renyi
from .estimators.uncertainty import estimate_with_stderr

ITEMSIZE = 4  # float32 reservoir rows and micro states
# Resident memory exceeds the live tensors: glibc serves allocations under its adaptive mmap threshold
# (it rises to the size of the last freed mapping, up to 32 MB) from heaps that fragment. KSG's jackknife
# in groups of 4 resamples at 4 x 1024 x 576 peaked at 153 MB with MALLOC_MMAP_THRESHOLD_=1MB (the live
# set; modelled 170 MB) and at 255-324 MB without it. Every modelled chunk carries this margin.
ALLOCATOR_SLACK = 2.0
ALLOCATOR_FIXED = 16 * 2**20
# estimate_with_stderr's default n_resamples, which IE uses
JACKKNIFE_RESAMPLES = inspect.signature(estimate_with_stderr).parameters["n_resamples"].default
_JACKKNIFE = ("ksg", "renyi")  # estimators whose IE standard error is the delete-half jackknife
_NEURAL_DEFAULTS = {**{name: p.default for name, p in inspect.signature(neural.mutual_information).parameters.items()
                       if name in ("hidden", "layers", "holdout", "eval_every", "critic")},
                    "steps": neural._DEFAULT_STEPS, "batch_size": neural._DEFAULT_BATCH}


def _neural_parameters(critic, dx, dy, hidden, layers) -> int:
    if critic == "concat":
        widths = [dx + dy] + [hidden] * layers + [1]
        return sum(a * b + b for a, b in itertools.pairwise(widths))
    return sum(a * b + b for d in (dx, dy) for a, b in zip([d] + [hidden] * (layers + 1), [hidden] * (layers + 1)))


def estimator_bytes(estimator: str, options: dict, n: int, dx: int, dy: int, batch: int, *,
                    native_knn: bool = True) -> int:
    """Modelled peak working memory (bytes) of one call of ``estimator`` on ``batch`` cells.

    The inputs are ``x [batch, n, dx]`` and ``y [batch, n, dy]`` float32 tensors that already
    exist (not counted); the result is the memory the call allocates on top of them. ``options``
    are the estimator's keyword options as IE passes them. ``native_knn``: whether KSG's k-NN
    search runs in a native kernel (else the torch reference, whose distance tiles add
    ``4 x 64 MB``).

    Raises ``ValueError`` for an estimator this module does not model.
    """
    elements = n * (dx + dy)
    if estimator == "ksg":
        # Measured at 64 x 512 x 576: 12 B per element at the peak -- the jittered float32 copies and their
        # concatenation (8 B) while one side's float64 jitter temporaries live; radii and counts per row.
        tree = 128 * n if dx + dy <= 4 else 0
        per_cell = 14 * elements + 64 * n + tree
        fixed = 16 * n * max(dx, dy) + (0 if native_knn else 4 * knn._TILE_BYTES)  # the shared noise draw
        return batch * per_cell + fixed
    if estimator == "renyi":
        # Gram matrices [n, n] float64: squared distances, kernel, both sides, their Hadamard product and
        # eigenvalue workspace (at most 8 live); Lanczos keeps fewer but stores its basis.
        if options.get("approx") == "lanczos":
            # per probe: the Krylov basis [steps, n], the tridiagonal matrices and their eigenvectors, the iterates
            defaults = inspect.signature(renyi.mutual_information).parameters
            probes = options.get("n_probes") or defaults["n_probes"].default
            steps = min(options.get("n_steps") or defaults["n_steps"].default, n)
            per_cell = 6 * 8 * n * n + 8 * probes * (2 * steps * n + 6 * steps * steps + 6 * n)
        else:
            per_cell = 8 * 8 * n * n
        return batch * (per_cell + 16 * elements) + 3 * 8 * n * n
    if estimator in ("infonce", "nwj", "mine", "smile"):
        o = {**_NEURAL_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
        hidden, layers, critic = o["hidden"], o["layers"], o["critic"]
        n_hold = round(o["holdout"] * n)
        train_batch = min(o["batch_size"], n - n_hold)
        eval_batch = min(o["batch_size"], max(n_hold, 1))
        k_eval = max(n_hold // eval_batch, 1)
        wide = hidden if critic == "concat" else 1
        eval_chunk = min(k_eval, max(1, neural._EVAL_CHUNK_PAIRS // (eval_batch * eval_batch * wide)))
        parameters = _neural_parameters(critic, dx, dy, hidden, layers)
        per_cell = (8 * elements  # standardised copies (4 B), one side's standardising temporaries, held-out rows
                    + 32 * parameters  # weights, gradients, Adam's two moments and its foreach temporaries
                    + 4 * train_batch * (dx + dy + 6 * hidden * (layers + 1))  # minibatch rows, activations
                    + 4 * train_batch * train_batch * wide * (2 * layers + 6)  # score matrix and its gradients
                    + 16 * eval_chunk * eval_batch * eval_batch * wide  # held-out scores, masked and exponentiated
                    + 8 * 3 * (o["steps"] // o["eval_every"] + 1))  # curve, best, stderr
        return batch * per_cell
    if estimator == "chen2024":
        widths = neural._chen_widths(dx + dy)
        parameters = sum(a * b + b for a, b in itertools.pairwise(widths))
        steps = options.get("steps") or neural._CHEN_STEPS
        # joint, product-of-marginals and shuffled-y rows; each of two passes keeps every layer's input and
        # pre-activation for backward, and backward holds gradients of the same size.
        per_cell = 4 * n * (3 * (dx + dy) + 6 * sum(widths[1:])) + 32 * parameters + 16 * steps
        return batch * per_cell
    raise ValueError(f"estimator must be a sample-based estimator (ksg, renyi, infonce, nwj, mine, smile, chen2024), "
                     f"got {estimator!r}")


def uses_jackknife(estimator: str) -> bool:
    """Whether IE's standard error for ``estimator`` is the delete-half jackknife (else its own or none)."""
    return estimator in _JACKKNIFE


def chunk_bytes(estimator: str, options: dict, m: int, width: int, cells: int, resamples: int, *,
                native_knn: bool = True) -> int:
    """Modelled peak bytes of one chunk of :func:`emergence._estimate_from_reservoir`.

    ``cells`` cells of ``m`` reservoir rows of width ``width`` per side: the micro rows gathered
    for them (``cells x m x 2 width`` float32), then the larger of the value call on ``m`` rows and
    the jackknife call on ``cells x resamples`` stacked half-samples of ``m // 2`` rows (their
    copies included), times ``ALLOCATOR_SLACK`` plus ``ALLOCATOR_FIXED``. The macro rows are views
    of the reservoir and cost nothing more.
    """
    micro = ITEMSIZE * cells * m * 2 * width
    value = estimator_bytes(estimator, options, m, width, width, cells, native_knn=native_knn)
    if uses_jackknife(estimator):
        half = m // 2
        stacked = ITEMSIZE * cells * resamples * half * 2 * width
        value = max(value, stacked + estimator_bytes(estimator, options, half, width, width, cells * resamples,
                                                     native_knn=native_knn))
    return micro + math.ceil(ALLOCATOR_SLACK * value) + ALLOCATOR_FIXED


def smallest_chunk(n_cells: int) -> int:
    """Fewest cells a chunk may hold: 2, or 3 when the count is odd (no chunk of one; module docstring)."""
    if n_cells <= 3:
        return n_cells
    return 2 if n_cells % 2 == 0 else 3


def chunk_sizes(n_cells: int, cells_per_chunk: int) -> list[int]:
    """``n_cells`` split into ``ceil(n_cells / cells_per_chunk)`` chunks whose sizes differ by at most one.

    With ``cells_per_chunk >= smallest_chunk(n_cells)`` no chunk holds a single cell unless
    ``n_cells == 1``.
    """
    count = math.ceil(n_cells / cells_per_chunk)
    size, extra = divmod(n_cells, count)
    return [size + 1] * extra + [size] * (count - extra)


@dataclass(frozen=True)
class ChunkPlan:
    """``cells`` per chunk and jackknife ``resamples`` per call (``None`` without a jackknife), and the modelled peak."""

    cells: int
    resamples: int | None
    bytes: int


def plan_chunks(estimator: str, options: dict, m: int, width: int, n_cells: int, room: int, *,
                native_knn: bool = True) -> ChunkPlan | None:
    """The largest chunks whose modelled peak (:func:`chunk_bytes`) fits in ``room`` bytes.

    Whole cells first (all ``JACKKNIFE_RESAMPLES`` per call); when even the smallest chunk of
    cells does not fit, the jackknife resamples are split too, down to two per call. ``None``
    when not even that fits.
    """
    resamples = JACKKNIFE_RESAMPLES if uses_jackknife(estimator) else 1

    def cost(cells, r):
        return chunk_bytes(estimator, options, m, width, cells, r, native_knn=native_knn)

    low = smallest_chunk(n_cells)
    if cost(low, resamples) <= room:
        cells = low
        step = max(1, n_cells // 64)  # a coarse search first: the model is monotone in the cell count
        while cells < n_cells and cost(min(cells + step, n_cells), resamples) <= room:
            cells = min(cells + step, n_cells)
        while cells < n_cells and cost(cells + 1, resamples) <= room:
            cells += 1
        return ChunkPlan(cells, resamples if uses_jackknife(estimator) else None, cost(cells, resamples))
    if not uses_jackknife(estimator):
        return None
    fitting = [r for r in range(resamples - 1, 1, -1) if cost(low, r) <= room]
    return ChunkPlan(low, fitting[0], cost(low, fitting[0])) if fitting else None


def minimum_bytes(estimator: str, options: dict, m: int, width: int, n_cells: int, *, native_knn: bool = True) -> int:
    """The smallest chunk's modelled peak: the least room the estimate stage can run in."""
    resamples = 2 if uses_jackknife(estimator) else 1
    return chunk_bytes(estimator, options, m, width, smallest_chunk(n_cells), resamples, native_knn=native_knn)


def native_knn_for(device) -> bool:
    """Whether KSG's k-NN search runs in a native kernel on ``device`` (the default backend choice)."""
    try:
        return _dispatch.resolve_backend(None, torch.device(device)) in ("cpp", "triton", "cuda")
    except ValueError:
        return False
