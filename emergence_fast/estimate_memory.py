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
import math
from dataclasses import dataclass


from .estimators import registry
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


def estimator_bytes(estimator: str, options: dict, n: int, dx: int, dy: int, batch: int, *,
                    native_knn: bool = True) -> int:
    """Modelled peak working memory (bytes) of one call of ``estimator`` on ``batch`` cells.

    The inputs are ``x [batch, n, dx]`` and ``y [batch, n, dy]`` float32 tensors that already
    exist (not counted); the result is the memory the call allocates on top of them, from the
    model the estimator declares (``working_bytes`` in :mod:`.estimators.registry`; three float64
    copies of the input when it declares none). ``options`` are the estimator's keyword options as
    IE passes them. ``native_knn``: whether a k-NN search runs in a native kernel (else the torch
    reference's distance tiles).

    Raises ``ValueError`` naming ``estimator`` for a name that is not registered.
    """
    return registry.get(estimator, argument="estimator").call_bytes(options, n, dx, dy, batch, native_knn=native_knn)


def uses_jackknife(estimator: str) -> bool:
    """Whether IE's standard error for ``estimator`` is the delete-half jackknife (else its own or none)."""
    spec = registry.get(estimator, argument="estimator")
    return spec.ie_jackknife and spec.uncertainty != "own"


def chunk_bytes(estimator: str, options: dict, m: int, width: int, cells: int, resamples: int, *,
                native_knn: bool = True) -> int:
    """Modelled peak bytes of one chunk of :func:`emergence_fast.ie.estimate._estimate_from_reservoir`.

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
