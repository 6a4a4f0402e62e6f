"""Result-file readers, and the report on the real Pythia LAMBADA files checked against hand computation."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from emergence_fast.mirage import readers
from emergence_fast.mirage.report import analyse

PYTHIA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "pythia-lm-eval"
needs_pythia = pytest.mark.skipif(not PYTHIA_DIR.is_dir(), reason=f"Pythia lm-eval files not found at {PYTHIA_DIR}")

# LAMBADA (OpenAI) in the eight files, smallest model first: acc and ppl as stored.
ACC = [0.18455268775470599, 0.3283524160683097, 0.5162041529206287, 0.5804385794682709, 0.6161459344071415,
       0.6471958082670289, 0.672811954201436, 0.7046380749078207]
PPL = [142.42891015470678, 38.064877017771195, 10.828202624445215, 7.4091955983268125, 6.0857145325729105,
       5.036126385825113, 4.449107940407964, 3.9236415916124625]


def pythia_files():
    return sorted(PYTHIA_DIR.glob("*.json"))


@needs_pythia
def test_pythia_family_is_read_and_sorted_by_size():
    family = readers.load_family(pythia_files(), "lambada_openai", "acc,ppl")
    assert family.params.tolist() == sorted(readers.PYTHIA_PARAMS.values())
    assert family.models[0] == "EleutherAI/pythia-v1.1-70m" and family.models[3].endswith("1b-deduped")
    assert family.values["acc"].tolist() == ACC and family.values["ppl"].tolist() == PPL
    assert family.values["p_target"] == pytest.approx(1 / np.array(PPL))           # exp(-log ppl)
    assert family.stderr["acc"][0] == pytest.approx(0.00540468283118203)
    assert family.stderr["p_target"][0] == pytest.approx(6.043810708201551 / PPL[0] ** 2)
    assert family.n_test.tolist() == [5153] * 8                                     # LAMBADA's test set


@needs_pythia
def test_pythia_report_matches_hand_computation():
    report = analyse(readers.load_family(pythia_files(), "lambada_openai", "acc,ppl"), n_boot=200)
    steps = np.diff(ACC)
    # sign(argmax - argmin) = +1, range = acc[12b] - acc[70m]; the 7 squared steps' median is the 4th smallest
    median_square = sorted(steps**2)[3]
    assert median_square == pytest.approx((0.6161459344071415 - 0.5804385794682709) ** 2)
    es_acc = (ACC[-1] - ACC[0]) / math.sqrt(median_square)
    assert report.stats["acc"].emergence_score == pytest.approx(es_acc)
    assert es_acc == pytest.approx(14.57, abs=0.01)
    lin_acc = (ACC[-1] - ACC[0]) / math.sqrt(np.mean(steps**2))
    assert report.stats["acc"].linearity == pytest.approx(lin_acc)
    p = 1 / np.array(PPL)
    es_p = (p[-1] - p[0]) / math.sqrt(sorted(np.diff(p) ** 2)[3])
    assert report.stats["p_target"].emergence_score == pytest.approx(es_p)
    assert es_p == pytest.approx(8.23, abs=0.01)
    # perplexity is lower-is-better: oriented as -ppl, still a positive (rising) curve
    assert report.stats["ppl"].emergence_score > 0 and report.stats["ppl"].higher_is_better is False
    # the broad, saturating LAMBADA curves are not sharp under any of the three metrics
    assert set(report.verdicts.values()) == {"smooth"}
    assert report.power_law is not None and report.power_law.alpha < 0
    assert report.predictions["acc"]["formula"] == "p^L"
    assert report.predictions["acc"]["predicted"] == pytest.approx(
        report.power_law.predicted_accuracy(report.params, 1.0))


@needs_pythia
def test_params_mapping_overrides_and_missing_counts_are_named(tmp_path):
    family = readers.load_family(pythia_files()[:1], "lambada_openai", "acc",
                                 params={"EleutherAI/pythia-v1.1-1.4b": 1.5e9})
    assert family.params.tolist() == [1.5e9]
    data = json.loads(pythia_files()[0].read_text())
    data["config"]["model_args"] = "pretrained=my-org/mystery-model"
    path = tmp_path / "mystery.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"mystery.json: no parameter count for model 'my-org/mystery-model'"):
        readers.load_family([path], "lambada_openai", "acc")
    assert readers.load_family([path], "lambada_openai", "acc", params={"mystery": "2.5b"}).params.tolist() == [2.5e9]


def test_malformed_lm_eval_files_name_file_and_key(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"results": {"lambada_openai": {"acc": "high"}}}))
    with pytest.raises(ValueError, match=r"broken.json: results.lambada_openai.acc must be a number"):
        readers.load_family([path], "lambada_openai", "acc", params={"broken": 1e9})
    with pytest.raises(ValueError, match=r"broken.json: no task 'piqa' under 'results'; tasks in the file: \['lambada"):
        readers.load_family([path], "piqa", "acc", params={"broken": 1e9})
    with pytest.raises(ValueError, match=r"has no metric 'acc_norm'; available: \['acc'\]"):
        readers.load_family([path], "lambada_openai", "acc_norm", params={"broken": 1e9})
    path.write_text(json.dumps({"resultz": {}}))
    with pytest.raises(ValueError, match=r"broken.json: not a recognised results file"):
        readers.load_family([path], "lambada_openai", "acc")
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.json: not valid JSON"):
        readers.load_family([path], "lambada_openai", "acc")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        readers.load_family([tmp_path / "nope.json"], "lambada_openai", "acc")


def test_unknown_metric_names_list_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown metric 'accuracy': known metrics are \["):
        readers.load_family([tmp_path / "x.csv"], None, "accuracy")


def bigbench_file(path: Path, name: str, params, mcg: float, brier: float, extra_entry=False):
    scores = [{"high_score": 1.0, "low_score": 0.25, "number_of_shots": 0, "preferred_score": "multiple_choice_grade",
               "subtask_description": "logical_deduction",
               "score_dict": {"multiple_choice_grade": mcg, "calibration_multiple_choice_brier_score": brier,
                              "normalized_aggregate_score": 100 * (mcg - 0.25) / 0.75}}]
    if extra_entry:
        scores.append({**scores[0], "number_of_shots": 1})
    path.write_text(json.dumps({"model": {"model_family": "BIG-G T=0", "model_name": name, "total_params": params},
                                "scores": scores, "task": {"task_name": "logical_deduction"}}))
    return path


def test_bigbench_json(tmp_path):
    paths = [bigbench_file(tmp_path / f"m{i}.json", f"m{i}", 10 ** (7 + i), 0.25 + 0.1 * i, 0.2 - 0.02 * i)
             for i in range(3)]
    family = readers.load_family(paths, "logical_deduction",
                                 "multiple_choice_grade,calibration_multiple_choice_brier_score")
    assert family.models == ["m0", "m1", "m2"] and family.params.tolist() == [1e7, 1e8, 1e9]
    assert family.values["multiple_choice_grade"] == pytest.approx([0.25, 0.35, 0.45])
    with pytest.raises(ValueError, match=r"m0.json: score_dict has no metric 'normalized_aggregate_score'"):
        readers.load_family(paths, "logical_deduction", "normalized_aggregate_score",
                            higher_is_better=("normalized_aggregate_score",))
    two = bigbench_file(tmp_path / "two.json", "two", 1e9, 0.5, 0.1, extra_entry=True)
    with pytest.raises(ValueError, match=r"two.json: 2 score entries match .*pass the task"):
        readers.load_family([two], "logical_deduction", "multiple_choice_grade")
    assert readers.load_family([two], "logical_deduction", "multiple_choice_grade", shots=1).values[
        "multiple_choice_grade"].tolist() == [0.5]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"model": {"model_name": "b", "total_params": 1e9}, "scores": [{"score": 1}]}))
    with pytest.raises(ValueError, match=r"broken.json: scores\[0\] has no 'score_dict'"):
        readers.load_family([broken], None, "multiple_choice_grade")


def test_csv(tmp_path):
    path = tmp_path / "family.csv"
    path.write_text("model,params,metric,score,stderr\n"
                    "a,70m,acc,0.1,0.01\na,70m,ppl,100,\nb,1.4b,acc,0.5,0.01\nb,1.4b,ppl,10,\n"
                    "c,,acc,0.7,0.01\nc,,ppl,5,\n")
    family = readers.load_family([path], None, "acc,ppl", params=readers.parse_params(["c=12b"]))
    assert family.models == ["a", "b", "c"] and family.params.tolist() == [70e6, 1.4e9, 12e9]
    assert family.values["p_target"].tolist() == pytest.approx([0.01, 0.1, 0.2])
    assert family.stderr["acc"].tolist() == [0.01] * 3
    bad = tmp_path / "bad.csv"
    bad.write_text("model,size,metric,score\na,1,acc,0.1\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['params'\]"):
        readers.load_family([bad], None, "acc")
    bad.write_text("model,params,metric,score\na,1e9,acc,zero\n")
    with pytest.raises(ValueError, match=r"bad.csv: line 2: 'score' must be a number"):
        readers.load_family([bad], None, "acc")


def test_parse_count_and_params():
    assert readers.parse_count("410m") == 410e6 and readers.parse_count("1.4B") == 1.4e9
    assert readers.parse_count("70_426_624") == 70426624 and readers.parse_count("2e9") == 2e9
    assert readers.parse_params(["org/model-x=1.5b", "y=12"]) == {"org/model-x": 1.5e9, "y": 12.0}
    assert readers.pythia_params("EleutherAI/pythia-v1.1-1.4b-deduped") == 1_414_647_808
    assert readers.pythia_params("EleutherAI/pythia-160m") == 162_322_944
    assert readers.pythia_params("gpt2") is None
    with pytest.raises(ValueError, match="name=count"):
        readers.parse_params(["12b"])
    with pytest.raises(ValueError, match="positive"):
        readers.parse_count("0")


# ---------------------------------------------------------------------------------------------
# one rule for every reader: duplicates, ranges, empty inputs

def test_a_model_read_twice_is_refused_in_a_csv_and_across_files(tmp_path):
    path = tmp_path / "family.csv"
    path.write_text("model,params,metric,score\na,70m,acc,0.1\nb,1b,acc,0.3\na,70m,acc,0.2\n")
    with pytest.raises(ValueError, match=r"^.*family.csv: model 'a' has metric 'acc' twice, on lines 2 and 4; keep one "
                                         r"row per model and metric$"):
        readers.load_family([path], None, "acc")
    path.write_text("model,params,metric,score,n_test\na,70m,acc,0.1,100\na,1.4b,ppl,10,100\n")
    with pytest.raises(ValueError, match=r"family.csv: model 'a' has params 7e\+07 on line 2 but 1.4e\+09 on line 3; "
                                         r"give one params per model"):
        readers.load_family([path], None, "acc")
    path.write_text("model,params,metric,score,n_test\na,70m,acc,0.1,100\na,,ppl,10,200\n")
    with pytest.raises(ValueError, match=r"family.csv: model 'a' has n_test 100 on line 2 but 200 on line 3"):
        readers.load_family([path], None, "acc")
    path.write_text("model,params,metric,score\na,70m,acc,0.1\na,70m,ppl,10\nb,1b,acc,0.3\nb,1b,ppl,5\n")
    other = tmp_path / "more.csv"
    other.write_text("model,params,metric,score\nc,2b,acc,0.4\nb,1b,acc,0.35\n")
    with pytest.raises(ValueError, match=rf"^model 'b' is read twice: from {path} line 4 and from {other} line 3; "
                                         rf"give each model once$"):
        readers.load_family([path, other], None, "acc")
    lm_eval = tmp_path / "b.json"
    lm_eval.write_text(json.dumps({"results": {"t": {"acc": 0.3, "acc_stderr": 0.01}},
                                   "config": {"model_args": "pretrained=b"}}))
    with pytest.raises(ValueError, match=rf"^model 'b' is read twice: from {path} line 4 and from {lm_eval}; "):
        readers.load_family([path, lm_eval], "t", "acc", params={"b": 1e9})
    again = tmp_path / "b-rerun.json"
    again.write_text(lm_eval.read_text())
    with pytest.raises(ValueError, match=rf"^model 'b' is read twice: from {lm_eval} and from {again}; "):
        readers.load_family([lm_eval, again], "t", "acc", params={"b": 1e9})


def test_values_outside_their_metrics_range_are_refused(tmp_path):
    path = tmp_path / "family.csv"
    cases = [
        ("a,70m,acc,1.7,0.01", "acc",
         (r"family.csv line 2: model 'a': acc = 1.7 is outside \[0, 1\], the range of acc \(a proportion of examples\); "
          r"check that the file or column holds this metric \(a percentage must be divided by 100\)$")),
        ("a,70m,acc,-0.2,0.01", "acc", r"model 'a': acc = -0.2 is outside \[0, 1\].*holds this metric$"),
        ("a,70m,ppl,0.5,", "ppl", (r"model 'a': ppl = 0.5 is outside \[1, inf\], the range of ppl \(perplexity of the "
                                   r"target \(lm-evaluation-harness\)\)")),
        ("a,70m,loglik,0.3,", "loglik", r"loglik = 0.3 is outside \[-inf, 0\]"),
        ("a,70m,seq_prob,-0.01,", "seq_prob", r"seq_prob = -0.01 is outside \[0, 1\]"),
        ("a,70m,acc,0.5,-0.01", "acc", (r"family.csv line 2: model 'a': acc: stderr -0.01 is negative; a standard "
                                        r"error is >= 0")),
    ]
    for row, metric, message in cases:
        path.write_text(f"model,params,metric,score,stderr\n{row}\n")
        with pytest.raises(ValueError, match=message):
            readers.load_family([path], None, metric)
    # a metric the user declares has no range we know
    path.write_text("model,params,metric,score\na,70m,elo,1700\nb,1b,elo,1800\na,70m,acc,0.2\nb,1b,acc,0.4\n")
    family = readers.load_family([path], None, "elo,acc", higher_is_better=("elo",))
    assert family.values["elo"].tolist() == [1700, 1800]
    lm_eval = tmp_path / "m.json"
    lm_eval.write_text(json.dumps({"results": {"t": {"acc,none": 70.4, "acc_stderr,none": 0.5}},
                                   "config": {"model_args": "pretrained=m"}}))
    with pytest.raises(ValueError, match=r"m.json: model 'm': acc \(read as 'acc,none'\) = 70.4 is outside \[0, 1\].*"
                                         r"\(a percentage must be divided by 100\)$"):
        readers.load_family([lm_eval], "t", "acc", params={"m": 1e9})
    big = bigbench_file(tmp_path / "bb.json", "bb", 1e9, 1.5, 0.1)
    with pytest.raises(ValueError, match=r"bb.json: model 'bb': multiple_choice_grade = 1.5 is outside \[0, 1\]"):
        readers.load_family([big], "logical_deduction", "multiple_choice_grade")


def test_every_known_metric_has_a_range():
    from emergence_fast.mirage.metrics import METRICS
    assert {n for n, s in METRICS.items() if not s.proportion} == set(readers._RANGES)


def test_empty_inputs_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "family.csv"
    path.write_text("model,params,metric,score\n")
    with pytest.raises(ValueError, match=rf"^{path}: no data rows under the header; expected a header "
                                         r"model,params,metric,score \(optional stderr, n_test\) and one row per model "
                                         r"and metric$"):
        readers.load_family([path], None, "acc")
    path.write_text("")
    with pytest.raises(ValueError, match=rf"^{path}: empty file; expected a header model,params,metric,score"):
        readers.load_family([path], None, "acc")
    path.write_text("model,params,metric,score\na,1e9,,0.5\n")
    with pytest.raises(ValueError, match=rf"^{path}: line 2: empty 'metric'$"):
        readers.load_family([path], None, "acc")
    empty = tmp_path / "empty.json"
    for text, what in (("", "empty file"), ("  \n", "empty file"), ("{}", "empty JSON object"),
                       ("[]", "empty JSON array")):
        empty.write_text(text)
        with pytest.raises(ValueError, match=rf"^{empty}: {what}; expected an lm-evaluation-harness results object "
                                             r"\(with 'results'\) or a BIG-bench results object \(with 'model' and "
                                             r"'scores'\)$"):
            readers.load_family([empty], "t", "acc")
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "notes.txt").write_text("no results here")
    with pytest.raises(ValueError, match=rf"^{folder}: a folder with no result files"):
        readers.load_family([folder], "t", "acc")


def test_files_with_a_utf8_bom_are_read_and_other_encodings_refused(tmp_path):
    # issue #13: Excel and Windows editors write a BOM first
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes("model,params,metric,score\na,1e8,acc,0.2\nb,1e9,acc,0.4\n".encode("utf-8-sig"))
    assert readers.load_family([csv_path], None, "acc").values["acc"].tolist() == [0.2, 0.4]
    json_path = tmp_path / "bom.json"
    json_path.write_bytes(json.dumps({"results": {"t": {"acc": 0.3}}, "config": {
        "model_args": "pretrained=m", "model_num_parameters": 1000}}).encode("utf-8-sig"))
    assert readers.load_family([json_path], "t", "acc").values["acc"].tolist() == [0.3]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("model,params,metric,score\nmodèle,1e8,acc,0.2\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.csv: not UTF-8 text \(byte 0xe8 is not UTF-8\); results files are "
                                         r"read as UTF-8 \(a BOM is allowed\): save it as UTF-8"):
        readers.load_family([latin], None, "acc")
    latin_json = tmp_path / "latin.json"
    latin_json.write_bytes('{"results": {"t": {"acc": 0.3}}, "x": "é"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.json: not UTF-8 text \(byte 0xe9"):
        readers.load_family([latin_json], "t", "acc")


def test_nan_scores_are_refused_naming_file_line_model_and_metric(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("model,params,metric,score\na,1e8,acc,nan\nb,1e9,acc,0.4\n")
    with pytest.raises(ValueError, match=r"f.csv line 2: model 'a': acc is NaN; give a number, or leave the model or "
                                         r"metric out$"):
        readers.load_family([path], None, "acc")
    lm_eval = tmp_path / "m.json"
    lm_eval.write_text('{"results": {"t": {"acc": NaN}}, "config": {"model_args": "pretrained=m"}}')
    with pytest.raises(ValueError, match=r"m.json: model 'm': acc is NaN"):
        readers.load_family([lm_eval], "t", "acc", params={"m": "1b"})


def test_a_row_with_more_fields_than_the_header_is_refused(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("model,params,metric,score\na,1e8,acc,0.2\nb,1e9,acc,0,4\n")
    with pytest.raises(ValueError, match=r"f.csv: line 3: 5 fields but the header has 4 \(model,params,metric,score\); "
                                         r"a comma inside a value must be quoted"):
        readers.load_family([path], None, "acc")


def test_params_naming_no_model_are_refused_and_overrides_are_noted(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("model,params,metric,score\na,1e8,acc,0.2\nb,1e9,acc,0.4\n")
    with pytest.raises(ValueError, match=r"params: \['foo'\] match no model; the models read are \['a', 'b'\] "
                                         r"\(a file's stem also names its model\)"):
        readers.load_family([path], None, "acc", params={"foo": "1b"})
    family = readers.load_family([path], None, "acc", params={"a": "5b"})
    assert family.models == ["b", "a"] and family.params.tolist() == [1e9, 5e9]
    assert f"params of a overridden: 5e+09 from params (the file {path} says 1e+08)" in family.notes
    same = readers.load_family([path], None, "acc", params={"a": "100m"})     # the file's own count: nothing to say
    assert not any("overridden" in note for note in same.notes)
