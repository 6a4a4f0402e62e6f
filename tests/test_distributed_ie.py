"""Information Emergence on several gloo ranks (real processes) equals one process."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from emergence_fast import distributed
from emergence_fast import emergence as ie
from tests.tiny_models import icl_ids, tiny_model

ESTIMATES = ("macro", "micro", "emergence", "macro_stderr", "micro_stderr", "emergence_stderr")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, options, n_samples, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = ie.information_emergence(tiny_model("gpt2"), None, icl_ids(n_samples, k_shots=2, n_entities=20),
                                          add_bos=False, **options)
        torch.save({name: getattr(result, name) for name in ESTIMATES} | {"config": result.config,
                                                                         "world": result.provenance["world"]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        torch.distributed.barrier()  # no rank tears its connections down while a peer still reads from them
    finally:
        torch.distributed.destroy_process_group()


def run_ranks(world_size, options, n_samples, tmp_path):
    mp.spawn(_worker, args=(world_size, free_port(), options, n_samples, str(tmp_path)), nprocs=world_size)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def run_one(options, n_samples):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ie.information_emergence(tiny_model("gpt2"), None, icl_ids(n_samples, k_shots=2, n_entities=20),
                                        add_bos=False, **options)
    finally:
        torch.set_num_threads(before)


def assert_same(parts, whole, rtol):
    for part in parts:
        assert part["config"] == whole.config
        for name in ESTIMATES:
            a, b = part[name], getattr(whole, name)
            if rtol == 0:
                assert torch.equal(a.nan_to_num(), b.nan_to_num()), name
                assert torch.equal(a.isnan(), b.isnan()), name
            else:
                finite = torch.isfinite(b)
                assert torch.equal(finite, torch.isfinite(a)), name
                # Emergence is macro minus a mean of micro: relative to the terms it is a difference of.
                terms = whole.macro.abs() if name == "emergence" else whole.macro_stderr.abs() \
                    if name == "emergence_stderr" else torch.zeros_like(b)
                scale = torch.maximum(torch.maximum(a.abs(), b.abs()), terms)[finite].clamp_min(1e-6)
                assert bool(((a - b)[finite].abs() <= rtol * scale).all()), name


# (ranks, options, N): folds of one batch give uneven shards (9 folds over 2 ranks); 2 folds over 3 ranks leave
# one rank without samples; the subspace state runs when the budget is below the full moments.
CASES = {
    "gaussian-2-uneven": (2, {"estimator": "gaussian", "batch_size": 7, "update_samples": 7}, 60),
    "gaussian-3-empty-rank": (3, {"estimator": "gaussian", "batch_size": 16, "update_samples": 16}, 30),
    "sliced-3": (3, {"estimator": "sliced", "batch_size": 5, "update_samples": 10,
                     "estimator_options": {"k": 2, "n_slices": 8, "seed": 0}}, 47),
    "subspace-2": (2, {"estimator": "gaussian", "batch_size": 8, "update_samples": 8, "state_memory": "600KB",
                       "estimator_options": {"pca": 4, "bias_correction": "none"}}, 64),
}


@pytest.mark.parametrize("case", CASES)
def test_moment_estimators_match_one_process(case, tmp_path):
    world_size, options, n_samples = CASES[case]
    parts = run_ranks(world_size, options, n_samples, tmp_path)
    whole = run_one(options, n_samples)
    assert parts[0]["world"]["world_size"] == world_size
    assert_same(parts, whole, rtol=1e-12)
    if case == "subspace-2":
        assert whole.config["state"]["kind"] == "subspace"


def test_sample_estimator_matches_one_process_exactly(tmp_path):
    options = {"estimator": "ksg", "batch_size": 6, "update_samples": 6, "reservoir_size": 25,
               "estimator_options": {"k": 3, "jitter": 1e-3}}
    parts = run_ranks(3, options, 50, tmp_path)
    assert_same(parts, run_one(options, 50), rtol=0)


def test_noisy_estimator_matches_one_process_exactly(tmp_path):
    # Every cell's draws are seeded by the cell, so splitting the layers over ranks changes nothing.
    options = {"estimator": "noisy", "batch_size": 6, "update_samples": 6, "reservoir_size": 40,
               "estimator_options": {"sigma": 0.3, "n_draws": 2}}
    parts = run_ranks(2, options, 40, tmp_path)
    assert_same(parts, run_one(options, 40), rtol=0)


def _disagreeing_worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        ie.information_emergence(tiny_model("gpt2"), None, icl_ids(20, k_shots=2, n_entities=20), add_bos=False,
                                 batch_size=4 + rank)
    except ValueError as exc:
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(str(exc))
        torch.distributed.barrier()  # no rank tears its connections down while a peer still reads from them
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_with_different_configurations_fail_before_any_work(tmp_path):
    mp.spawn(_disagreeing_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        message = (tmp_path / f"rank{rank}.txt").read_text()
        assert "the ranks disagree on the configuration" in message and "batch_size" in message


def test_more_ranks_than_samples_and_bad_backend():
    world = distributed.World(rank=0, world_size=5)
    with pytest.raises(ValueError, match="more ranks"):
        ie.information_emergence(tiny_model("gpt2"), None, icl_ids(4, k_shots=2, n_entities=20), add_bos=False,
                                 world=world)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="nccl.*needs CUDA"):
            distributed.init("nccl")
    with pytest.raises(ValueError, match="dist_backend"):
        distributed.init("mpi")


def test_shards_cover_every_unit_once():
    for n in range(0, 12):
        for size in range(1, 6):
            units = [u for rank in range(size) for u in distributed.shard(n, distributed.World(rank, size))]
            assert units == list(range(n))


def _accumulator_worker(rank, world_size, port, out_dir):
    from emergence_fast import GaussianMIAccumulator

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data = torch.randn(5, 3, 240, 7, generator=torch.Generator().manual_seed(0)) * 100 + 1e4
        acc = GaussianMIAccumulator(4, 3, (5, 3)).set_reference(data[..., :1, :4], data[..., :1, 4:])
        rows = [(0, 50), (50, 50), (50, 240)][rank]  # rank 1 holds nothing
        for lo in range(rows[0], rows[1], 30):
            hi = min(lo + 30, rows[1])
            acc.update(data[..., lo:hi, :4], data[..., lo:hi, 4:])
        acc.all_reduce(distributed.current())
        torch.save(acc.moments(), os.path.join(out_dir, f"rank{rank}.pt"))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_accumulator_all_reduce_is_the_one_stream_state_bit_for_bit(tmp_path):
    from emergence_fast import GaussianMIAccumulator

    mp.spawn(_accumulator_worker, args=(3, free_port(), str(tmp_path)), nprocs=3)
    data = torch.randn(5, 3, 240, 7, generator=torch.Generator().manual_seed(0)) * 100 + 1e4
    # The same updates as the ranks' (each update's float32 Gram is the term that must match), in one stream.
    whole = GaussianMIAccumulator(4, 3, (5, 3))
    for first, last in ((0, 50), (50, 240)):
        for lo in range(first, last, 30):
            hi = min(lo + 30, last)
            whole.update(data[..., lo:hi, :4], data[..., lo:hi, 4:])
    for rank in range(3):
        for a, b in zip(torch.load(tmp_path / f"rank{rank}.pt"), whole.moments()):
            assert torch.equal(a, b)


def _subgroup_worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        group = torch.distributed.new_group([1, 2])  # a caller's sub-group without global rank 0
        if rank in (1, 2):
            world = distributed.World(torch.distributed.get_rank(group), 2, group, "gloo")
            result = ie.information_emergence(tiny_model("gpt2"), None, icl_ids(30, k_shots=2, n_entities=20),
                                              add_bos=False, batch_size=4, update_samples=4, world=world)
            torch.save(result.macro, os.path.join(out_dir, f"rank{rank}.pt"))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_a_sub_group_without_global_rank_zero(tmp_path):
    mp.spawn(_subgroup_worker, args=(3, free_port(), str(tmp_path)), nprocs=3)
    whole = run_one({"batch_size": 4, "update_samples": 4}, 30)
    for rank in (1, 2):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), whole.macro)
