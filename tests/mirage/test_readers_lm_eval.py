"""lm-evaluation-harness results of every released format: 0.3 (``acc``, ``acc_stderr``) and >= 0.4
(``acc,none``, filters, ``groups``, ``"N/A"`` stderr, ``n-samples``), written here as small fixtures
next to the real 0.3 files of eight Pythia sizes."""
import argparse
import io
import json
import math

import numpy as np
import pytest

from emergence_fast.mirage import cli, readers
from emergence_fast.mirage.metrics import metric_spec
from emergence_fast.mirage.report import analyse
from tests.mirage.test_cli import run as run_cli
from tests.mirage.test_readers import ACC, PPL, PYTHIA_DIR, needs_pythia, pythia_files


def v04_lambada(model, acc, acc_se, ppl, ppl_se, *, version=None, n=5153):
    """An lm-eval >= 0.4 LAMBADA result as the harness writes it (``perplexity`` is 0.3's ``ppl``)."""
    data = {
        "results": {"lambada_openai": {"alias": "lambada_openai", "perplexity,none": ppl, "perplexity_stderr,none": ppl_se,
                                       "acc,none": acc, "acc_stderr,none": acc_se}},
        "group_subtasks": {"lambada_openai": []},
        "configs": {"lambada_openai": {"task": "lambada_openai", "output_type": "loglikelihood"}},
        "versions": {"lambada_openai": 1.0}, "n-shot": {"lambada_openai": 0},
        "higher_is_better": {"lambada_openai": {"perplexity": False, "acc": True}},
        "n-samples": {"lambada_openai": {"original": n, "effective": n}},
        "config": {"model": "hf", "model_args": f"pretrained={model},dtype=float32", "batch_size": "16"},
        "git_hash": "abc1234",
    }
    if version is not None:
        data["lm_eval_version"] = version
    return data


def v03_lambada(model, acc, acc_se, ppl, ppl_se):
    return {"results": {"lambada_openai": {"ppl": ppl, "ppl_stderr": ppl_se, "acc": acc, "acc_stderr": acc_se}},
            "versions": {"lambada_openai": 0},
            "config": {"model": "hf-causal", "model_args": f"pretrained={model}", "num_fewshot": 0}}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# Three Pythia sizes' LAMBADA numbers as the 0.3 files store them (70m, 160m, 410m).
SE_ACC = [0.00540468283118203, 0.006542638265686499]
SE_PPL = [6.043810708201551, 1.4363799633211518]


def test_the_format_is_detected():
    assert readers.lm_eval_format(v03_lambada("m", 0.5, 0.01, 10.0, 1.0)) == "lm-eval 0.3"
    assert readers.lm_eval_format(v04_lambada("m", 0.5, 0.01, 10.0, 1.0)) == "lm-eval >=0.4"
    assert readers.lm_eval_format(v04_lambada("m", 0.5, 0.01, 10.0, 1.0, version="0.4.8")) == "lm-eval 0.4.8"
    # an early 0.4 file with nothing but the results: the metric,filter keys give it away
    assert readers.lm_eval_format({"results": {"t": {"acc,none": 0.5}}}) == "lm-eval >=0.4"


