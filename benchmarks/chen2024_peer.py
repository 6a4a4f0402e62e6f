"""The ``chen2024`` preset (one grouped critic for all cells) against the original design (one critic per cell).

    python -m benchmarks.chen2024_peer [--configs 64x8,64x32,64x128,576x4] [--n 1024] [--steps 50]
                                       [--repeats 2] [--threads 1] [--write benchmarks/RESULTS.md]

Chen et al. 2024 (arXiv 2405.12617, "Information Emergence") train one MINE critic per
(layer, position, slice) cell as a separate job. :func:`original_mine` is that job written the
way such code is written: a ``torch.nn.Sequential`` of ``nn.Linear`` + ``nn.LeakyReLU`` on
``[x, y]`` (10 linear layers halving in width down to 3 -> 1), ``nn.init.xavier_normal_``
weights, ``torch.optim.Adam`` with transformers' ``get_polynomial_decay_schedule_with_warmup``
(5 warm-up steps, power 3, to 1e-8; an identical ``LambdaLR`` when transformers is absent), every
step full batch on all N rows in float32 with a fresh ``torch.randperm`` shuffle of y, and the
maximum over steps of the training DV bound, clipped at 0. :func:`original_cells` runs it on
every cell in a Python loop, one model and one optimiser per cell.

The harness times ours (:func:`emergence_fast.estimators.neural.chen2024` on all cells in one
call) and the peer on the same cells, steps and threads, in one run, and reports seconds per
(cell, step) and their ratio. Agreement is checked exactly rather than by distribution: with
``draws="ours"`` the peer takes its initial weights and shuffles from the same seeded generator
sequence as ours, so the two training curves must agree to float32 round-off (the table gives the
largest difference over all cells and steps).
"""
from __future__ import annotations

import argparse
import itertools
import math
import platform
import time

import torch
from torch import nn

from benchmarks._results import emit, provenance
from emergence_fast.estimators import neural

try:  # the original code's scheduler; the fallback below is the same formula
    from transformers import get_polynomial_decay_schedule_with_warmup
except ImportError:  # pragma: no cover - transformers is installed with the project's extras
    get_polynomial_decay_schedule_with_warmup = None

WARMUP, LR_END, POWER = 5, 1e-8, 3.0


def _schedule(opt, steps, lr):
    if get_polynomial_decay_schedule_with_warmup is not None:
        return get_polynomial_decay_schedule_with_warmup(opt, num_warmup_steps=WARMUP, num_training_steps=steps,
                                                         lr_end=LR_END, power=POWER)

    def factor(step):  # transformers' lr_lambda, as a multiple of lr
        if step < WARMUP:
            return step / max(1, WARMUP)
        if step > steps:
            return LR_END / lr
        remaining = 1 - (step - WARMUP) / (steps - WARMUP)
        return ((lr - LR_END) * remaining ** POWER + LR_END) / lr

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def critic(d_in: int) -> nn.Sequential:
    """The original critic on ``[x, y]`` (``d_in = dx + dy``): 10 ``nn.Linear`` halving in width, LeakyReLU between."""
    widths = [d_in] + [max(d_in >> k, 3) for k in range(1, 10)] + [1]
    layers = []
    for i in range(len(widths) - 1):
        linear = nn.Linear(widths[i], widths[i + 1])
        nn.init.xavier_normal_(linear.weight)
        layers += [linear, nn.LeakyReLU()] if i < len(widths) - 2 else [linear]
    return nn.Sequential(*layers)


