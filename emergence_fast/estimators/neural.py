r"""Neural (variational lower-bound) mutual information.

A critic :math:`T(x, y)` is trained to maximise a variational lower bound on
:math:`I(X;Y) = \mathrm{KL}(p_{XY} \,\|\, p_X p_Y)`; the bound at the trained critic is the estimate.
With :math:`p = p_{XY}` (paired rows) and :math:`q = p_X p_Y` (rows of x with other rows' y):

* ``"mine"`` -- Donsker-Varadhan (DV) bound, as used by MINE (Belghazi et al. 2018, "Mutual
  Information Neural Estimation", ICML, arXiv 1801.04062):

  .. math:: I \ge \mathbb E_p[T] - \log \mathbb E_q[e^{T}].

  This is the plain DV bound trained by gradient ascent on minibatches; MINE's moving-average
  correction of the (biased) minibatch gradient of the log term is *not* applied.
* ``"nwj"`` -- Nguyen, Wainwright & Jordan (2010, "Estimating divergence functionals and the
  likelihood ratio by convex risk minimization", IEEE Trans. Inf. Theory 56):

  .. math:: I \ge \mathbb E_p[T] - e^{-1}\,\mathbb E_q[e^{T}].

* ``"infonce"`` -- van den Oord, Li & Vinyals (2018, "Representation Learning with Contrastive
  Predictive Coding", arXiv 1807.03748), for a minibatch of :math:`B` pairs:

  .. math:: I \ge \mathbb E\Big[\tfrac1B \sum_i \log
            \frac{e^{T(x_i, y_i)}}{\tfrac1B \sum_j e^{T(x_i, y_j)}}\Big] \;\le\; \log B,

  low variance but saturating at :math:`\log B` (Poole et al. 2019, "On Variational Bounds of
  Mutual Information", ICML), so ``batch_size`` must satisfy :math:`\log B \gg I`.
* ``"smile"`` -- Song & Ermon (2020, "Understanding the Limitations of Variational Mutual
  Information Estimators", ICLR): DV with the partition term clipped,

  .. math:: \hat I = \mathbb E_p[T] - \log \mathbb E_q[e^{\mathrm{clip}(T, -\tau, \tau)}],

  which trades the DV estimator's exponential variance for a bias; as in the authors' code the
  critic's *gradient* comes from the Jensen-Shannon f-GAN bound
  :math:`\mathbb E_p[-\mathrm{softplus}(-T)] - \mathbb E_q[\mathrm{softplus}(T)]` (whose optimum
  is the log density ratio), while the reported value is the clipped DV. The clipped DV is not a
  strict lower bound.

Every log-mean-exp goes through ``torch.logsumexp``. Within a minibatch of :math:`B` pairs the
score matrix :math:`S_{ij} = T(x_i, y_j)` is formed; its diagonal holds the :math:`p` samples and
its :math:`B(B-1)` off-diagonal entries the :math:`q` samples (InfoNCE uses all of row :math:`i`).

Critic. ``critic="separable"`` (default) is :math:`T(x, y) = f(x)^\top g(y)` with MLPs
:math:`f, g` (``layers`` hidden layers of width ``hidden``, ReLU, output width ``hidden``), so
:math:`S` is one batched matrix product: cheap on a CPU, and able to represent the Gaussian log
density ratio (a quadratic form). ``critic="concat"`` is the reference
:math:`T = \mathrm{MLP}([x, y])`, evaluated on all :math:`B^2` pairs (its first layer is split
into x and y halves, so it costs :math:`B^2` times the deeper layers: use a smaller ``batch_size``).

Batching. The critics of all leading-dim cells of ``x [..., N, dx]`` are one grouped network:
every weight has shape ``[cells, in, out]`` and is applied with ``torch.baddbmm``; one Adam
optimiser trains all cells simultaneously on the summed loss (cells share no parameters, so each
cell's gradient is its own). The seeded random choices -- the split into a training and a
held-out (``holdout`` fraction) part, the initial weights, the minibatch order, the shuffles of
the ``chen2024`` preset -- are drawn once and shared by every cell, so a cell's estimate is what a
call on that cell alone gives, whatever batch it comes in (Information Emergence estimates its
cells in memory-bounded chunks and gets the numbers of one batch). Each variable is
standardised on the training split (MI is invariant to that), and training runs in float32.

Reported value. Every ``eval_every`` steps the bound is evaluated on the held-out split in
minibatches of ``batch_size`` (dropping the remainder); the estimate is the mean over held-out
minibatches and its standard error their standard deviation over :math:`\sqrt{k}` (NaN when the
held-out split holds only one minibatch). Per cell, training stops improving the report after
``patience`` evaluations without a new best, and the run ends when every cell has stopped. The
value reported is the held-out estimate at the best evaluation; choosing the best of several
noisy evaluations on the same held-out data biases it upward by about a standard error.
Once a cell has waited ``patience`` evaluations its report is final, even while other cells
still train: a cell's result does not depend on when its batch-mates stop.

``preset="chen2024"`` reproduces the MINE set-up of the original Information-Emergence code of
Chen et al. 2024 (arXiv 2405.12617) -- see :func:`chen2024` -- and is biased upward.

Units: every estimate is in nats unless ``base`` is given (``base=2``: bits), the preset too.
"""
from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import _dispatch
from functools import partial

