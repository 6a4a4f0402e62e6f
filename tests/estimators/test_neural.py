"""Neural MI bounds against Gaussian closed forms.

Tolerances. InfoNCE, NWJ and DV are lower bounds on I(X;Y) in expectation, SMILE's clipped DV
nearly so, and a critic trained for a few hundred steps sits below the optimum, so an estimate may
fall short of the truth by an optimisation gap (asserted to be under 40%) but may exceed it only
by held-out noise: ``est <= truth + 3 * stderr`` (the held-out standard error), plus nothing else.
"""
import itertools
import math

import pytest
import torch

from emergence_fast.estimators import neural

RHO = 0.75
TRUTH_1D = -0.5 * math.log(1 - RHO**2)  # 0.4133 nats


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one thread each keeps runs fast and timings stable."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gaussian_pairs(rho, n, d, seed, lead=()):
    """y = rho x + sqrt(1 - rho^2) e per coordinate: I(X;Y) = -d/2 log(1 - rho^2)."""
    gen = torch.Generator().manual_seed(seed)
    rho = torch.as_tensor(rho, dtype=torch.float64).reshape(*lead, 1, 1) if lead else rho
    x = torch.randn(*lead, n, d, generator=gen, dtype=torch.float64)
    e = torch.randn(*lead, n, d, generator=gen, dtype=torch.float64)
    return x, rho * x + torch.sqrt(1 - torch.as_tensor(rho) ** 2) * e


def truth(rho, d):
    return -0.5 * d * math.log(1 - rho**2)


def test_truth_constant():
    assert abs(TRUTH_1D - 0.4133) < 1e-4


@pytest.mark.parametrize("method", ["infonce", "nwj", "smile", "mine"])
@pytest.mark.parametrize("d", [1, 4])
def test_gaussian_within_lower_bound_tolerance(method, d):
    x, y = gaussian_pairs(RHO, 2000, d, seed=10 + d)
    true = truth(RHO, d)  # 0.4133 (d=1), 1.653 (d=4) nats
    est, diag = neural.mutual_information(x, y, method=method, steps=300, details=True)
    assert est.dtype == torch.float64 and est.shape == ()
    se = float(diag.stderr)
    assert 0 < se < 0.1
    assert 0.6 * true <= float(est) <= true + 3 * se, (method, d, float(est), true, se)


def test_concat_critic_on_bivariate_gaussian():
    x, y = gaussian_pairs(RHO, 2000, 1, seed=3)
    est, diag = neural.mutual_information(x, y, critic="concat", hidden=32, batch_size=64, steps=300, details=True)
    assert diag.critic == "concat"
    assert 0.6 * TRUTH_1D <= float(est) <= TRUTH_1D + 3 * float(diag.stderr)


def test_infonce_capped_by_log_batch_on_high_mi():
    x, y = gaussian_pairs(0.999, 2000, 4, seed=4)  # I = 12.4 nats, far above log(16) = 2.77
    est, diag = neural.mutual_information(x, y, method="infonce", batch_size=16, steps=200, details=True)
    assert float(est) <= math.log(16) + 1e-6
    assert float(est) >= 0.8 * math.log(16)  # it does saturate
    assert any("saturated" in note for note in diag.notes)


@pytest.mark.parametrize("method", ["infonce", "nwj"])
def test_independent_data_is_near_zero(method):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2000, 2, generator=gen)
    y = torch.randn(2000, 2, generator=gen)
    est = neural.mutual_information(x, y, method=method, steps=200)
    assert abs(float(est)) < 0.03


