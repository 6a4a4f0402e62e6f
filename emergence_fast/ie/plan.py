"""State planning: what the streaming state will be and what it costs, decided before any forward pass."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import estimate_memory
from .._validation import format_bytes
from ..estimators.knn import native_knn_for

DEFAULT_STATE_MEMORY = "8GB"
# The smallest useful bounded states: a subspace of rank >= max(pca, 8) from a pilot of >= 4 rows per
# direction, and a reservoir of 64 rows; below these the run is refused with the minimum it needs.
MIN_SUBSPACE_RANK = 8
MAX_SUBSPACE_RANK = 64
PILOT_ROWS_PER_DIRECTION = 16
MAX_PILOT = 4096
MIN_RESERVOIR = 64


@dataclass(frozen=True)
class StatePlan:
    """What the streaming state will be and what it costs, decided before any forward pass.

    ``kind``: ``"full"`` (Gaussian moments of the full width), ``"subspace"``
    (:class:`SubspaceGaussianAccumulator` of ``rank`` per side from a ``pilot``-sample first pass)
    or ``"reservoir"`` (``capacity`` rows per cell). ``fold_batches``: batches folded into the
    state at once; ``bytes``: the state plus the fold buffer, per rank (for a sample-based
    estimator, the larger of that and the state plus the estimate stage's modelled peak).
    ``working``: for a sample-based estimator, the bytes its estimate stage may use beside the
    reservoir and the micro states; ``chunk_cells``/``chunk_resamples``: the chunks planned for it.
    """

    kind: str
    bytes: int
    fold_batches: int
    rank: int | None = None
    pilot: int | None = None
    capacity: int | None = None
    working: int | None = None
    chunk_cells: int | None = None
    chunk_resamples: int | None = None

    def describe(self) -> dict:
        return {"kind": self.kind, "bytes": self.bytes, "fold_batches": self.fold_batches, "rank": self.rank,
                "pilot": self.pilot, "capacity": self.capacity}


def _plan_state(spec, options, cells, width, n_samples, batch_size, update_samples, reservoir_size,
                budget, *, micro_rows=0, device=None, backend=None) -> StatePlan:
    """Fit the state into ``budget`` bytes: full moments if they fit, else a subspace (or a smaller reservoir).

    The fold buffer (captured float32 rows waiting to be folded) counts against the budget too:
    it gets at most a quarter of it, which may fold more often than ``update_samples`` asks.
    A sample-based estimator's estimate stage counts too (:func:`_plan_sample_state`;
    ``micro_rows`` = layers x distinct tokens, ``device`` where it runs).
    """
    row = cells * 2 * width * 4  # one sample's captured float32 rows, all cells
    fold_batches = max(1, math.ceil(update_samples / batch_size))
    fold_batches = max(1, min(fold_batches, budget // 4 // (row * batch_size)))
    fold = fold_batches * batch_size * row
    if spec.weighted_mi is not None:
        # The reservoir, the fold buffer, the micro states, and one layer's estimate temporaries at the
        # reservoir's size (_estimate_weighted takes layers in chunks of whatever room is left).
        per_row = row + spec.weighted_working_bytes(1, 2 * width, options)
        micro = micro_rows * 2 * width * 4
        for batches in (fold_batches, 1):  # a tight budget folds one batch at a time before it shrinks the rows
            fold = batches * batch_size * row
            capacity = min(reservoir_size, (budget - fold - micro) // per_row if budget > fold + micro else 0)
            if capacity >= min(MIN_RESERVOIR, reservoir_size):
                return StatePlan("reservoir", capacity * row + fold, batches, capacity=capacity)
        minimum = min(MIN_RESERVOIR, reservoir_size) * per_row + batch_size * row + micro
        raise ValueError(f"state_memory={format_bytes(budget)} is too small for the {spec.name} estimator here: a "
                         f"reservoir of {min(MIN_RESERVOIR, reservoir_size)} rows for {cells} cells of width {width}, "
                         f"with its estimate stage and micro states, needs {format_bytes(minimum)} ({minimum} bytes)")
    if spec.kind == "sample":
        return _plan_sample_state(spec.name, options, cells, width, n_samples, reservoir_size, budget, row,
                                  fold_batches, fold, micro_rows, device, backend)
    full = cells * (16 * (2 * width) ** 2 + 48 * width + 8)  # double-double sums (GaussianMIAccumulator)
    if full + fold <= budget:
        return StatePlan("full", full + fold, fold_batches)
    floor = max(MIN_SUBSPACE_RANK, spec.ie_min_rank(options) if spec.ie_min_rank is not None else 0)

    def cost(rank, pilot):
        subspace = cells * (16 * (2 * rank) ** 2 + 2 * width * rank * 8 + 6 * width * 8)
        return subspace + max(fold, cells * pilot * 2 * width * 4)

    # Rank first (up to MAX_SUBSPACE_RANK), then the largest pilot the budget allows, up to all samples
    # (then the top components are exact) or MAX_PILOT (then a second pass over N costs one small extra pass).
    for rank in range(min(width, max(MAX_SUBSPACE_RANK, floor)), floor - 1, -8 if floor < MAX_SUBSPACE_RANK else -1):
        smallest = min(n_samples, PILOT_ROWS_PER_DIRECTION * rank)
        if rank > min(width, smallest) or cost(rank, smallest) > budget:
            continue
        room = (budget - cost(rank, 0) + fold) // (cells * 2 * width * 4) if budget > cost(rank, 0) else 0
        pilot = max(smallest, min(n_samples, MAX_PILOT, room))
        return StatePlan("subspace", cost(rank, pilot), fold_batches, rank=rank, pilot=pilot)
    rank = min(width, floor)
    pilot = min(n_samples, PILOT_ROWS_PER_DIRECTION * rank)
    raise ValueError(f"state_memory={format_bytes(budget)} is too small for any estimator here: full moments need "
                     f"{format_bytes(full + fold)}, and the smallest bounded state (a rank-{rank} subspace from a "
                     f"{pilot}-sample pilot, {cells} cells of width {width}) needs {format_bytes(cost(rank, pilot))}")


def _plan_sample_state(estimator, options, cells, width, n_samples, reservoir_size, budget, row, fold_batches, fold,
                       micro_rows, device, backend=None) -> StatePlan:
    """The reservoir and the estimate stage of a sample-based estimator share ``budget`` bytes.

    The macro pass holds the reservoir (``capacity x row``) and the fold buffer; the estimate
    stage holds the reservoir, the micro states (``micro_rows x 2 width`` float32) and the
    temporaries of one chunk of cells (:func:`estimate_memory.chunk_bytes`, a model measured in
    ``benchmarks/estimate_memory.py``). The reservoir gets the most rows, up to
    ``reservoir_size``, for which both stages fit with the smallest chunk; the chunks then take
    what is left (``working``), so a tight budget costs time, not rows, until it costs rows.

    Raises ``ValueError`` naming ``state_memory`` and the bytes needed when not even a reservoir
    of ``MIN_RESERVOIR`` rows with the smallest chunk fits -- before any forward pass.
    """
    micro = micro_rows * 2 * width * 4
    native = native_knn_for(device or "cpu", backend)

    def need(capacity):  # the larger stage's peak with a reservoir of `capacity` rows
        smallest_chunk = estimate_memory.minimum_bytes(estimator, options, min(capacity, n_samples), width, cells,
                                                       native_knn=native)
        return capacity * row + max(fold, micro + smallest_chunk)

    low, high = min(MIN_RESERVOIR, reservoir_size), reservoir_size
    if need(low) > budget:
        raise ValueError(
            f"state_memory={format_bytes(budget)} is too small for the {estimator} estimator here: a reservoir of {low} "
            f"rows for {cells} cells of width {width} ({format_bytes(low * row)}) with "
            + (f"its estimate stage (micro states and the smallest chunk of cells, {format_bytes(need(low) - low * row)}"
               if need(low) - low * row > fold else f"the fold buffer ({format_bytes(fold)}")
            + f") needs {format_bytes(need(low))}")
    while low < high:  # need() grows with the capacity: the largest that fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if need(middle) <= budget else (low, middle - 1)
    capacity = low
    working = budget - capacity * row - micro
    chunks = estimate_memory.plan_chunks(estimator, options, min(capacity, n_samples), width, cells, working,
                                         native_knn=native)
    return StatePlan("reservoir", capacity * row + max(fold, micro + chunks.bytes), fold_batches, capacity=capacity,
                     working=working, chunk_cells=chunks.cells, chunk_resamples=chunks.resamples)
