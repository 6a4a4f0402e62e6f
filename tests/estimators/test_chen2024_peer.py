"""The original-design peer of the chen2024 preset (benchmarks/chen2024_peer.py) against the preset itself.

The benchmark's speed ratio means something only if both sides compute the same thing: with the
same initial weights and shuffles, one nn.Sequential per cell must retrace the grouped critic's
training curve, cell by cell, step by step.
"""
import pytest
import torch

from benchmarks import chen2024_peer as peer
from emergence_fast.estimators import neural


def _cells():
    # d = 32 per side: with a critic narrower than this (d = 4: 8 -> 4 -> 3 -> ...) the gradients nearly
    # cancel, Adam divides them by their own size, and float32 round-off (ours sums in baddbmm, the peer
    # in addmm) grows from 1e-7 to 1e-3 nats within 40 steps at lr 1e-2: agreement is then only statistical.
    return peer.cells(3, 64, 32, seed=1)


def test_peer_retraces_the_grouped_preset_with_shared_draws():
    x, y = _cells()
    steps = 40
    # lr 1e-2 so that the schedule and the updates move the curve well beyond round-off
    ours, diag = neural.chen2024(x, y, steps=steps, lr=1e-2, seed=3, details=True)
    values, curves = peer.original_cells(x, y, steps, 1e-2, 3, draws="ours")
    assert float((curves[-1] - curves[0]).abs().min()) > 0.1  # training moved every cell far beyond the tolerance
    torch.testing.assert_close(curves, diag.curve, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(values, ours, rtol=1e-4, atol=1e-5)


def test_peer_with_its_own_draws_is_a_different_run_of_the_same_estimator():
    x, y = _cells()
    values, curves = peer.original_cells(x, y, 40, 1e-2, 3)
    shared, _ = peer.original_cells(x, y, 40, 1e-2, 3, draws="ours")
    assert not torch.equal(values, shared)  # randperm and xavier_normal_ draws, not ours
    torch.testing.assert_close(values, curves.max(0).values.clamp_min(0))
    again, _ = peer.original_cells(x, y, 40, 1e-2, 3)
    assert torch.equal(values, again)  # seeded


def test_peer_critic_is_the_preset_architecture():
    net = peer.critic(1152)  # SmolLM2 width, x and y side by side
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [linears[0].in_features] + [m.out_features for m in linears] == neural._chen_widths(1152)
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in net) == len(linears) - 1


@pytest.mark.parametrize("transformers", [True, False])
def test_peer_schedule_is_the_preset_schedule(monkeypatch, transformers):
    if not transformers:  # the LambdaLR the peer falls back to when transformers is absent
        monkeypatch.setattr(peer, "get_polynomial_decay_schedule_with_warmup", None)
    elif peer.get_polynomial_decay_schedule_with_warmup is None:
        pytest.skip("transformers is not installed")
    steps, lr = 30, 1e-4
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = peer._schedule(opt, steps, lr)
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [neural._chen_lr(s, steps, lr) for s in range(steps)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-20)


def test_peer_rejects_an_unknown_draws():
    x, y = _cells()
    with pytest.raises(ValueError, match="draws must be 'torch' or 'ours', got 'numpy'"):
        peer.original_mine(x[0], y[0], 2, 1e-4, 0, draws="numpy")