def test_03_and_04_files_give_the_same_family_and_record_their_formats(tmp_path):
    paths = [write(tmp_path / "a.json", v03_lambada("EleutherAI/pythia-70m", ACC[0], SE_ACC[0], PPL[0], SE_PPL[0])),
             write(tmp_path / "b.json", v04_lambada("EleutherAI/pythia-160m", ACC[1], SE_ACC[1], PPL[1], SE_PPL[1])),
             write(tmp_path / "c.json", v04_lambada("EleutherAI/pythia-410m", ACC[2], "N/A", PPL[2], "N/A",
                                                   version="0.4.8"))]
    family = readers.load_family(paths, "lambada_openai", "acc,ppl")
    assert family.models == ["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m"]
    assert family.formats == ["lm-eval 0.3", "lm-eval >=0.4", "lm-eval 0.4.8"]
    assert family.values["acc"].tolist() == ACC[:3] and family.values["ppl"].tolist() == PPL[:3]
    assert family.values["p_target"].tolist() == pytest.approx([1 / p for p in PPL[:3]])
    assert family.stderr["acc"].tolist()[:2] == SE_ACC and math.isnan(family.stderr["acc"][2])   # "N/A": unknown
    assert family.stderr["p_target"][1] == pytest.approx(SE_PPL[1] / PPL[1] ** 2)
    # 0.3: recovered from acc and its stderr; >= 0.4: n-samples
    assert family.n_test.tolist() == [5153, 5153, 5153]
    unknown = "stderr 'N/A' (unknown) in the file for 1 of 3 model(s) (EleutherAI/pythia-410m): no interval for those points"
    assert family.notes == [
        "input formats: lm-eval 0.3 (1 model), lm-eval >=0.4 (1 model), lm-eval 0.4.8 (1 model)",
        ("the models come from different lm-evaluation-harness formats ['lm-eval 0.3', 'lm-eval 0.4.8', "
         "'lm-eval >=0.4']: task definitions may differ between harness versions"),
        f"acc: {unknown}", "ppl read as 'perplexity,none' in the files", f"ppl: {unknown}",
        # the files carry no counts (issue #13: say where they came from)
        ("params from the built-in Pythia table (the files have no counts): EleutherAI/pythia-70m 70426624, "
         "EleutherAI/pythia-160m 162322944, EleutherAI/pythia-410m 405334016")]
    report = analyse(family, n_boot=50)
    assert report.config["formats"] == family.formats
    assert report.notes[:len(family.notes)] == family.notes
    assert "note: input formats: lm-eval 0.3 (1 model)" in report.table()
    assert math.isnan(report.curves["acc"].lo[2]) and report.curves["acc"].lo[0] < ACC[0]


def test_a_metric_is_named_with_or_without_its_filter(tmp_path):
    path = write(tmp_path / "m.json", v04_lambada("EleutherAI/pythia-70m", 0.25, 0.01, 20.0, 2.0))
    for metrics in ("acc", "acc,none", ["acc,none"], ["acc"], "acc,none,ppl,none"):
        family = readers.load_family([path], "lambada_openai", metrics)
        assert family.values["acc"].tolist() == [0.25], metrics           # reported as acc, never 'acc,none'
    assert list(readers.load_family([path], "lambada_openai", "acc,none,ppl,none").values) == ["acc", "ppl", "p_target"]
    assert list(readers.load_family([path], "lambada_openai", "perplexity").values) == ["perplexity"]
    # acc,none also names a 0.3 file's plain acc (no filter is the 'none' filter)
    old = write(tmp_path / "old.json", v03_lambada("EleutherAI/pythia-160m", 0.3, 0.01, 15.0, 1.0))
    assert readers.load_family([old], "lambada_openai", "acc,none").values["acc"].tolist() == [0.3]
    with pytest.raises(ValueError, match=r"m.json: results.lambada_openai has no metric 'acc,strict-match'; "
                                         r"available: \['acc,none', 'perplexity,none'\] \('strict-match' after the "
                                         r"comma is read as an lm-evaluation-harness filter"):
        readers.load_family([path], "lambada_openai", "acc,strict-match")


def test_split_metrics_keeps_filters_with_their_metric():
    assert readers.split_metrics("acc,ppl") == ["acc", "ppl"]
    assert readers.split_metrics("acc,none") == ["acc,none"]
    assert readers.split_metrics(" acc,none , ppl ") == ["acc,none", "ppl"]
    assert readers.split_metrics("exact_match,strict-match,exact_match,flexible-extract") == [
        "exact_match,strict-match", "exact_match,flexible-extract"]
    assert readers.split_metrics("acc,mcc") == ["acc,mcc"]
    assert readers.split_metrics("acc,mcc", higher_is_better=("mcc",)) == ["acc", "mcc"]
    with pytest.raises(TypeError, match="metrics must be a str or a list of str, got int"):
        readers.split_metrics(3)


