"""``emergence-fast bench`` on a tiny random GPT-2 (no download): bench.json is written atomically,
rates are positive and finite, ratios are rate / peer rate, and bad input names the argument."""
import argparse
import io
import json
import math

import pytest

from emergence_fast import bench
from tests.tiny_models import one_thread, tiny_model  # noqa: F401 (autouse)

# Quick sizes, smaller still where the tiny model allows: the whole module runs in seconds.
SIZES = {"n_samples": 48, "batch_size": 16, "icl_max_len": 3, "repeats": 2, "min_time_s": 0.0,
         "gram_shapes": [(2, 256, 32)], "entropy_shapes": [(8, 4096)], "knn_shapes": [(1, 300, 2, 1)]}


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def result(gpt2, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench") / "nested"
    text = io.StringIO()
    res = bench.run_bench(gpt2, None, out_dir=out_dir, quick=True, sizes=SIZES, out=text)
    return res, out_dir, text.getvalue()


def positive_finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_json_is_written_and_matches_the_result(result):
    res, out_dir, _ = result
    path = out_dir / bench.BENCH_FILE
    assert path.is_file() and res["path"] == str(path)
    assert not list(out_dir.glob("*.tmp*"))  # atomic: no temporary file left behind
    data = json.loads(path.read_text())
    assert set(data) >= {"provenance", "model", "icl", "kernels", "sizes", "skipped_backends"}
    for key in ("date", "emergence_fast", "torch", "device_name", "threads", "command", "model"):
        assert key in data["provenance"]
    assert data["provenance"]["model"]["n_parameters"] > 0
    assert data["kernels"] == json.loads(json.dumps(res["kernels"]))


def test_model_and_icl_rates(result):
    res, _, _ = result
    m = res["model"]
    assert m["tokens"] == SIZES["n_samples"] * 8 and m["layers"] == 3
    for key in ("bare_forward_s", "bare_tokens_per_s", "ie_macro_pass_s", "ie_tokens_per_s", "ie_estimate_s"):
        assert positive_finite(m[key]), key
    assert m["bare_tokens_per_s"] == pytest.approx(m["tokens"] / m["bare_forward_s"])
    assert m["overhead"] == pytest.approx(m["ie_macro_pass_s"] / m["bare_forward_s"] - 1)
    assert m["ratio"] == pytest.approx(m["ie_tokens_per_s"] / m["bare_tokens_per_s"])
    assert m["ie_tokens_per_s"] == pytest.approx(m["ie_tokens_per_s_reported"])
    icl = res["icl"]
    assert icl["n_prompts"] == 2 * SIZES["icl_max_len"]
    for key in ("single_prompts_per_s", "batched_prompts_per_s"):
        assert positive_finite(icl[key]), key
    assert icl["ratio"] == pytest.approx(icl["batched_prompts_per_s"] / icl["single_prompts_per_s"])
    assert icl["batched_tokens_fed"] < icl["single_tokens_fed"]  # the prefix cache was used
    assert icl["max_abs_diff"] < 1e-4


def test_kernel_rows_have_peers_and_ratios(result):
    res, _, _ = result
    rows = res["kernels"]
    ops = {row["op"] for row in rows}
    assert ops == {"gram", "softmax_entropy", "knn_maxnorm (KSG counts)"}
    assert all(row["backend"] != "triton" for row in rows if row["device"] == "cpu")  # interpreter not timed
    for op in ops:
        assert any(row["op"] == op and row["backend"] == "torch" for row in rows), op
    for row in rows:
        assert positive_finite(row["rate"]) and positive_finite(row["peer_rate"]), row
        assert row["ratio"] == pytest.approx(row["rate"] / row["peer_rate"], rel=1e-12)
    for row in rows:
        if row["op"] == "gram":
            assert row["max_rel_error"] < 1e-5
        elif row["op"] == "softmax_entropy":
            assert row["max_abs_error_nats"] < 1e-4
        else:
            assert row["counts_agree_with_peer"] > 0.99


def test_table_is_printed(result):
    _, _, text = result
    assert "bare forward" in text and "IE macro pass" in text and "prompts/s" in text
    assert "GFLOP/s" in text and "GB/s" in text and "queries/s" in text


def test_median_time_is_positive():
    assert positive_finite(bench.median_time(lambda: sum(range(100)), "cpu", repeats=3, min_time_s=0.001))


def test_bad_input_names_the_argument(gpt2, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        bench.run_bench(gpt2, None, out_dir=a_file, quick=True, out=False)
    with pytest.raises(ValueError, match="out_dir"):
        bench.run_bench(gpt2, None, out_dir=a_file / "below", quick=True, out=False)
    for key, value in (("n_samples", 0), ("batch_size", -1), ("repeats", 0), ("icl_max_len", 1.5)):
        with pytest.raises(ValueError, match=key):
            bench.run_bench(gpt2, None, quick=True, sizes={key: value}, out=False)
    with pytest.raises(ValueError, match="gram_shapes"):
        bench.run_bench(gpt2, None, quick=True, sizes={"gram_shapes": [(1, 0, 4)]}, out=False)
    with pytest.raises(ValueError, match="sizes"):
        bench.run_bench(gpt2, None, quick=True, sizes={"n_sample": 4}, out=False)
    with pytest.raises(ValueError, match="icl_max_len"):  # prompts longer than the model's 64 positions
        bench.run_bench(gpt2, None, quick=True, sizes={**SIZES, "icl_max_len": 40}, out=False)


@pytest.mark.parametrize("sizes, message", [
    ({"icl_max_len": 1.5}, "icl_max_len must be an integer >= 1, got 1.5"),
    ({"repeats": True}, "repeats must be an integer >= 1, got True"),
    ({"n_samples": 16}, ("n_samples must be at least 17 (IE's default estimator, top-8 PCA with the Wishart "
                         "correction, needs more than 16 samples), got 16")),
    ({"min_time_s": 61}, "min_time_s must be a number of seconds in [0, 60], got 61"),
    ({"min_time_s": -1.0}, "min_time_s must be a finite number >= 0, got -1.0"),
    ({"gram_shapes": [(1, 0, 4)]}, "each size in gram_shapes entry [1, 0, 4] must be an integer >= 1, got 0"),
    ({"knn_shapes": [(1, 64, 2)]}, "knn_shapes entries must be 4 positive integers, got (1, 64, 2)"),
])
def test_bad_sizes_give_the_standard_message(gpt2, sizes, message):
    with pytest.raises(ValueError) as info:
        bench.run_bench(gpt2, None, quick=True, sizes=sizes, out=False)
    assert str(info.value) == message


def test_cli_sizes_are_checked_with_the_flag_name(tmp_path):
    with pytest.raises(ValueError) as info:
        bench.run(cli_args("--out", str(tmp_path / "ok"), "--n-samples", "16"))
    assert str(info.value).startswith("--n-samples must be at least 17 (")
    with pytest.raises(ValueError) as info:
        bench.run(cli_args("--out", str(tmp_path / "ok"), "--threads", "0"))
    assert str(info.value) == "--threads must be an integer >= 1, got 0"


def cli_args(*argv):
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_cli_parser_and_errors(tmp_path):
    args = cli_args("--out", str(tmp_path), "--quick")
    assert args.func is bench.run and args.quick and args.out == str(tmp_path)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    # Each is rejected before any model is loaded.
    for argv, name in ((["--out", str(a_file)], "--out"), (["--n-samples", "0"], "--n-samples"),
                       (["--batch-size", "-2"], "--batch-size"), (["--repeats", "0"], "--repeats"),
                       (["--threads", "0"], "--threads"), (["--device", "nonsense"], "--device")):
        with pytest.raises(ValueError, match=name):
            bench.run(cli_args(*argv, "--out", str(tmp_path / "ok")) if "--out" not in argv else cli_args(*argv))
    assert not (tmp_path / "ok").exists()  # nothing created on a user error
    with pytest.raises(SystemExit):
        bench.main(["--out", str(a_file)])  # main prints the one-line error and exits 2
