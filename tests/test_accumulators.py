"""Streaming Gaussian state: chunked == one-shot, merge == concatenation, state round-trips."""
import pytest
import torch

import emergence_fast as ef
from emergence_fast import GaussianMIAccumulator
from tests.conftest import cpu_backends


def paired(generator, lead=(2, 3), n=600, dx=5, dy=4, offset=0.0):
    x = torch.randn(*lead, n, dx, generator=generator, dtype=torch.float64) + offset
    y = x[..., :dy] * 0.7 + torch.randn(*lead, n, dy, generator=generator, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("backend", cpu_backends())
def test_chunked_equals_one_shot_to_float64_rounding(backend, generator):
    x, y = paired(generator, offset=50.0)
    acc = GaussianMIAccumulator(5, 4, (2, 3), backend=backend)
    for lo, hi in ((0, 1), (1, 77), (77, 400), (400, 600)):
        acc.update(x[..., lo:hi, :], y[..., lo:hi, :])
    one_shot = ef.mutual_information(x, y, backend="torch")
    torch.testing.assert_close(acc.mutual_information(), one_shot, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.entropy_x(), ef.entropy(x, backend="torch"), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.entropy_y(bias_correction="wishart"),
                               ef.entropy(y, bias_correction="wishart", backend="torch"), rtol=1e-12, atol=1e-12)
    assert torch.equal(acc.count, torch.full((2, 3), 600))


def test_merge_of_shards_equals_one_pass(generator):
    x, y = paired(generator)
    left = GaussianMIAccumulator(5, 4, (2, 3)).update(x[..., :250, :], y[..., :250, :])
    right = GaussianMIAccumulator(5, 4, (2, 3)).update(x[..., 250:, :], y[..., 250:, :])
    whole = GaussianMIAccumulator(5, 4, (2, 3)).update(x, y)
    left.merge(right)
    torch.testing.assert_close(left.comoment, whole.comoment, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(left.mutual_information(), whole.mutual_information(), rtol=1e-12, atol=1e-12)


def test_merge_into_empty_and_state_dict_round_trip(generator, tmp_path):
    x, y = paired(generator)
    full = GaussianMIAccumulator(5, 4, (2, 3)).update(x, y)
    empty = GaussianMIAccumulator(5, 4, (2, 3)).merge(full)
    torch.testing.assert_close(empty.mutual_information(), full.mutual_information(), rtol=0, atol=0)
    path = tmp_path / "state.pt"
    torch.save(full.state_dict(), path)
    resumed = GaussianMIAccumulator(5, 4, (2, 3)).load_state_dict(torch.load(path))
    resumed.update(x[..., :10, :], y[..., :10, :])
    full.update(x[..., :10, :], y[..., :10, :])
    torch.testing.assert_close(resumed.mutual_information(), full.mutual_information(), rtol=0, atol=0)


def test_float32_streams_match_float64_one_shot(generator):
    x, y = paired(generator, lead=(), n=5000, offset=1e3)
    acc = GaussianMIAccumulator(5, 4)
    for chunk in range(0, 5000, 512):
        acc.update(x[chunk:chunk + 512].float(), y[chunk:chunk + 512].float())
    assert abs(float(acc.mutual_information()) - float(ef.mutual_information(x, y))) < 1e-4


def test_weighted_update_is_the_update_of_the_repeated_rows(generator):
    x, y = paired(generator, n=9, offset=20.0)
    counts = torch.randint(0, 4, (2, 3, 9), generator=generator)
    weighted = GaussianMIAccumulator(5, 4, (2, 3)).update(x, y, counts)
    for cell in range(6):  # each cell's rows repeated its own number of times
        i, j = divmod(cell, 3)
        repeat = counts[i, j]
        alone = GaussianMIAccumulator(5, 4).update(x[i, j].repeat_interleave(repeat, 0), y[i, j].repeat_interleave(repeat, 0))
        assert int(weighted.count[i, j]) == int(repeat.sum())
        for got, expected in zip(weighted.moments((i, j)), alone.moments()):
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)


def test_bad_weights_are_refused_and_state_kept(generator):
    x, y = paired(generator, lead=(), n=10)
    acc = GaussianMIAccumulator(5, 4).update(x, y)
    before = acc.state_dict()["s2"].clone()
    message = r"^weights must be an integer tensor of counts >= 0 of shape \(10,\) \(\[\*batch_shape, n\]\); the state is unchanged$"
    for weights in (torch.ones(10), torch.ones(9, dtype=torch.int64), -torch.ones(10, dtype=torch.int64)):
        with pytest.raises(ValueError, match=message):
            acc.update(x, y, weights)
    assert torch.equal(acc.state_dict()["s2"], before) and int(acc.count) == 10


def test_wrong_width_is_refused_and_state_kept(generator):
    x, y = paired(generator, lead=(), n=100)
    acc = GaussianMIAccumulator(5, 4).update(x, y)
    before = {key: value.clone() for key, value in acc.state_dict().items() if isinstance(value, torch.Tensor)}
    with pytest.raises(ValueError, match="x has 3 features.*dx=5"):
        acc.update(x[:, :3], y)
    with pytest.raises(ValueError, match="y has 5 features.*dy=4"):
        acc.update(x, x)
    with pytest.raises(ValueError, match="batch_shape"):
        acc.update(x.unsqueeze(0), y.unsqueeze(0))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(x * float("nan"), y)
    after = acc.state_dict()
    for key in ("count", "reference", "s1", "s1_lo", "s2", "s2_lo"):
        assert torch.equal(before[key], after[key])


@pytest.mark.parametrize("kwargs,match", [
    ({"dx": 0, "dy": 2}, "dx"),
    ({"dx": 2, "dy": 2.5}, "dy"),
    ({"dx": 2, "dy": 2, "batch_shape": (3, 0)}, "batch_shape"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMIAccumulator(**kwargs)


def test_estimate_before_two_samples_is_refused(generator):
    acc = GaussianMIAccumulator(2, 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        acc.mutual_information()
    with pytest.raises(ValueError, match="dx, dy, batch_shape"):
        acc.merge(GaussianMIAccumulator(2, 3))


def test_reservoir_keeps_everything_below_capacity_and_is_uniform_above(generator):
    from emergence_fast.accumulators import PairReservoir

    x = torch.arange(40.0).reshape(1, 40, 1).expand(2, 40, 1)
    small = PairReservoir(1, 1, (2,), capacity=64).update(x[:, :25], -x[:, :25]).update(x[:, 25:], -x[:, 25:])
    kx, ky = small.pairs()
    assert torch.equal(kx[0, :, 0], torch.arange(40.0)) and torch.equal(ky, -kx) and torch.equal(kx[0], kx[1])
    # Above capacity every row is kept with probability capacity / N: check the inclusion frequencies.
    hits = torch.zeros(200, dtype=torch.float64)
    rows = torch.arange(200.0).reshape(1, 200, 1)
    for seed in range(300):
        reservoir = PairReservoir(1, 1, (1,), capacity=20, seed=seed)
        for lo in range(0, 200, 37):
            reservoir.update(rows[:, lo:lo + 37], rows[:, lo:lo + 37])
        kept = reservoir.pairs()[0][0, :, 0].long()
        assert torch.equal(kept, reservoir.index) and kept.unique().numel() == 20
        hits[kept] += 1
    frequency = hits / 300  # expected 0.1 each; sd ~ 0.017
    assert abs(float(frequency.mean()) - 0.1) < 1e-12 and float((frequency - 0.1).abs().max()) < 0.09
    assert abs(float(frequency[:100].mean()) - float(frequency[100:].mean())) < 0.02


def test_reservoir_resumes_exactly(generator):
    from emergence_fast.accumulators import PairReservoir

    data = torch.randn(3, 300, 4, generator=generator)
    whole = PairReservoir(2, 2, (3,), capacity=50, seed=7)
    part = PairReservoir(2, 2, (3,), capacity=50, seed=7)
    for lo in range(0, 300, 60):
        whole.update(data[:, lo:lo + 60, :2], data[:, lo:lo + 60, 2:])
        if lo == 120:
            part = PairReservoir(2, 2, (3,), capacity=50).load_state_dict(part.state_dict())
        part.update(data[:, lo:lo + 60, :2], data[:, lo:lo + 60, 2:])
    assert torch.equal(whole.samples, part.samples) and torch.equal(whole.index, part.index)
    with pytest.raises(ValueError, match="reservoir is unchanged"):
        part.update(data[:, :5, :3], data[:, :5, 2:])


def test_reservoir_merge_is_a_uniform_sample_of_both_streams():
    from emergence_fast.accumulators import PairReservoir

    rows = torch.arange(200.0).reshape(1, 200, 1)
    # Below capacity a merge keeps every row of both shards, under their global indices.
    small = PairReservoir(1, 1, (1,), capacity=64).update(rows[:, :20], rows[:, :20])
    small.merge(PairReservoir(1, 1, (1,), capacity=64).update(rows[:, 20:50], rows[:, 20:50], torch.arange(20, 50)))
    assert small.seen == 50 and sorted(small.index[:50].tolist()) == list(range(50))
    assert torch.equal(small.pairs()[0][0, :, 0].long().sort().values, torch.arange(50))
    # Above capacity: unequal shards (60 and 140 rows), every row kept with probability 20 / 200.
    hits = torch.zeros(200, dtype=torch.float64)
    for seed in range(400):
        first = PairReservoir(1, 1, (1,), capacity=20, seed=seed).update(rows[:, :60], rows[:, :60])
        second = PairReservoir(1, 1, (1,), capacity=20, seed=seed).update(rows[:, 60:], rows[:, 60:], torch.arange(60, 200))
        kept = first.merge(second).pairs()[0][0, :, 0].long()
        assert torch.equal(kept, first.index) and kept.unique().numel() == 20
        hits[kept] += 1
    frequency = hits / 400  # expected 0.1 each; sd 0.015
    assert abs(float(frequency[:60].mean()) - 0.1) < 0.01 and abs(float(frequency[60:].mean()) - 0.1) < 0.01
    assert float((frequency - 0.1).abs().max()) < 0.075


def test_reservoir_is_the_same_for_any_split_and_order(generator):
    """Bottom-k by a hash of the global index: shards, batch sizes and order cannot change what is kept."""
    from emergence_fast.accumulators import PairReservoir

    data = torch.randn(2, 300, 3, generator=generator)
    whole = PairReservoir(2, 1, (2,), capacity=40, seed=5).update(data[..., :2], data[..., 2:])
    order = torch.randperm(300, generator=generator)
    shards = [PairReservoir(2, 1, (2,), capacity=40, seed=5) for _ in range(3)]
    for part, rows in zip(shards, (order[:7], order[7:7], order[7:])):  # one empty shard
        for lo in range(0, rows.numel(), 23):
            batch = rows[lo:lo + 23]
            part.update(data[:, batch, :2], data[:, batch, 2:], batch)
    merged = shards[2].merge(shards[1]).merge(shards[0])
    assert torch.equal(merged.samples, whole.samples) and torch.equal(merged.index, whole.index)
    assert merged.seen == 300


def test_reservoir_merge_errors():
    from emergence_fast.accumulators import PairReservoir

    base = PairReservoir(1, 1, (2,), capacity=8)
    with pytest.raises(ValueError, match="capacity"):
        base.merge(PairReservoir(1, 1, (2,), capacity=9))
    with pytest.raises(ValueError, match="seed"):
        base.merge(PairReservoir(1, 1, (2,), capacity=8, seed=1))
    with pytest.raises(TypeError, match="PairReservoir"):
        base.merge(object())


def test_sums_are_reproducible_in_any_order_and_split(generator):
    """Double-double shifted sums: shards in any order reach one stream's state bit for bit."""
    x, y = paired(generator, lead=(3,), n=900)
    x = x * 1e3 + 5e4  # a massive-activation offset and a large scale
    whole = GaussianMIAccumulator(5, 4, (3,))
    for lo in range(0, 900, 100):
        whole.update(x[:, lo:lo + 100], y[:, lo:lo + 100])
    parts = []
    for chunks in ([(0, 100), (600, 900)], [(100, 600)], []):
        part = GaussianMIAccumulator(5, 4, (3,)).set_reference(x[:, :1], y[:, :1])
        for lo, hi in chunks:
            for start in range(lo, hi, 100):
                part.update(x[:, start:start + 100], y[:, start:start + 100])
        parts.append(part)
    merged = parts[2].merge(parts[1]).merge(parts[0])
    for a, b in zip(merged.moments(), whole.moments()):
        assert torch.equal(a, b)


def test_self_merge_and_wrong_shaped_state_are_refused(generator):
    x, y = paired(generator, lead=(2,), n=50)
    acc = GaussianMIAccumulator(5, 4, (2,)).update(x, y)
    with pytest.raises(ValueError, match="count every sample twice"):
        acc.merge(acc)
    state = {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in acc.state_dict().items()}
    state["s2"] = state["s2"][..., :3, :3]
    before = acc.moments()
    with pytest.raises(ValueError, match="wrong shape.*s2"):
        acc.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(before, acc.moments()))


@pytest.mark.parametrize("base", [float("inf"), float("nan"), 1, 0, -2, True])
def test_invalid_base_is_refused(base):
    from emergence_fast._validation import log_base

    with pytest.raises(ValueError, match="base"):
        log_base(base)


def _state_copy(state):
    return {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in state.items()}


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("s1_lo"), r"missing keys \['s1_lo'\]"),
    (lambda s: s.update(extra=1), r"unexpected keys \['extra'\]"),
    (lambda s: s.update(dx=4), r"state\['dx'\] is 4, but this GaussianMIAccumulator has dx=5"),
    (lambda s: s.update(s1=s["s1"].float()), r"s1: dtype torch.float32, expected float64"),
    (lambda s: s.update(count=s["count"].double()), r"count: dtype torch.float64, expected an integer dtype"),
    (lambda s: s.update(reference=s["reference"][:1]), r"reference: shape \(1, 9\), expected \(2, 9\)"),
    (lambda s: s.update(s2=s["s2"].tolist()), r"s2: a list, not a tensor"),
    (lambda s: s.update(count=-s["count"]), r"negative counts"),
])
def test_gaussian_state_with_wrong_keys_shapes_or_dtypes_is_refused(generator, change, match):
    x, y = paired(generator, lead=(2,), n=50)
    acc = GaussianMIAccumulator(5, 4, (2,)).update(x, y)
    state = _state_copy(acc.state_dict())
    change(state)
    before = acc.moments()
    with pytest.raises(ValueError, match=match):
        acc.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(before, acc.moments()))
    empty = GaussianMIAccumulator(5, 4, (2,)).state_dict()  # no reference yet: None loads
    assert GaussianMIAccumulator(5, 4, (2,)).load_state_dict(empty).reference is None


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("priority"), r"missing keys \['priority'\]"),
    (lambda s: s.update(capacity=9), r"state\['capacity'\] is 9, but this PairReservoir has capacity=8"),
    (lambda s: s.update(samples=s["samples"][..., :1]), r"samples: shape \(2, 8, 1\), expected \(2, 8, 2\)"),
    (lambda s: s.update(index=s["index"].double()), r"index: dtype torch.float64, expected an integer dtype"),
    (lambda s: s.update(seen=-1), r"state\['seen'\] must be a non-negative int"),
    (lambda s: s.update(seed=2**64), r"seed'\] must be below 2\*\*63"),
    (lambda s: s.update(seen=3), r"holds 8 rows but has seen=3"),
])
def test_reservoir_state_with_wrong_keys_shapes_or_dtypes_is_refused(generator, change, match):
    from emergence_fast.accumulators import PairReservoir

    rows = torch.randn(2, 20, 2, generator=generator)
    reservoir = PairReservoir(1, 1, (2,), capacity=8).update(rows[..., :1], rows[..., 1:])
    state = _state_copy(reservoir.state_dict())
    change(state)
    with pytest.raises(ValueError, match=match):
        PairReservoir(1, 1, (2,), capacity=8).load_state_dict(state)
    fresh = PairReservoir(1, 1, (2,), capacity=8).load_state_dict(reservoir.state_dict())
    assert torch.equal(fresh.samples, reservoir.samples) and fresh.seen == 20