def gsm8k(model, strict, flexible=None, *, version="0.4.2"):
    entry = {"alias": "gsm8k", "exact_match,strict-match": strict, "exact_match_stderr,strict-match": 0.01}
    if flexible is not None:
        entry.update({"exact_match,flexible-extract": flexible, "exact_match_stderr,flexible-extract": 0.012})
    return {"results": {"gsm8k": entry}, "n-samples": {"gsm8k": {"original": 1319, "effective": 1319}},
            "config": {"model": "hf", "model_args": {"pretrained": model}}, "lm_eval_version": version}


def test_filters_are_chosen_by_name_and_several_are_listed(tmp_path):
    paths = [write(tmp_path / f"g{i}.json", gsm8k(f"EleutherAI/pythia-{size}", s, f))
             for i, (size, s, f) in enumerate([("410m", 0.02, 0.03), ("1b", 0.03, 0.05), ("1.4b", 0.05, 0.08)])]
    with pytest.raises(ValueError, match=r"g0.json: results.gsm8k reports metric 'exact_match' under several filters: "
                                         r"\['exact_match,flexible-extract', 'exact_match,strict-match'\]; name one "
                                         r"of them \(e.g. 'exact_match,flexible-extract'\)"):
        readers.load_family(paths, "gsm8k", "exact_match")
    family = readers.load_family(paths, "gsm8k", "exact_match,strict-match,exact_match,flexible-extract")
    assert list(family.values) == ["exact_match,strict-match", "exact_match,flexible-extract"]
    assert family.values["exact_match,strict-match"].tolist() == [0.02, 0.03, 0.05]
    assert family.values["exact_match,flexible-extract"].tolist() == [0.03, 0.05, 0.08]
    assert family.stderr["exact_match,flexible-extract"].tolist() == [0.012] * 3
    assert family.n_test.tolist() == [1319] * 3 and family.formats == ["lm-eval 0.4.2"] * 3
    spec = metric_spec("exact_match,strict-match")
    assert spec.higher_is_better and spec.proportion and spec.description.endswith("filter 'strict-match'")
    report = analyse(family, n_boot=50)
    assert report.curves["exact_match,strict-match"].proportion is True


def test_the_one_filter_is_taken_and_said_but_not_two_different_ones(tmp_path):
    one = [write(tmp_path / f"s{i}.json", gsm8k(f"EleutherAI/pythia-{size}", v))
           for i, (size, v) in enumerate([("410m", 0.02), ("1b", 0.03)])]
    family = readers.load_family(one, "gsm8k", "exact_match")
    assert family.values["exact_match"].tolist() == [0.02, 0.03]
    assert "exact_match read as 'exact_match,strict-match' in the files" in family.notes
    other = gsm8k("EleutherAI/pythia-1.4b", 0.5)
    other["results"]["gsm8k"] = {"exact_match,flexible-extract": 0.08, "exact_match_stderr,flexible-extract": 0.01}
    mixed = one + [write(tmp_path / "f.json", other)]
    with pytest.raises(ValueError, match=r"metric 'exact_match' is a different metric in different files "
                                         r"\('exact_match,strict-match' in .*s0.json; 'exact_match,flexible-extract' "
                                         r"in .*f.json\); name the filter, e.g. --metrics exact_match,strict-match"):
        readers.load_family(mixed, "gsm8k", "exact_match")