def original_mine(x, y, steps, lr, seed, *, draws="torch"):
    """One cell's MINE as the original design trains it: ``x [N, dx]``, ``y [N, dy]`` -> ``(value, curve)``.

    ``value`` (float, nats) is the maximum over steps of the training DV bound, clipped at 0;
    ``curve`` (float64 ``[steps]``) the bound at every step, before that step's update.
    ``draws="torch"`` seeds torch's global generator with ``seed`` and draws as the original code
    does (``xavier_normal_``, ``randperm``); ``draws="ours"`` instead takes the initial weights and
    the per-step shuffles from the generator sequence of
    :func:`emergence_fast.estimators.neural.chen2024` (same ``seed``), so the two curves can be
    compared step by step. ``steps=5`` raises ZeroDivisionError, as in the original: transformers'
    schedule divides by ``steps - 5`` after the fifth step (the preset returns lr 1e-8 there).
    """
    if draws not in ("torch", "ours"):
        raise ValueError(f"draws must be 'torch' or 'ours', got {draws!r}")
    n = x.shape[0]
    if draws == "torch":
        torch.manual_seed(seed)
    net = critic(x.shape[1] + y.shape[1]).to(x.device)
    if draws == "torch":
        def shuffle():
            return torch.randperm(n, device=x.device)
    else:
        gen = torch.Generator().manual_seed(seed)
        drawn = neural._mlp_params(1, neural._chen_widths(x.shape[1] + y.shape[1]), gen, init="xavier")
        with torch.no_grad():
            for linear, (w, b) in zip([m for m in net if isinstance(m, nn.Linear)], drawn):
                linear.weight.copy_(w[0].T)
                linear.bias.copy_(b[0, 0])

        def shuffle():
            return torch.argsort(torch.rand(n, generator=gen)).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = _schedule(opt, steps, lr)
    joint = torch.cat([x, y], dim=1)
    curve = []
    for _ in range(steps):
        marginal = torch.cat([x, y[shuffle()]], dim=1)
        mi = net(joint).mean() - (torch.logsumexp(net(marginal).squeeze(1), 0) - math.log(n))
        curve.append(mi.detach())
        opt.zero_grad()
        (-mi).backward()
        opt.step()
        sched.step()
    curve = torch.stack(curve).double().cpu()
    finite = torch.where(torch.isfinite(curve), curve, torch.full_like(curve, -math.inf))
    return max(float(finite.max()), 0.0), curve


def original_cells(x, y, steps, lr, seed, *, draws="torch"):
    """:func:`original_mine` on every cell of ``x [C, N, dx]``, ``y [C, N, dy]``, one after another.

    Returns ``(values [C], curves [steps, C])``, float64.
    """
    out = [original_mine(x[c], y[c], steps, lr, seed, draws=draws) for c in range(x.shape[0])]
    return torch.tensor([v for v, _ in out], dtype=torch.float64), torch.stack([c for _, c in out], dim=1)