from .._validation import (as_samples, check_choice, check_paired, check_positive_float, check_positive_int,
                           check_probability, check_seed, constant_cells, log_base)
from .registry import Details, Estimator, register
from .uncertainty import batch_invariant_std

NEURAL_METHODS = ("infonce", "nwj", "mine", "smile")
CRITICS = ("separable", "concat")
PRESETS = ("chen2024",)

_DEFAULT_STEPS = 1000
_DEFAULT_BATCH = 128
_DEFAULT_LR = 1e-3
_DEFAULT_HOLDOUT = 0.2
_CHEN_STEPS = 10_000
_CHEN_LR = 1e-4
_CHEN_LR_END = 1e-8
_CHEN_WARMUP = 5
_CHEN_POWER = 3.0
_CHEN_LAYERS = 10
_EVAL_CHUNK_PAIRS = 1 << 20  # score-matrix entries per held-out evaluation chunk (bounds memory)


@dataclass
class NeuralDiagnostics(Details):
    """What a neural estimate rests on; tensors have the estimate's batch shape (in the output unit).

    ``curve`` stacks the per-evaluation estimates, ``[evaluations, *batch]``: held-out bounds, or
    for ``preset="chen2024"`` the training-set DV estimate at every step. ``steps_run`` is the
    number of optimiser steps taken (all cells train together), ``best_step`` the step whose
    evaluation is reported.
    """

    stderr: torch.Tensor | None
    best_step: torch.Tensor
    steps_run: int
    curve: torch.Tensor
    method: str
    critic: str
    preset: str | None
    n_train: int
    n_holdout: int
    batch_size: int
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- grouped networks


def _linear(cells, fan_in, fan_out, gen, init):
    """One grouped linear layer ``[cells, in, out]`` (+ bias ``[cells, 1, out]``), drawn from ``gen`` on the CPU.

    One draw is repeated for every cell: a cell's initial critic does not depend on its batch.
    """
    bound = 1.0 / math.sqrt(fan_in)
    if init == "xavier":  # torch.nn.init.xavier_normal_
        w = torch.randn(1, fan_in, fan_out, generator=gen) * math.sqrt(2.0 / (fan_in + fan_out))
    else:  # torch.nn.Linear's default (kaiming-uniform with a = sqrt(5))
        w = (torch.rand(1, fan_in, fan_out, generator=gen) * 2 - 1) * bound
    b = (torch.rand(1, 1, fan_out, generator=gen) * 2 - 1) * bound
    return [w.repeat(cells, 1, 1), b.repeat(cells, 1, 1)]