def mmlu(model, acc, *, subtask_acc=(0.3, 0.2, 0.25)):
    """lm-eval >= 0.4 MMLU: a group of groups, its scores under 'groups' with a pooled stderr of 'N/A'."""
    tasks = {"mmlu_formal_logic": 126, "mmlu_philosophy": 311, "mmlu_virology": 166}
    results = {name: {"alias": f"  - {name[5:]}", "acc,none": a, "acc_stderr,none": 0.04}
               for name, a in zip(tasks, subtask_acc)}
    return {"results": results,
            "groups": {"mmlu": {"acc,none": acc, "acc_stderr,none": "N/A", "alias": "mmlu"},
                       "mmlu_humanities": {"acc,none": acc, "acc_stderr,none": "N/A", "alias": " - humanities"}},
            "group_subtasks": {"mmlu": ["mmlu_humanities", "mmlu_virology"],
                               "mmlu_humanities": ["mmlu_formal_logic", "mmlu_philosophy"], "mmlu_virology": [],
                               "mmlu_formal_logic": [], "mmlu_philosophy": []},
            "n-samples": {name: {"original": n, "effective": n} for name, n in tasks.items()},
            "config": {"model": "hf", "model_args": {"pretrained": model, "dtype": "bfloat16"},
                       "model_num_parameters": 123_456_789},
            "model_name": model, "lm_eval_version": "0.4.3"}


def test_groups_are_read_with_their_size_and_unknown_stderr(tmp_path):
    path = write(tmp_path / "mmlu.json", mmlu("org/model-a", 0.27))
    family = readers.load_family([path], "mmlu", "acc")
    assert family.models == ["org/model-a"] and family.params.tolist() == [123_456_789]   # model_num_parameters
    assert family.values["acc"].tolist() == [0.27] and math.isnan(family.stderr["acc"][0])
    assert family.n_test.tolist() == [126 + 311 + 166]          # the group's subtasks, through the nested group
    assert family.formats == ["lm-eval 0.4.3"]
    assert family.notes[-1] == ("acc: stderr 'N/A' (unknown) in the file for 1 of 1 model(s) (org/model-a): "
                                "no interval for those points")
    assert readers.load_family([path], "mmlu_humanities", "acc").n_test.tolist() == [126 + 311]
    sub = readers.load_family([path], "mmlu_philosophy", "acc,none")
    assert sub.values["acc"].tolist() == [0.2] and sub.stderr["acc"].tolist() == [0.04] and sub.n_test[0] == 311
    with pytest.raises(ValueError, match=r"mmlu.json: no task 'hellaswag' under 'results' or 'groups'; tasks in the "
                                         r"file: \['mmlu', 'mmlu_formal_logic', 'mmlu_humanities'"):
        readers.load_family([path], "hellaswag", "acc")
    data = mmlu("org/model-a", 0.27)
    data["groups"]["mmlu"]["acc_stderr,none"] = "unknown"
    with pytest.raises(ValueError, match=r"groups.mmlu.acc_stderr,none must be a number, got 'unknown'"):
        readers.load_family([write(tmp_path / "bad.json", data)], "mmlu", "acc")


def lm_eval_output(root, model, data, date="2024-05-01T10-00-00.000000"):
    """What ``lm_eval --output_path root --log_samples`` writes from 0.4.2 on."""
    folder = root / model.replace("/", "__")
    write(folder / f"results_{date}.json", data)
    (folder / f"samples_lambada_openai_{date}.jsonl").write_text('{"doc_id": 0}\n')
    return folder / f"results_{date}.json"


def test_an_lm_eval_output_folder_is_read_and_a_model_twice_is_refused(tmp_path):
    root = tmp_path / "out"
    for i, size in enumerate(("70m", "160m", "410m")):
        data = v04_lambada(f"EleutherAI/pythia-{size}", ACC[i], 0.006, PPL[i], 1.0, version="0.4.5")
        if size == "160m":    # no model_args: the model is named by its folder
            del data["config"]["model_args"]
        lm_eval_output(root, f"EleutherAI/pythia-{size}", data)
    family = readers.load_family([root], "lambada_openai", "acc")
    assert family.models == ["EleutherAI/pythia-70m", "EleutherAI__pythia-160m", "EleutherAI/pythia-410m"]
    assert family.values["acc"].tolist() == ACC[:3]
    rerun = lm_eval_output(root, "EleutherAI/pythia-70m", v04_lambada("EleutherAI/pythia-70m", 0.2, 0.006, 140.0, 6.0),
                           date="2024-06-01T10-00-00.000000")
    first = root / "EleutherAI__pythia-70m" / "results_2024-05-01T10-00-00.000000.json"
    with pytest.raises(ValueError, match=rf"model 'EleutherAI/pythia-70m' is read twice: from {first} and from "
                                         rf"{rerun}; give each model once"):
        readers.load_family([root], "lambada_openai", "acc")