def test_reservoir_self_merge_is_refused(generator):
    """merge(self) used to offer every kept row a second time and double seen."""
    from emergence_fast.accumulators import PairReservoir

    rows = torch.randn(1, 20, 2, generator=generator)
    reservoir = PairReservoir(1, 1, (1,), capacity=8).update(rows[..., :1], rows[..., 1:])
    with pytest.raises(ValueError, match="merging a reservoir with itself"):
        reservoir.merge(reservoir)
    assert reservoir.seen == 20


def test_subspace_state_with_wrong_shapes_is_refused(generator):
    from emergence_fast.accumulators import SubspaceGaussianAccumulator, standardised_basis

    x, y = paired(generator, lead=(2,), n=80)
    mean_x, scale_x, basis_x = standardised_basis(x, 2)
    mean_y, scale_y, basis_y = standardised_basis(y, 2)
    acc = SubspaceGaussianAccumulator(mean_x, scale_x, basis_x, mean_y, scale_y, basis_y).update(x, y)
    state = acc.state_dict()
    loaded = SubspaceGaussianAccumulator.from_state_dict(state)
    assert torch.equal(loaded.inner.count, acc.inner.count)
    for key, value, match in (("mean_x", state["mean_x"][:, :3], r"mean_x: shape \(2, 3\), expected \(2, 5\)"),
                              ("total_square", state["total_square"].int(), "total_square: dtype torch.int32"),
                              ("basis_y", None, "basis_x and basis_y")):
        with pytest.raises(ValueError, match=match):
            SubspaceGaussianAccumulator.from_state_dict({**state, key: value})
    inner = _state_copy(state["inner"])
    inner["s2"] = inner["s2"][..., :2]
    with pytest.raises(ValueError, match="s2: shape"):
        SubspaceGaussianAccumulator.from_state_dict({**state, "inner": inner})


@pytest.mark.parametrize("make, message", [
    (lambda: GaussianMIAccumulator(0, 2), "dx must be an integer >= 1, got 0"),
    (lambda: GaussianMIAccumulator(2, 1.0), "dy must be an integer >= 1, got 1.0"),
    (lambda: ef.accumulators.PairReservoir(2, 2, capacity=True), "capacity must be an integer >= 1, got True"),
    (lambda: ef.accumulators.PairReservoir(2, 2, seed=-1), "seed must be an integer >= 0, got -1"),
])
def test_bad_sizes_and_seed_give_the_standard_message(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message