def test_batched_cells_share_one_optimiser_and_track_truth(monkeypatch):
    built = []
    real_adam = torch.optim.Adam

    def counting_adam(params, *args, **kwargs):
        params = list(params)
        built.append([p.shape for p in params])
        return real_adam(params, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", counting_adam)
    rhos = [0.3, 0.6, 0.9]
    x, y = gaussian_pairs(rhos, 2000, 1, seed=6, lead=(3,))
    est, diag = neural.mutual_information(x, y, steps=300, details=True)
    assert len(built) == 1  # one optimiser for all cells ...
    assert all(shape[0] == 3 for shape in built[0])  # ... over grouped [cells, in, out] weights
    assert est.shape == (3,) and est.dtype == torch.float64
    truths = [truth(r, 1) for r in rhos]  # 0.047, 0.223, 0.830 nats
    assert float(est[0]) < float(est[1]) < float(est[2])
    for value, true, se in zip(est.tolist(), truths, diag.stderr.tolist()):
        assert 0.6 * true - 2 * se <= value <= true + 3 * se, (value, true, se)


def test_arbitrary_leading_dims_and_base():
    x, y = gaussian_pairs(RHO, 400, 1, seed=7)
    x = x.expand(2, 3, 400, 1)
    y = y.expand(2, 3, 400, 1)
    nats = neural.mutual_information(x, y, steps=40)
    bits = neural.mutual_information(x, y, steps=40, base=2)
    assert nats.shape == (2, 3)
    torch.testing.assert_close(bits, nats / math.log(2))


def test_same_seed_reproduces_and_other_seed_differs():
    x, y = gaussian_pairs(RHO, 500, 2, seed=8)
    a = neural.mutual_information(x, y, method="nwj", steps=60, seed=1)
    b = neural.mutual_information(x, y, method="nwj", steps=60, seed=1)
    c = neural.mutual_information(x, y, method="nwj", steps=60, seed=2)
    assert float(a) == float(b)
    assert float(a) != float(c)


def test_early_stopping_and_curve():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1000, 1, generator=gen)
    y = torch.randn(1000, 1, generator=gen)
    est, diag = neural.mutual_information(x, y, steps=2000, patience=2, eval_every=10, details=True)
    assert diag.steps_run < 2000  # nothing to learn: the held-out bound stops improving quickly
    assert diag.curve.shape == (diag.steps_run // 10,)
    assert float(est) == float(diag.curve.max())
    assert int(diag.best_step) % 10 == 0


def test_chen2024_preset_bits_nonnegative_and_biased_up():
    # Independent data (I = 0), small N, dx = dy = 16 so the halving critic is not a width-3 tube, and a faster
    # learning rate so 300 steps train it: the max over steps of the training-set DV estimate is then far above
    # the truth and above the held-out InfoNCE estimate of the same data (both in bits).
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(300, 16, generator=gen)
    y = torch.randn(300, 16, generator=gen)
    chen, diag = neural.mutual_information(x, y, preset="chen2024", steps=300, lr=1e-2, base=2, details=True)
    infonce = neural.mutual_information(x, y, method="infonce", steps=300, base=2)
    assert diag.preset == "chen2024" and diag.stderr is None and diag.curve.shape == (300,)
    assert chen.dtype == torch.float64 and float(chen) >= 0
    torch.testing.assert_close(chen, diag.curve.max().clamp_min(0))
    assert abs(float(infonce)) < 0.15
    assert float(chen) > 0.5  # true MI is 0 bits
    assert float(chen) >= float(infonce)


def test_chen2024_is_in_nats_unless_base_like_every_method():
    x, y = gaussian_pairs(RHO, 200, 2, seed=13)
    nats = neural.mutual_information(x, y, preset="chen2024", steps=30)
    bits = neural.mutual_information(x, y, preset="chen2024", steps=30, base=2)
    assert float(nats) > 0
    torch.testing.assert_close(bits, nats / math.log(2), rtol=1e-12, atol=0)
    # The function itself (MI_METHODS["chen2024"]) follows the same rule.
    assert torch.equal(neural.chen2024(x, y, steps=30), nats)
    assert torch.equal(neural.chen2024(x, y, steps=30, base=math.e), nats)


def test_cells_are_estimated_as_if_alone():
    """Every random draw is shared by the cells: a batched call gives each cell what a call on it alone gives."""
    rhos = [0.3, 0.6, 0.9]
    x, y = gaussian_pairs(rhos, 300, 2, seed=14, lead=(3,))
    for kwargs in ({"method": "nwj", "steps": 40, "patience": 1, "eval_every": 5},
                   {"preset": "chen2024", "steps": 15}):
        batched = neural.mutual_information(x, y, **kwargs)
        # Sub-batches of two: on a multi-threaded CPU a batch of one runs its matrix products as one
        # GEMM split over threads, which rounds differently (emergence_fast.estimate_memory).
        first, last = neural.mutual_information(x[:2], y[:2], **kwargs), neural.mutual_information(x[1:], y[1:], **kwargs)
        assert torch.equal(batched[:2], first) and torch.equal(batched[1:], last), kwargs


def test_chen2024_architecture_and_schedule():
    assert neural._chen_widths(1536) == [1536, 768, 384, 192, 96, 48, 24, 12, 6, 3, 1]  # 2 x GPT-2 width
    assert neural._chen_widths(2) == [2] + [3] * 9 + [1]
    lrs = [neural._chen_lr(s, 100, 1e-4) for s in range(101)]
    assert lrs[0] == 0 and lrs[5] == pytest.approx(1e-4) and lrs[100] == pytest.approx(1e-8)
    assert all(a >= b for a, b in itertools.pairwise(lrs[5:]))
    assert lrs[50] == pytest.approx((1e-4 - 1e-8) * (50 / 95) ** 3 + 1e-8)


def test_chen2024_reports_a_negative_best_bound_as_zero():
    # One step on independent data: the untrained critic's DV value is below 0 in the second cell, so
    # the clamp (not the data) decides what that cell reports; the first cell's positive value passes.
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(2, 200, 1, generator=gen)
    y = torch.randn(2, 200, 1, generator=gen)
    chen, diag = neural.mutual_information(x, y, preset="chen2024", steps=1, details=True)
    best = diag.curve.max(0).values
    assert float(best[0]) > 0 > float(best[1])
    assert chen.shape == (2,)
    assert torch.equal(chen, torch.stack([best[0], torch.zeros((), dtype=torch.float64)]))


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "ksg"}, "method"),
    ({"critic": "bilinear"}, "critic"),
    ({"holdout": 0}, "holdout"),
    ({"holdout": 1.0}, "holdout"),
    ({"holdout": -0.2}, "holdout"),
    ({"preset": "chen2025"}, "preset"),
    ({"backend": "fortran"}, "backend"),
    ({"batch_size": 1}, "batch_size"),
    ({"steps": 0}, "steps"),
    ({"lr": -1.0}, "lr"),
    ({"base": 1}, "base"),
])
def test_argument_errors(kwargs, match):
    x = torch.randn(100, 1)
    y = torch.randn(100, 1)
    with pytest.raises(ValueError, match=match):
        neural.mutual_information(x, y, steps=kwargs.pop("steps", 5), **kwargs)


def test_unpaired_inputs_rejected():
    with pytest.raises(ValueError, match="same number of samples"):
        neural.mutual_information(torch.randn(100, 1), torch.randn(99, 1), steps=5)


def test_non_integer_seed_rejected():
    with pytest.raises(TypeError, match="seed"):
        neural.mutual_information(torch.randn(100, 1), torch.randn(100, 1), steps=5, seed=1.5)