def test_empty_lm_eval_inputs_are_refused(tmp_path):
    empty = tmp_path / "samples-only"
    (empty / "model").mkdir(parents=True)
    (empty / "model" / "samples_lambada_openai_2024.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match=rf"^{empty}: a folder with no result files; expected lm-evaluation-harness "
                                         r"output \(results\*.json, in a folder per model from lm-eval 0.4 on\), "
                                         r"BIG-bench JSON or CSV files in it or its subfolders$"):
        readers.load_family([empty], "lambada_openai", "acc")
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"results": {}, "config": {}}))
    with pytest.raises(ValueError, match=r"r.json: 'results' is empty; expected results -> task -> metric -> value"):
        readers.load_family([path], "lambada_openai", "acc")


def test_cli_metrics_acc_none_is_one_metric(tmp_path):
    paths = [write(tmp_path / f"{size}.json", v04_lambada(f"EleutherAI/pythia-{size}", ACC[i], 0.006, PPL[i], 1.0))
             for i, size in enumerate(("70m", "160m", "410m", "1b"))]
    text = run_cli(["mirage", "--results", *map(str, paths), "--task", "lambada_openai", "--metrics", "acc,none,ppl",
                    "--n-boot", "50", "--out", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "mirage.json").read_text())
    assert list(data["metrics"]) == ["acc", "ppl", "p_target"]
    assert data["metrics"]["acc"]["values"] == ACC[:4]
    assert data["config"]["formats"] == ["lm-eval >=0.4"] * 4
    assert "note: ppl read as 'perplexity,none' in the files" in text
    helptext = io.StringIO()
    parser = argparse.ArgumentParser(prog="emergence-fast")
    cli.add_parser(parser.add_subparsers(dest="command")).print_help(helptext)
    assert "acc,none is one metric" in " ".join(helptext.getvalue().split())


@needs_pythia
def test_the_real_pythia_files_are_03_and_read_from_their_folder():
    family = readers.load_family([PYTHIA_DIR], "lambada_openai", "acc")
    assert family.formats == ["lm-eval 0.3"] * 8 and family.notes[0] == "input formats: lm-eval 0.3 (8 models)"
    assert family.notes[1].startswith("params from the built-in Pythia table (the files have no counts): ")
    assert len(family.notes) == 2
    assert family.values["acc"].tolist() == ACC
    assert readers.load_family(pythia_files(), "lambada_openai", "acc").values["acc"].tolist() == ACC
    with pytest.raises(ValueError, match=r"pythia-1.4b_zero-shot_step143000.json is given twice \(directly or inside a "
                                         r"folder\); each result file is read once"):
        readers.load_family([PYTHIA_DIR, pythia_files()[0]], "lambada_openai", "acc")
    assert np.all(family.n_test == 5153)


def test_the_test_set_size_comes_from_the_file_before_the_stderr(tmp_path):
    data = {"results": {"arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.01, "sample_len": 2376, "alias": "arc_easy"}},
            "config": {"model_args": "pretrained=EleutherAI/pythia-70m"}}
    path = write(tmp_path / "arc.json", data)
    assert readers.load_family([path], "arc_easy", "acc").n_test.tolist() == [2376]
    del data["results"]["arc_easy"]["sample_len"]                      # p(1-p)/se^2 + 1 = 0.25/1e-4 + 1
    assert readers.load_family([write(path, data)], "arc_easy", "acc").n_test.tolist() == [2501]
    data["n-samples"] = {"arc_easy": {"original": 2376, "effective": 100}}   # run with --limit 100
    assert readers.load_family([write(path, data)], "arc_easy", "acc").n_test.tolist() == [100]