def _mlp_params(cells, widths, gen, init="default"):
    return [_linear(cells, widths[i], widths[i + 1], gen, init) for i in range(len(widths) - 1)]


def _mlp(params, h, act, start=0):
    """Apply grouped layers ``params[start:]`` to ``h [cells, M, in]``; no activation after the last."""
    for i in range(start, len(params)):
        w, b = params[i]
        h = torch.baddbmm(b, h, w)
        if i < len(params) - 1:
            h = act(h)
    return h


class _Critic:
    """All cells' critics as one grouped network. ``scores(x [C, k, B, dx], y [C, k, B, dy]) -> [C, k, B, B]``."""

    def __init__(self, kind, cells, dx, dy, hidden, layers, gen, device):
        self.kind = kind
        if kind == "separable":
            widths_f = [dx] + [hidden] * (layers + 1)
            widths_g = [dy] + [hidden] * (layers + 1)
            self.f = _mlp_params(cells, widths_f, gen)
            self.g = _mlp_params(cells, widths_g, gen)
            groups = self.f + self.g
        else:
            self.net = _mlp_params(cells, [dx + dy] + [hidden] * layers + [1], gen)
            groups = self.net
        self.dx = dx
        self.params = [p.to(device).requires_grad_() for layer in groups for p in layer]
        # re-point the layer lists at the leaf tensors on the device
        it = iter(self.params)
        rebuilt = [[next(it), next(it)] for _ in groups]
        if kind == "separable":
            self.f, self.g = rebuilt[: len(self.f)], rebuilt[len(self.f):]
        else:
            self.net = rebuilt

    def scores(self, x, y):
        c, k, b, dx = x.shape
        dy = y.shape[-1]
        if self.kind == "separable":
            fx = _mlp(self.f, x.reshape(c, k * b, dx), F.relu).reshape(c, k, b, -1)
            gy = _mlp(self.g, y.reshape(c, k * b, dy), F.relu).reshape(c, k, b, -1)
            return fx @ gy.transpose(-1, -2)
        w1, b1 = self.net[0]
        hx = torch.bmm(x.reshape(c, k * b, dx), w1[:, : self.dx]).reshape(c, k, b, 1, -1)
        hy = torch.baddbmm(b1, y.reshape(c, k * b, dy), w1[:, self.dx:]).reshape(c, k, 1, b, -1)
        h = F.relu(hx + hy).reshape(c, k * b * b, -1)
        return _mlp(self.net, h, F.relu, start=1).reshape(c, k, b, b)


# ----------------------------------------------------------------------------- bounds on a score matrix


def _log_mean_exp_offdiag(s):
    b = s.shape[-1]
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    masked = s.masked_fill(eye, -math.inf)
    return torch.logsumexp(masked, dim=(-2, -1)) - math.log(b * (b - 1))


def _bound(s, method, tau):
    """Per-minibatch value of the bound from scores ``s [..., B, B]`` (diagonal = paired rows)."""
    b = s.shape[-1]
    joint = s.diagonal(dim1=-2, dim2=-1).mean(-1)
    if method == "infonce":
        return (s.diagonal(dim1=-2, dim2=-1) - torch.logsumexp(s, dim=-1)).mean(-1) + math.log(b)
    if method == "nwj":
        return joint - torch.exp(_log_mean_exp_offdiag(s - 1.0))
    if method == "mine":
        return joint - _log_mean_exp_offdiag(s)
    # smile: clipped DV
    return joint - _log_mean_exp_offdiag(s.clamp(-tau, tau))


def _training_objective(s, method, tau):
    """What gradient ascent maximises; for SMILE the JS bound's gradient with the clipped DV's value."""
    value = _bound(s, method, tau)
    if method != "smile":
        return value
    b = s.shape[-1]
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    off = F.softplus(s).masked_fill(eye, 0.0).sum((-2, -1)) / (b * (b - 1))
    js = -F.softplus(-s.diagonal(dim1=-2, dim2=-1)).mean(-1) - off
    return js + (value - js).detach()