def cells(c, n, d, seed=0, device="cpu"):
    """``c`` cells of ``n`` float32 rows with ``d`` dims per side: y = rho x + noise, rho varying by cell."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(c, n, d, generator=gen)
    rho = torch.linspace(0.0, 0.9, c).view(c, 1, 1)
    y = rho * x + (1 - rho**2).sqrt() * torch.randn(c, n, d, generator=gen)
    return x.to(device), y.to(device)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _best_time(fn, repeats, device):
    best, result = math.inf, None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def flops_per_cell_step(n, d_in):
    """Multiply-adds x 2 of one step: two forward passes (joint, marginal) and their backward (about 2x forward)."""
    widths = [d_in] + [max(d_in >> k, 3) for k in range(1, 10)] + [1]
    forward = 2 * n * sum(a * b for a, b in itertools.pairwise(widths))
    return 3 * 2 * forward


def compare(c, n, d, steps, lr, seed, repeats, device, ceiling):
    """Time ours and the peer on the same ``c`` cells; check their curves agree with shared draws.

    Also times the peer on 8-row cells (its per-step cost that is not arithmetic) and bounds the
    ratio any grouped path could reach: the peer's time over the same arithmetic at ``ceiling``
    GFLOP/s (a large fp32 matmul's rate on this machine).
    """
    x, y = cells(c, n, d, seed, device)
    xs, ys = cells(c, 8, d, seed, device)
    t_fixed, _ = _best_time(lambda: original_cells(xs, ys, steps, lr, seed), repeats, device)
    t_ours, (v_ours, diag) = _best_time(lambda: neural.chen2024(x, y, steps=steps, lr=lr, seed=seed, details=True),
                                        repeats, device)
    t_peer, (v_peer, _) = _best_time(lambda: original_cells(x, y, steps, lr, seed), repeats, device)
    # agreement, untimed: the peer with our initial weights and shuffles
    v_shared, curve_shared = original_cells(x, y, steps, lr, seed, draws="ours")
    curve_ours = diag.curve.reshape(steps, c)
    scale = curve_ours.abs().max().clamp_min(1.0)
    return {"cells": c, "n": n, "d": d, "steps": steps, "ours_s": t_ours, "peer_s": t_peer,
            "ours_cs": t_ours / (c * steps), "peer_cs": t_peer / (c * steps),
            "curve_diff": float((curve_ours - curve_shared).abs().max() / scale),
            "value_diff": float((v_ours - v_shared).abs().max()),
            "own_draws_diff": float((v_ours - v_peer).abs().max()), "peer_fixed_cs": t_fixed / (c * steps),
            "ratio_bound": t_peer / (flops_per_cell_step(n, 2 * d) * c * steps / (ceiling * 1e9)),
            "gflops": flops_per_cell_step(n, 2 * d) * c * steps / t_ours / 1e9,
            "peer_gflops": flops_per_cell_step(n, 2 * d) * c * steps / t_peer / 1e9}


def matmul_gflops(device, size=1024, repeats=5):
    """A plain fp32 ``size``-cubed matmul's GFLOP/s on this machine now: the ceiling either side can reach."""
    a = torch.randn(size, size, device=device)
    t, _ = _best_time(lambda: a @ a, repeats, device)
    return 2 * size**3 / t / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="64x8,64x32,64x128,576x4x20",
                        help="comma-separated DxC[xS]: D dims per side (x and y), C cells, S steps (default --steps)")
    parser.add_argument("--n", type=int, default=1024, help="rows per cell")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings per side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    compare(2, 64, 4, 3, args.lr, args.seed, 1, args.device, 1.0)  # untimed warm-up: first-call costs of both paths
    ceiling = matmul_gflops(args.device)
    rows = []
    for spec in args.configs.split(","):
        d, c, *s = (int(v) for v in spec.split("x"))
        row = compare(c, args.n, d, s[0] if s else args.steps, args.lr, args.seed, args.repeats, args.device, ceiling)
        rows.append(row)
        print(row, flush=True)
    lines = ["#### `chen2024` preset against the original design: one critic per cell (issue #14, item 4)", "",
             (f"- machine: {platform.machine()}, {args.device}, 2 vCPU shared and loaded (a CI run and other "
              f"engineers on the same cores), torch {torch.__version__}, torch threads {args.threads}"),
             *provenance("chen2024_peer", argv),
             (f"- N = {args.n} rows per cell, {args.steps} steps unless the row says, lr {args.lr}, seed {args.seed}; "
              f"times are the best of {args.repeats}; fp32 {ceiling:.0f} GFLOP/s for a 1024-cubed matmul in the same run"),
             "",
             ("| d per side | cells | steps | peer: loop of nn.Sequential (s) | ours: grouped (s) "
              "| peer per (cell, step) (ms) | ours per (cell, step) (ms) | ratio | peer / ours GFLOP/s "
              "| peer per (cell, step) at N = 8 (ms) | ratio if ours ran at the matmul rate "
              "| max curve diff, shared draws (rel.) | max value diff, shared draws (nats) "
              "| max value diff, each its own draws (nats) |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['d']} | {r['cells']} | {r['steps']} | {r['peer_s']:.2f} | {r['ours_s']:.2f} "
                     f"| {r['peer_cs'] * 1e3:.3f} | {r['ours_cs'] * 1e3:.3f} | {r['peer_cs'] / r['ours_cs']:.2f} "
                     f"| {r['peer_gflops']:.1f} / {r['gflops']:.1f} | {r['peer_fixed_cs'] * 1e3:.3f} "
                     f"| {r['ratio_bound']:.1f} | {r['curve_diff']:.1e} | {r['value_diff']:.1e} "
                     f"| {r['own_draws_diff']:.2f} |")
    emit(lines, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