# ----------------------------------------------------------------------------- argument checks


def _flatten(x, y):
    lead = x.shape[:-2]
    n = x.shape[-2]
    x3 = x.reshape(-1, n, x.shape[-1]).float()
    y3 = y.reshape(-1, n, y.shape[-1]).float()
    return lead, x3, y3


def _gather_rows(z, idx):
    """``z [C, N, d]`` rows ``idx [C, ...]`` -> ``[C, ..., d]``."""
    c = z.shape[0]
    return z[torch.arange(c, device=z.device).view(c, *([1] * (idx.ndim - 1))), idx]


def _standardise(z, train_idx):
    rows = _gather_rows(z, train_idx)
    mean = rows.mean(1, keepdim=True)
    std = rows.std(1, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (z - mean) / std


# ----------------------------------------------------------------------------- the estimator


#: Why :func:`mutual_information`'s standard error is NaN when :func:`heldout_minibatches` is below 2.
SINGLE_MINIBATCH = "the held-out split holds a single minibatch of the neural bound, so it has no standard error"


def heldout_minibatches(n: int, holdout: float | None = None, batch_size: int | None = None) -> int:
    """How many held-out minibatches :func:`mutual_information` averages over for ``n`` rows per cell.

    ``holdout`` and ``batch_size`` as there (None: their defaults, 0.2 and 128). The estimate's
    standard error is the spread of those minibatches' bounds, so it needs at least 2
    (:data:`SINGLE_MINIBATCH` says why it is NaN otherwise). Returns 0 when the split holds no row.
    """
    n_hold = round((_DEFAULT_HOLDOUT if holdout is None else holdout) * n)
    eval_batch = min(_DEFAULT_BATCH if batch_size is None else batch_size, n_hold)
    return n_hold // eval_batch if eval_batch > 0 else 0


def mutual_information(x, y, *, method="infonce", critic="separable", hidden=64, layers=2, steps=None,
                       batch_size=None, lr=None, tau=5.0, holdout=_DEFAULT_HOLDOUT, patience=10, eval_every=20, seed=0,
                       preset=None, base=None, backend=None, details=False):
    r"""Neural variational estimate of I(X;Y) for ``x [..., N, dx]``, ``y [..., N, dy]`` per batch cell.

    Returns a float64 tensor of the batch shape, in nats unless ``base`` is given (and
    :class:`NeuralDiagnostics` when ``details``). See the module docstring for the bounds. A
    cell where x or y is constant gets exactly 0, with a zero standard error.

    Arguments: ``method`` one of ``"infonce"`` (default), ``"nwj"``, ``"mine"`` (plain DV),
    ``"smile"`` (clip ``tau``); ``critic`` ``"separable"`` (default) or ``"concat"``; ``hidden``,
    ``layers`` the MLP width and number of hidden layers; ``steps`` optimiser steps (default 1000),
    ``batch_size`` pairs per minibatch (default 128), ``lr`` Adam learning rate (default 1e-3);
    ``holdout`` the held-out fraction in (0, 1); ``patience`` held-out evaluations without
    improvement before a cell stops (``None``: never), ``eval_every`` steps between evaluations;
    ``seed`` makes the split, initialisation and minibatches reproducible.

    ``preset="chen2024"`` runs :func:`chen2024` instead (``steps`` and ``lr`` default to 10 000
    and 1e-4; ``method``, ``critic``, ``hidden``, ``layers``, ``batch_size``, ``holdout``,
    ``patience`` and ``eval_every`` are not used), in nats unless ``base`` is given like every
    other method. It is biased upward and exists only for comparability with Chen et al. 2024.
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    _dispatch.resolve_backend(backend, x.device)
    if preset is not None:
        check_choice(preset, "preset", PRESETS)
        return chen2024(x, y, steps=_CHEN_STEPS if steps is None else steps, lr=_CHEN_LR if lr is None else lr,
                        seed=seed, base=base, backend=backend, details=details)
    check_choice(method, "method", NEURAL_METHODS)
    check_choice(critic, "critic", CRITICS)
    steps = _DEFAULT_STEPS if steps is None else steps
    batch_size = _DEFAULT_BATCH if batch_size is None else batch_size
    lr = _DEFAULT_LR if lr is None else lr
    check_positive_int(hidden, "hidden")
    check_positive_int(layers, "layers")
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size", minimum=2)
    check_positive_int(eval_every, "eval_every")
    if patience is not None:
        check_positive_int(patience, "patience")
    check_positive_float(lr, "lr")
    check_positive_float(tau, "tau")
    check_probability(holdout, "holdout", low_open=True, high_open=True)
    check_seed(seed)
    unit = log_base(base)

    lead, x3, y3 = _flatten(x, y)
    cells, n, dx = x3.shape
    dy = y3.shape[-1]
    n_hold = round(holdout * n)
    n_train = n - n_hold
    if n_hold < 2 or n_train < 2:
        raise ValueError(f"holdout={holdout} of N={n} leaves {n_train} training and {n_hold} held-out samples; "
                         "both need at least 2")
    device = x.device
    gen = torch.Generator().manual_seed(seed)
    # Every random draw is shared by all cells (module docstring): one permutation, expanded.
    perm = torch.argsort(torch.rand(n, generator=gen)).to(device).expand(cells, n)
    hold_idx, train_idx = perm[:, :n_hold], perm[:, n_hold:]
    x3 = _standardise(x3, train_idx)
    y3 = _standardise(y3, train_idx)

    batch = min(batch_size, n_train)
    eval_batch = min(batch_size, n_hold)
    k_eval = heldout_minibatches(n, holdout, batch_size)
    eval_idx = hold_idx[:, : k_eval * eval_batch].reshape(cells, k_eval, eval_batch)
    x_eval, y_eval = _gather_rows(x3, eval_idx), _gather_rows(y3, eval_idx)
    chunk = max(1, _EVAL_CHUNK_PAIRS // (eval_batch * eval_batch * (hidden if critic == "concat" else 1)))

    net = _Critic(critic, cells, dx, dy, hidden, layers, gen, device)
    opt = torch.optim.Adam(net.params, lr=lr)

    def evaluate():
        with torch.no_grad():
            values = torch.cat([_bound(net.scores(x_eval[:, i:i + chunk], y_eval[:, i:i + chunk]), method, tau)
                                for i in range(0, k_eval, chunk)], dim=1).double()
        mean = values.mean(1)
        se = batch_invariant_std(values) / math.sqrt(k_eval) if k_eval > 1 else torch.full_like(mean, math.nan)
        return mean, se

    best = torch.full((cells,), -math.inf, dtype=torch.float64, device=device)
    best_se = torch.full_like(best, math.nan)
    best_step = torch.zeros(cells, dtype=torch.int64, device=device)
    waited = torch.zeros(cells, dtype=torch.int64, device=device)
    curve = []
    order, cursor = None, n_train
    step = 0
    for step in range(1, steps + 1):
        if cursor + batch > n_train:  # new epoch: a fresh per-cell shuffle of the training split
            shuffle = torch.argsort(torch.rand(n_train, generator=gen)).to(device)
            order = train_idx[:, shuffle]
            cursor = 0
        idx = order[:, cursor:cursor + batch].unsqueeze(1)
        cursor += batch
        s = net.scores(_gather_rows(x3, idx), _gather_rows(y3, idx))
        loss = -_training_objective(s, method, tau).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            value, se = evaluate()
            curve.append(value)
            better = value > best  # NaN (a diverged critic) never counts as better
            if patience is not None:  # a stopped cell's report is final (module docstring)
                better &= waited < patience
            best = torch.where(better, value, best)
            best_se = torch.where(better, se, best_se)
            best_step = torch.where(better, torch.full_like(best_step, step), best_step)
            waited = torch.where(better, torch.zeros_like(waited), waited + 1)
            if patience is not None and bool((waited >= patience).all()):
                break

    # I(X; c) = 0 exactly; a critic fitted to a constant side reads its own noise (about 1e-5 nats).
    constant = (constant_cells(x) | constant_cells(y)).reshape(-1)
    best = torch.where(constant, 0.0, best)
    best_se = torch.where(constant, 0.0, best_se)
    result = (best / unit).reshape(lead)
    if not details:
        return result
    notes = []
    if method == "infonce" and bool((best > math.log(batch) - 0.5).any()):
        notes.append(f"the InfoNCE estimate is within 0.5 nats of its ceiling log(batch_size) = {math.log(batch):.3g} "
                     "nats: it is saturated; use a larger batch_size or another method.")
    if k_eval < 2:
        notes.append(f"{SINGLE_MINIBATCH}; raise holdout or N, or lower batch_size.")
    return result, NeuralDiagnostics(
        stderr=(best_se / unit).reshape(lead), best_step=best_step.reshape(lead), steps_run=step,
        curve=(torch.stack(curve) / unit).reshape(len(curve), *lead), method=method, critic=critic, preset=None,
        n_train=n_train, n_holdout=n_hold, batch_size=batch, notes=notes)


# ----------------------------------------------------------------------------- Chen et al. 2024 preset


def _chen_widths(d_in):
    """``[d_in, ..., 3, 1]``: 10 linear layers whose hidden widths halve, ``max(d_in // 2**k, 3)``, k = 1..9."""
    return [d_in] + [max(d_in >> k, 3) for k in range(1, _CHEN_LAYERS)] + [1]


def _chen_lr(step, steps, lr):
    """transformers' get_polynomial_decay_schedule_with_warmup(5 warm-up steps, lr_end=1e-8, power=3) at ``step``."""
    if step < _CHEN_WARMUP:
        return lr * step / _CHEN_WARMUP
    if step >= steps or steps <= _CHEN_WARMUP:
        return _CHEN_LR_END
    remaining = 1 - (step - _CHEN_WARMUP) / (steps - _CHEN_WARMUP)
    return (lr - _CHEN_LR_END) * remaining ** _CHEN_POWER + _CHEN_LR_END


def chen2024(x, y, *, steps=_CHEN_STEPS, lr=_CHEN_LR, seed=0, base=None, backend=None, details=False):
    r"""MINE as in the Information-Emergence code of Chen et al. 2024 (arXiv 2405.12617), batched over cells.

    DV bound :math:`\mathbb E_p[T] - \log \mathbb E_q[e^T]` with critic
    :math:`T = \mathrm{MLP}([x, y])` of 10 linear layers whose widths halve down to ``... -> 3 -> 1``
    (see :func:`_chen_widths`), LeakyReLU (slope 0.01) between them, xavier-normal weights;
    Adam at ``lr`` (1e-4) with 5 linear warm-up steps then polynomial (power 3) decay to 1e-8 at
    ``steps`` (10 000 in the paper); each step is full-batch on all N rows, with a fresh shuffle
    of y as the product-of-marginals sample; no standardisation, no held-out data. The value
    reported is the **maximum over steps** of the training-set DV estimate, clipped at 0, as a
    float64 tensor of the batch shape in nats unless ``base`` is given (``base=2``: bits, the
    unit the paper reports; the original code took ``log2`` of the same DV bound). The seeded
    initial weights and shuffles are shared by every cell (module docstring). A cell where x or
    y is constant gets exactly 0.

    This is biased upward: the maximum over thousands of noisy estimates, each on the data the
    critic is fitted to, exceeds the MI even for independent data (and DV already overfits a
    finite sample). It exists only for comparability with Chen et al. 2024; use
    :func:`mutual_information` with a held-out method for measurement. The curve in the
    diagnostics is the per-step training estimate; there is no standard error. The critic trains
    in torch on ``x``'s device (``backend`` is validated, not used).
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    _dispatch.resolve_backend(backend, x.device)
    check_positive_int(steps, "steps")
    check_positive_float(lr, "lr")
    unit = log_base(base)
    lead, x3, y3 = _flatten(x, y)
    cells, n, dx = x3.shape
    dy = y3.shape[-1]
    device = x.device
    gen = torch.Generator().manual_seed(seed)
    params = _mlp_params(cells, _chen_widths(dx + dy), gen, init="xavier")  # one draw for every cell
    params = [[w.to(device).requires_grad_(), b.to(device).requires_grad_()] for w, b in params]
    opt = torch.optim.Adam([p for layer in params for p in layer], lr=lr)
    joint = torch.cat([x3, y3], dim=-1)
    act = F.leaky_relu
    curve = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _chen_lr(step, steps, lr)
        shuffle = torch.argsort(torch.rand(n, generator=gen)).to(device)  # shared by every cell
        marginal = torch.cat([x3, y3[:, shuffle]], dim=-1)
        t_joint = _mlp(params, joint, act).squeeze(-1)
        t_marg = _mlp(params, marginal, act).squeeze(-1)
        value = t_joint.mean(-1) - (torch.logsumexp(t_marg, dim=-1) - math.log(n))
        curve.append(value.detach().double())
        opt.zero_grad(set_to_none=True)
        (-value.sum()).backward()
        opt.step()
    stacked = torch.stack(curve)
    finite = torch.where(torch.isfinite(stacked), stacked, torch.full_like(stacked, -math.inf))
    best, best_step = finite.max(0)
    best = torch.where((constant_cells(x) | constant_cells(y)).reshape(-1), 0.0, best)  # I(X; c) = 0 exactly
    result = (best.clamp_min(0) / unit).reshape(lead)
    if not details:
        return result
    notes = [("preset='chen2024' reports the maximum over steps of a training-set DV estimate: biased upward; "
              "for comparability with Chen et al. 2024 only.")]
    return result, NeuralDiagnostics(
        stderr=None, best_step=best_step.reshape(lead), steps_run=steps,
        curve=(stacked / unit).reshape(steps, *lead), method="mine", critic="concat", preset="chen2024",
        n_train=n, n_holdout=0, batch_size=n, notes=notes)


def _critic_parameters(critic, dx, dy, hidden, layers) -> int:
    if critic == "concat":
        widths = [dx + dy] + [hidden] * layers + [1]
        return sum(a * b + b for a, b in itertools.pairwise(widths))
    return sum(a * b + b for d in (dx, dy) for a, b in zip([d] + [hidden] * (layers + 1), [hidden] * (layers + 1)))


def working_bytes(options: dict, n: int, dx: int, dy: int, batch: int, *, native_knn: bool = True) -> int:
    """Modelled peak working memory (bytes) of one :func:`mutual_information` call on ``batch`` cells of float32
    ``[n, dx]``, ``[n, dy]`` (inputs not counted; ``native_knn`` unused); measured by
    ``python -m benchmarks.estimate_memory`` (see :mod:`emergence_fast.estimate_memory`)."""
    defaults = {name: p.default for name, p in inspect.signature(mutual_information).parameters.items()}
    o = {**defaults, "steps": _DEFAULT_STEPS, "batch_size": _DEFAULT_BATCH,
         **{k: v for k, v in options.items() if v is not None}}
    hidden, layers, critic = o["hidden"], o["layers"], o["critic"]
    elements = n * (dx + dy)
    n_hold = round(o["holdout"] * n)
    train_batch = min(o["batch_size"], n - n_hold)
    eval_batch = min(o["batch_size"], max(n_hold, 1))
    k_eval = max(n_hold // eval_batch, 1)
    wide = hidden if critic == "concat" else 1
    eval_chunk = min(k_eval, max(1, _EVAL_CHUNK_PAIRS // (eval_batch * eval_batch * wide)))
    parameters = _critic_parameters(critic, dx, dy, hidden, layers)
    per_cell = (8 * elements  # standardised copies (4 B), one side's standardising temporaries, held-out rows
                + 32 * parameters  # weights, gradients, Adam's two moments and its foreach temporaries
                + 4 * train_batch * (dx + dy + 6 * hidden * (layers + 1))  # minibatch rows, activations
                + 4 * train_batch * train_batch * wide * (2 * layers + 6)  # score matrix and its gradients
                + 16 * eval_chunk * eval_batch * eval_batch * wide  # held-out scores, masked and exponentiated
                + 8 * 3 * (o["steps"] // o["eval_every"] + 1))  # curve, best, stderr
    return batch * per_cell


def chen2024_working_bytes(options: dict, n: int, dx: int, dy: int, batch: int, *, native_knn: bool = True) -> int:
    """Modelled peak working memory (bytes) of one :func:`chen2024` call (as :func:`working_bytes`)."""
    widths = _chen_widths(dx + dy)
    parameters = sum(a * b + b for a, b in itertools.pairwise(widths))
    steps = options.get("steps") or _CHEN_STEPS
    # joint, product-of-marginals and shuffled-y rows; each of two passes keeps every layer's input and
    # pre-activation for backward, and backward holds gradients of the same size.
    per_cell = 4 * n * (3 * (dx + dy) + 6 * sum(widths[1:])) + 32 * parameters + 16 * steps
    return batch * per_cell


def _ie_stderr_reason(options, rows) -> str | None:
    """Why the held-out standard error is undefined on ``rows`` kept rows per cell, or None."""
    if options.get("preset") or heldout_minibatches(rows, options.get("holdout"), options.get("batch_size")) >= 2:
        return None
    return (f"undefined: {SINGLE_MINIBATCH} ({rows} kept rows): raise n_samples/reservoir_size or lower the "
            "option batch_size")


def _chen2024_ie_note(options) -> str:
    return (f"estimate: the paper-faithful number (Chen et al. 2024's own estimator): the original IE code's "
            f"MINE, {options.get('steps') or _CHEN_STEPS} full-batch steps of a Donsker-Varadhan bound, reporting the "
            "maximum over training steps of its training-set value, clipped at 0. It is biased upward (the "
            "maximum of many noisy estimates on the data the critic fits exceeds the MI even for independent "
            "data) and is for comparison with the paper only; the default estimator is the corrected number.")


_BOUNDS = {"infonce": "InfoNCE (van den Oord et al. 2018; Poole et al. 2019)",
           "nwj": "NWJ f-divergence bound (Nguyen, Wainwright & Jordan 2010; Poole et al. 2019)",
           "mine": "MINE, the Donsker-Varadhan bound (Belghazi et al. 2018)",
           "smile": "SMILE, DV with a clipped critic (Song & Ermon 2020)"}
for _name in NEURAL_METHODS:
    register(Estimator(
        name=_name, summary=f"{_BOUNDS[_name]}: one grouped critic for all cells, held-out value",
        kind="sample", mutual_information=partial(mutual_information, method=_name), uncertainty="own", ie=True,
        trained=True, working_bytes=working_bytes, ie_stderr_reason=_ie_stderr_reason))
register(Estimator(
    name="chen2024",
    summary="The Information-Emergence MINE preset of Chen et al. 2024 (arXiv 2405.12617), for comparability",
    kind="sample", mutual_information=chen2024, uncertainty="jackknife", ie=True, trained=True,
    ie_jackknife=False, working_bytes=chen2024_working_bytes, ie_note=_chen2024_ie_note))  # a jackknife would retrain 32 critics of 10,000 steps per cell
