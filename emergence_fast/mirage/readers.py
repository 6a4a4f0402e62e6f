"""Read a model family's scores from result files: lm-evaluation-harness JSON, BIG-bench JSON, CSV.

Each reader returns one :class:`ModelScores` per model; :func:`load_family` reads any mix of
files and folders (the format is recognised from the content), takes parameter counts from the
file, a ``params`` mapping, or the known Pythia sizes, and sorts the models by size into a
:class:`Family`. Every error names the file and the key (or CSV line) that is missing or malformed.

lm-evaluation-harness, every released format (the one found is recorded in
:attr:`ModelScores.format` and :attr:`Family.formats`):

* ``"lm-eval 0.3"`` (0.3 and earlier): ``{"results": {task: {"acc": v, "acc_stderr": se}},
  "versions": ..., "config": {"model_args": "pretrained=NAME,..."}}``;
* ``"lm-eval >=0.4"`` (``"lm-eval 0.4.8"`` when the file records ``lm_eval_version``): metric keys
  ``"metric,filter"`` (``"acc,none"``, ``"acc_stderr,none"``, ``"exact_match,strict-match"``),
  group scores under ``groups`` next to ``results``, ``n-samples``, ``model_name``, and a stderr
  of ``"N/A"`` where the harness could not compute one (read as unknown, NaN, with a note).

A metric may be named ``acc,none`` or ``acc``: a name without a filter means the one filter the
file has for that metric (refused, listing the choices, when it has several), and ``acc,none``
also matches the plain ``acc`` of 0.3 files and CSVs. ``ppl`` also matches lm-eval >= 0.4's
``perplexity`` (the same quantity, renamed). The model is named by ``pretrained=`` in
``model_args`` (a string or a mapping), else ``model_name``, else the file name (its folder's name
for lm-eval >= 0.4's ``results_<date>.json``); ``config.model_num_parameters`` gives the parameter
count when present. The test-set size is ``n-samples`` (``effective``) or ``sample_len`` when present,
the sum over a group's subtasks for a group; otherwise, for a proportion with a stderr, it is recovered from the
harness's sample standard error, :math:`\\mathrm{se}^2 = p(1-p)/(n-1)` (``mean_stderr`` with
``ddof=1``), as :math:`n = p(1-p)/\\mathrm{se}^2 + 1`; LAMBADA's 5153 examples come back exactly.
Requesting ``ppl`` also adds the derived ``p_target = exp(-log ppl) = 1/ppl``: the harness's LAMBADA
perplexity is :math:`\\exp(-\\overline{\\log p(\\text{target word})})`, so ``p_target`` is the
geometric-mean probability of the whole target word (one word, usually one or two tokens).

BIG-bench (``{"model": {"model_name", "total_params"}, "scores": [{"score_dict": {...},
"subtask_description", "number_of_shots"}]}``): every metric of ``score_dict`` except
``normalized_aggregate_score`` (an aggregate across metrics, not a metric); ``task`` selects
the ``subtask_description`` and ``shots`` the ``number_of_shots`` when a file holds several.

CSV with the header ``model,params,metric,score`` (optional ``stderr`` and ``n_test``
columns; ``params`` may be empty when the mapping gives it), one row per model and metric.

Rules shared by every reader: a model is read once (the same model twice, in one CSV or across
files, is refused naming both places); a value outside its metric's range (a proportion outside
[0, 1], a perplexity below 1, a log-likelihood above 0, ...) is refused naming the model, metric and
value, since it almost always means a wrong column or a percentage; a NaN score is refused the same
way; a negative stderr is refused; a CSV row with more fields than its header is refused naming the
line; files are read as UTF-8, with or without a BOM;
an empty input (an empty or header-only CSV, an empty JSON, a folder without result files) is
refused naming the file and what was expected.

Pythia parameter counts are the total counts of the Pythia suite (Biderman et al., ICML 2023,
arXiv 2304.01373, Table 1 and the EleutherAI/pythia README), deduplicated variants included.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metrics import METRICS, metric_spec

PYTHIA_PARAMS = {
    "70m": 70_426_624, "160m": 162_322_944, "410m": 405_334_016, "1b": 1_011_781_632,
    "1.4b": 1_414_647_808, "2.8b": 2_775_208_960, "6.9b": 6_857_302_016, "12b": 11_846_072_320,
}
_PYTHIA_NAME = re.compile(r"pythia(?:-v\d+(?:\.\d+)*)?-(\d+(?:\.\d+)?[mb])(?:-deduped)?(?![\w.])", re.IGNORECASE)
_DERIVED = {"p_target": "ppl"}
_BIGBENCH_SKIP = "normalized_aggregate_score"
# Top-level keys that lm-evaluation-harness writes from 0.4 on and 0.3 never wrote.
_LM_EVAL_04_KEYS = frozenset({"groups", "group_subtasks", "configs", "n-shot", "higher_is_better", "n-samples",
                              "lm_eval_version", "model_name", "model_name_sanitized"})
# Keys of an lm-eval >= 0.4 task entry that describe the task rather than hold a metric.
_LM_EVAL_FIELDS = frozenset({"alias", "name", "sample_len", "sample_count", "samples"})
# lm-eval >= 0.4 renamed LAMBADA's "ppl" to "perplexity"; both are exp(-mean log p(target)).
_RENAMED = {"ppl": "perplexity"}
_RENAMED_BACK = {new: old for old, new in _RENAMED.items()}
# The closed range of every known metric that is not a proportion (proportions are [0, 1]). BLEU,
# ROUGE and F1 are 0-100 in BIG-bench and some lm-eval tasks (SQuAD) and 0-1 in others, so only
# 100 bounds them; the Brier score is at most 2 (all mass on a wrong option) however it is averaged.
_INF = math.inf
_RANGES = {
    "ppl": (1.0, _INF), "perplexity": (1.0, _INF), "word_perplexity": (1.0, _INF), "byte_perplexity": (1.0, _INF),
    "bits_per_byte": (0.0, _INF), "token_edit_distance": (0.0, _INF),
    "brier": (0.0, 2.0), "calibration_multiple_choice_brier_score": (0.0, 2.0),
    "expected_calibration_error": (0.0, 1.0), "token_prob": (0.0, 1.0), "seq_prob": (0.0, 1.0),
    "p_target": (0.0, 1.0), "loglik": (-_INF, 0.0), "loglik_per_token": (-_INF, 0.0),
    "loglik_per_char": (-_INF, 0.0), "log_likelihood": (-_INF, 0.0),
    "f1": (0.0, 100.0), "bleu": (0.0, 100.0), "rouge1": (0.0, 100.0), "rouge2": (0.0, 100.0),
    "rougeLsum": (0.0, 100.0), "sequence_f1": (0.0, 100.0),
}


@dataclass
class ModelScores:
    """One model's scores on one task: ``values[metric]``, with ``stderr`` and ``n_test`` where known.

    ``format`` is the input format (``"lm-eval 0.3"``, ``"lm-eval >=0.4"``, ``"lm-eval 0.4.8"``,
    ``"BIG-bench"``, ``"CSV"``); ``keys[metric]`` the name the metric has in the file
    (``"acc,none"``); ``lines[metric]`` its CSV line; ``unknown_stderr`` the metrics whose stderr
    the file gives as ``"N/A"``.
    """

    model: str
    params: float
    values: dict
    stderr: dict
    n_test: float
    source: str
    format: str = ""
    keys: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)
    unknown_stderr: list = field(default_factory=list)


@dataclass
class Family:
    """A model family sorted by size: ``values[metric]`` is ``[n_models]``, as are ``stderr`` and ``n_test``.

    ``per_example[metric]`` (live runs) holds each model's per-example values; ``loss`` and
    ``target_length`` (per-token loss per model, mean target length in tokens) feed the power law.
    ``formats`` (one per model, like ``sources``) is the input format each model was read from and
    ``notes`` what the reader had to decide (formats, filters chosen, unknown stderrs).
    """

    task: str
    models: list
    params: np.ndarray
    values: dict
    stderr: dict
    n_test: np.ndarray
    sources: list
    per_example: dict = field(default_factory=dict)
    loss: np.ndarray | None = None
    target_length: np.ndarray | None = None
    target_lengths: list | None = None
    loss_note: str = ""
    formats: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def parse_count(text, name: str = "count") -> float:
    """A parameter count: ``70426624``, ``1.4e9``, ``410m``, ``1.4b``, ``12B`` (k, m, b, t suffixes)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kmbt]?)\s*", text.replace("_", ""), re.IGNORECASE)
        if not match:
            raise ValueError(f"{name} must be a number like 70426624, 1.4e9, 410m or 1.4b, got {text!r}")
        value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[match.group(2).lower()]
    else:
        raise TypeError(f"{name} must be a number or a str, got {type(text).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {text!r}")
    return value


def parse_params(items) -> dict:
    """``["name=count", ...]`` (the CLI's ``--params``) to ``{name: count}``."""
    mapping = {}
    for item in items or ():
        if not isinstance(item, str):
            raise TypeError(f"params entries must be 'name=count' strings, got {type(item).__name__}")
        name, sep, count = item.rpartition("=")
        if not sep or not name:
            raise ValueError(f"params entries must be 'name=count', got {item!r}")
        mapping[name] = parse_count(count, f"the count of {name!r}")
    return mapping


def pythia_params(name: str) -> float | None:
    """The total parameter count of a Pythia model named like ``EleutherAI/pythia-v1.1-1.4b-deduped``."""
    match = _PYTHIA_NAME.search(name)
    return float(PYTHIA_PARAMS[match.group(1).lower()]) if match and match.group(1).lower() in PYTHIA_PARAMS else None


def split_metrics(text: str, lower_is_better=(), higher_is_better=()) -> list:
    """Metric names from ``"acc,ppl"`` or ``"acc,none,exact_match,strict-match"``.

    Commas separate metrics, except that a piece which is not a known metric name
    (:data:`metrics.METRICS`, ``lower_is_better``, ``higher_is_better``) is the lm-evaluation-harness
    filter of the metric before it: ``"acc,none"`` is one metric, ``"acc,none,ppl"`` two.
    """
    if not isinstance(text, str):
        raise TypeError(f"metrics must be a str or a list of str, got {type(text).__name__}")
    known = set(METRICS) | set(lower_is_better) | set(higher_is_better)
    names = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if names and piece not in known:
            names[-1] += "," + piece
        else:
            names.append(piece)
    return names


def _number(value, path: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}: {key} must be a number, got {value!r}")
    return float(value)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


_JSON_EXPECTED = ("an lm-evaluation-harness results object (with 'results') or a BIG-bench results object "
                  "(with 'model' and 'scores')")


def _decode_error(path: Path, exc: UnicodeDecodeError) -> ValueError:
    # exc.start counts from the decoder's chunk, not the file, so only the byte is named
    return ValueError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} is not UTF-8); "
                      f"results files are read as UTF-8 (a BOM is allowed): save it as UTF-8")


def _load_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")     # -sig: editors on Windows write a BOM first
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    if not text.strip():
        raise ValueError(f"{path}: empty file; expected {_JSON_EXPECTED}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not data and isinstance(data, (dict, list)):
        raise ValueError(f"{path}: empty JSON {'object' if isinstance(data, dict) else 'array'}; expected "
                         f"{_JSON_EXPECTED}")
    return data


def _resolve(name: str, keys, where: str) -> str:
    """The key among ``keys`` (a file's metric names) that the requested metric ``name`` means.

    ``name`` itself when present; else, for ``metric`` without a filter, the one ``metric,<filter>``
    there is; for ``metric,filter``, also the plain ``metric`` (no filter is the ``none`` filter);
    ``ppl`` also matches lm-eval >= 0.4's ``perplexity``. Raises ValueError naming ``where`` and
    listing the keys when nothing or several keys match.
    """
    if name in keys:
        return name
    base, comma, wanted = name.partition(",")

    def matching(metric):
        found = []
        for key in keys:
            key_base, key_comma, key_filter = key.partition(",")
            if key_base == metric and (not comma or (key_filter if key_comma else "none") == wanted):
                found.append(key)
        return sorted(found)

    found = matching(base) or (matching(_RENAMED[base]) if base in _RENAMED else [])
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{where} reports metric {name!r} under several filters: {found}; name one of them "
                         f"(e.g. {found[0]!r})")
    filters = {key.partition(",")[2] for key in keys}
    hint = (f" ({wanted!r} after the comma is read as an lm-evaluation-harness filter because it is not a known "
            f"metric name; declare it to name a metric)" if comma and wanted not in filters else "")
    raise ValueError(f"{where} has no metric {name!r}; available: {sorted(keys)}{hint}")


def _stderr_key(key: str) -> str:
    """``acc`` -> ``acc_stderr`` (0.3); ``acc,none`` -> ``acc_stderr,none`` (>= 0.4)."""
    base, comma, filter_name = key.partition(",")
    return f"{base}_stderr,{filter_name}" if comma else f"{base}_stderr"


def lm_eval_format(data: dict) -> str:
    """The lm-evaluation-harness format of a results object: ``"lm-eval 0.3"`` (0.3 and earlier,
    keys ``acc`` / ``acc_stderr``), else ``"lm-eval <version>"`` when the file records
    ``lm_eval_version``, else ``"lm-eval >=0.4"`` (keys ``metric,filter``, ``groups``, ``n-samples``)."""
    sections = [data.get("results"), data.get("groups")]
    filtered = any("," in key for section in sections if isinstance(section, dict)
                   for entry in section.values() if isinstance(entry, dict) for key in entry)
    version = data.get("lm_eval_version")
    if isinstance(version, str) and version.strip():
        return f"lm-eval {version.strip()}"
    return "lm-eval >=0.4" if filtered or _LM_EVAL_04_KEYS & set(data) else "lm-eval 0.3"


def read_lm_eval(path, task: str, metrics) -> ModelScores:
    """One lm-evaluation-harness results file (any format): the ``metrics`` of ``task``, with their stderr.

    ``task`` is looked up under ``results``, then ``groups``. ``metrics`` are names like ``acc`` or
    ``acc,none`` (see the module docstring for how they match the file's keys); the result's
    ``values`` / ``stderr`` are keyed by them, ``keys`` gives the file's names. A stderr of ``"N/A"``
    or null is NaN. Raises ValueError naming the file and key for a missing task or metric, several
    filters of an unfiltered name, or a non-number.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ValueError(f"{path}: missing key 'results' (an lm-evaluation-harness file maps results -> task -> metric)")
    results = data["results"]
    groups = data.get("groups") if isinstance(data.get("groups"), dict) else {}
    if not results and not groups:
        raise ValueError(f"{path}: 'results' is empty; expected results -> task -> metric -> value")
    section = "results" if task in results else "groups" if task in groups else None
    if section is None:
        where = "'results' or 'groups'" if groups else "'results'"
        raise ValueError(f"{path}: no task {task!r} under {where}; tasks in the file: "
                         f"{sorted(set(results) | set(groups))[:40]}")
    entry = results[task] if section == "results" else groups[task]
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: {section}.{task} must map metric names to numbers, got {type(entry).__name__}")
    available = [k for k in entry if k not in _LM_EVAL_FIELDS and not k.partition(",")[0].endswith("_stderr")]
    record = ModelScores(_lm_eval_model_name(data, path), _lm_eval_params(data), {}, {}, math.nan, str(path),
                         lm_eval_format(data))
    for name in metrics:
        key = _resolve(name, available, f"{path}: {section}.{task}")
        record.keys[name] = key
        record.values[name] = _number(entry[key], str(path), f"{section}.{task}.{key}")
        se = entry.get(_stderr_key(key))
        if se == "N/A":
            record.unknown_stderr.append(name)
        record.stderr[name] = math.nan if se is None or se == "N/A" else _number(
            se, str(path), f"{section}.{task}.{_stderr_key(key)}")
    record.n_test = _lm_eval_n_test(data, task, entry)
    return record


def _lm_eval_n_test(data: dict, task: str, entry: dict) -> float:
    """The number of examples behind ``task``'s scores (NaN when the file does not tell)."""
    size = _lm_eval_size(data, task, set())
    if math.isfinite(size):
        return size
    if isinstance(data.get("group_subtasks"), dict) and data["group_subtasks"].get(task):
        return math.nan     # a group's pooled stderr is not p(1-p)/(n-1)
    return _n_from_stderr(entry)


def _lm_eval_size(data: dict, task: str, seen: set) -> float:
    """``n-samples[task].effective`` (else ``original``), or the sum over a group's subtasks, or NaN."""
    counts = data.get("n-samples")
    count = counts.get(task) if isinstance(counts, dict) else None
    if isinstance(count, dict):
        n = count.get("effective", count.get("original"))
        if _positive(n):
            return float(n)
    for section in ("results", "groups"):
        entry = data.get(section, {}).get(task) if isinstance(data.get(section), dict) else None
        if isinstance(entry, dict) and _positive(entry.get("sample_len")):
            return float(entry["sample_len"])
    subtasks = data.get("group_subtasks", {}).get(task) if isinstance(data.get("group_subtasks"), dict) else None
    if isinstance(subtasks, list) and subtasks and task not in seen:
        return float(sum(_lm_eval_size(data, sub, seen | {task}) for sub in subtasks))
    return math.nan


def _n_from_stderr(entry: dict) -> float:
    """Test-set size from a proportion and its harness stderr, n = p(1-p)/se^2 + 1 (first one found)."""
    for name in ("acc", "acc_norm", "em", "exact_match"):
        for key in sorted(k for k in entry if k == name or k.startswith(name + ",")):
            p, se = entry.get(key), entry.get(_stderr_key(key))
            if _positive(p) and p < 1 and _positive(se):
                return float(round(p * (1 - p) / se**2 + 1))
    return math.nan


def _lm_eval_model_name(data: dict, path: Path) -> str:
    config = data.get("config")
    args = config.get("model_args") if isinstance(config, dict) else None
    if isinstance(args, str):
        for part in args.split(","):
            key, _, value = part.partition("=")
            if key.strip() == "pretrained" and value.strip():
                return value.strip()
    elif isinstance(args, dict) and isinstance(args.get("pretrained"), str) and args["pretrained"].strip():
        return args["pretrained"].strip()
    if isinstance(data.get("model_name"), str) and data["model_name"].strip():
        return data["model_name"].strip()
    # lm-eval >= 0.4 writes <output_path>/<model name, sanitised>/results_<date>.json
    return path.parent.name if path.stem.startswith("results") and path.parent.name else path.stem


def _lm_eval_params(data: dict) -> float:
    config = data.get("config")
    count = config.get("model_num_parameters") if isinstance(config, dict) else None
    return float(count) if _positive(count) else math.nan


def read_bigbench(path, task: str | None, metrics, shots: int | None = None) -> ModelScores:
    """One BIG-bench results file: ``metrics`` from the ``score_dict`` of the selected entry."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a BIG-bench results file is a JSON object with 'model' and 'scores'")
    model = data.get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{path}: missing key 'model' (with model_name and total_params)")
    scores = data.get("scores")
    if not isinstance(scores, list) or not scores:
        raise ValueError(f"{path}: missing or empty key 'scores' (a list of score entries with score_dict)")
    for i, entry in enumerate(scores):
        if not isinstance(entry, dict) or not isinstance(entry.get("score_dict"), dict):
            raise ValueError(f"{path}: scores[{i}] has no 'score_dict' mapping")
    chosen = [e for e in scores if (task is None or e.get("subtask_description") == task)
              and (shots is None or e.get("number_of_shots") == shots)]
    if len(chosen) != 1:
        found = sorted({(str(e.get("subtask_description")), str(e.get("number_of_shots"))) for e in scores})
        what = "no" if not chosen else f"{len(chosen)}"
        raise ValueError(f"{path}: {what} score entries match task={task!r} shots={shots!r}; pass the task "
                         f"(subtask_description) and shots (number_of_shots) of one of {found}")
    score_dict = chosen[0]["score_dict"]
    available = [k for k in score_dict if k != _BIGBENCH_SKIP]
    name = model.get("model_name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: model.model_name must be a non-empty string, got {name!r}")
    params = model.get("total_params")
    params = parse_count(params, f"{path}: model.total_params") if params is not None else math.nan
    record = ModelScores(name, params, {}, {}, math.nan, str(path), "BIG-bench")
    for metric in metrics:
        key = _resolve(metric, available, f"{path}: score_dict")
        record.keys[metric] = key
        record.values[metric] = _number(score_dict[key], str(path), f"score_dict.{key}")
        record.stderr[metric] = math.nan
    return record


_CSV_EXPECTED = "a header model,params,metric,score (optional stderr, n_test) and one row per model and metric"


def read_csv(path, metrics) -> list:
    """A CSV with the header ``model,params,metric,score`` (optional ``stderr``, ``n_test``): one
    :class:`ModelScores` per model, in file order.

    Raises ValueError for an empty or header-only file, and for a model that has the same metric
    on two rows or two different ``params`` / ``n_test`` (naming both lines).
    """
    path = Path(path)
    try:
        return _read_csv(path, metrics)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None


def _read_csv(path: Path, metrics) -> list:
    with open(path, newline="", encoding="utf-8-sig") as f:     # -sig: Excel writes a BOM first
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if header is None:
            raise ValueError(f"{path}: empty file; expected {_CSV_EXPECTED}")
        missing = [c for c in ("model", "params", "metric", "score") if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the header must hold model,params,metric,score "
                             f"(got {header})")
        models: dict = {}
        given: dict = {}     # (model, column) -> (value, line) of params and n_test
        for row in reader:
            line = reader.line_num
            if None in row:     # DictReader keeps the fields beyond the header under None
                raise ValueError(f"{path}: line {line}: {len(header) + len(row[None])} fields but the header has "
                                 f"{len(header)} ({','.join(header)}); a comma inside a value must be quoted")
            name = (row["model"] or "").strip()
            if not name:
                raise ValueError(f"{path}: line {line}: empty 'model'")
            metric = (row["metric"] or "").strip()
            if not metric:
                raise ValueError(f"{path}: line {line}: empty 'metric'")
            entry = models.setdefault(name, ModelScores(name, math.nan, {}, {}, math.nan, str(path), "CSV"))
            if metric in entry.lines:
                raise ValueError(f"{path}: model {name!r} has metric {metric!r} twice, on lines {entry.lines[metric]} "
                                 f"and {line}; keep one row per model and metric")
            entry.lines[metric] = line
            for column in ("params", "n_test"):
                text = (row.get(column) or "").strip()
                if not text:
                    continue
                value = (parse_count(text, f"{path}: line {line}: params") if column == "params"
                         else _csv_number(text, path, line, "n_test"))
                if column == "n_test" and not value > 0:
                    raise ValueError(f"{path}: line {line}: 'n_test' must be a positive count, got {text!r}")
                before = given.setdefault((name, column), (value, line))
                if before[0] != value:
                    raise ValueError(f"{path}: model {name!r} has {column} {before[0]:g} on line {before[1]} but "
                                     f"{value:g} on line {line}; give one {column} per model")
                setattr(entry, column, value)
            entry.values[metric] = _csv_number(row["score"], path, line, "score")
            entry.stderr[metric] = _csv_number(row.get("stderr"), path, line, "stderr", optional=True)
    if not models:
        raise ValueError(f"{path}: no data rows under the header; expected {_CSV_EXPECTED}")
    out = []
    for entry in models.values():
        keys = {name: _resolve(name, list(entry.values), f"{path}: model {entry.model!r}") for name in metrics}
        entry.values = {name: entry.values[key] for name, key in keys.items()}
        entry.stderr = {name: entry.stderr[key] for name, key in keys.items()}
        entry.lines = {name: entry.lines[key] for name, key in keys.items()}
        entry.keys = keys
        out.append(entry)
    return out


def _csv_number(text, path, line, column, optional=False) -> float:
    if text is None or not text.strip():
        if optional:
            return math.nan
        raise ValueError(f"{path}: line {line}: empty '{column}'")
    try:
        return float(text)
    except ValueError as exc:
        raise ValueError(f"{path}: line {line}: '{column}' must be a number, got {text!r}") from exc


def detect_format(path) -> str:
    """``"lm_eval"``, ``"bigbench"`` or ``"csv"`` from the file's extension and top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist")
    if path.suffix.lower() == ".csv":
        return "csv"
    data = _load_json(path)
    if isinstance(data, dict) and "results" in data:
        return "lm_eval"
    if isinstance(data, dict) and "scores" in data and "model" in data:
        return "bigbench"
    keys = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{path}: not a recognised results file (lm-evaluation-harness JSON has 'results'; BIG-bench "
                     f"JSON has 'model' and 'scores'; CSV ends in .csv); top-level keys: {keys}")


def result_files(paths) -> list:
    """``paths`` with every folder replaced by the ``*.json`` and ``*.csv`` files in it and its
    subfolders (sorted; hidden ones left out), as lm-evaluation-harness ``--output_path`` writes them.

    Raises ValueError for a folder with no such file, and for a file given twice (directly or
    through a folder).
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".json", ".csv")
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise ValueError(f"{path}: a folder with no result files; expected lm-evaluation-harness output "
                                 f"(results*.json, in a folder per model from lm-eval 0.4 on), BIG-bench JSON or CSV "
                                 f"files in it or its subfolders")
            files += found
        else:
            files.append(path)
    seen = {}
    for path in files:
        first = seen.setdefault(path.resolve(), path)
        if first is not path:
            raise ValueError(f"{path} is given twice (directly or inside a folder); each result file is read once")
    return files


def load_family(paths, task: str | None, metrics, *, params=None, shots: int | None = None,
                lower_is_better=(), higher_is_better=()) -> Family:
    """Read result files and folders (one or more models each) into a :class:`Family` sorted by parameter count.

    ``metrics``: names to read, a list or a str split by :func:`split_metrics` (``"acc,ppl"``,
    ``"acc,none"``, ``"exact_match,strict-match"``); ``acc,none`` is reported as ``acc``.
    ``params``: ``{model name or file stem: count}`` overriding the files. ``task`` is the
    lm-evaluation-harness task (or group), or the BIG-bench subtask. Metric names must be known
    (:data:`metrics.METRICS`) or declared in ``lower_is_better`` / ``higher_is_better``.

    Raises ValueError naming the file (and CSV line) for: empty inputs, a model read twice, a
    value outside its metric's range or NaN, a negative stderr, a metric under different filters in
    different files, a model without a parameter count, a ``params`` name that matches no model or
    file stem. ``Family.notes`` says which counts ``params`` overrode and which came from the Pythia table.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths is empty: pass at least one results file or folder")
    names, reads = _metric_list(metrics, lower_is_better, higher_is_better)
    for name in names:
        metric_spec(name, lower_is_better, higher_is_better)
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params must be a dict {{model name: count}}, got {type(params).__name__}")
    params = {name: parse_count(count, f"params[{name!r}]") for name, count in (params or {}).items()}
    requests = list(reads.values())
    records = []
    for path in result_files(paths):
        kind = detect_format(path)
        if kind == "csv":
            records += read_csv(path, requests)
        else:
            if kind == "lm_eval" and not task:
                raise ValueError(f"{path}: an lm-evaluation-harness file needs task= (e.g. 'lambada_openai')")
            records.append(read_lm_eval(path, task, requests) if kind == "lm_eval"
                           else read_bigbench(path, task, requests, shots))
    seen = {}
    for record in records:
        if record.model in seen:
            raise ValueError(f"model {record.model!r} is read twice: from {_place(seen[record.model])} and from "
                             f"{_place(record)}; give each model once")
        seen[record.model] = record
    unmatched = sorted(set(params) - {r.model for r in records} - {Path(r.source).stem for r in records})
    if unmatched:
        raise ValueError(f"params: {unmatched} match no model; the models read are "
                         f"{sorted(r.model for r in records)} (a file's stem also names its model)")
    declared = set(lower_is_better) | set(higher_is_better)
    count_notes, from_table = [], []
    for record in records:
        record.values = {key: record.values[request] for key, request in reads.items()}
        record.stderr = {key: record.stderr[request] for key, request in reads.items()}
        record.keys = {key: record.keys[request] for key, request in reads.items()}
        record.lines = {key: record.lines[request] for key, request in reads.items() if request in record.lines}
        record.unknown_stderr = [key for key, request in reads.items() if request in record.unknown_stderr]
        override = params.get(record.model, params.get(Path(record.source).stem))
        if override is not None:
            if math.isfinite(record.params) and record.params != override:
                count_notes.append(f"params of {record.model} overridden: {override:g} from params (the file "
                                   f"{record.source} says {record.params:g})")
            record.params = override
        elif not math.isfinite(record.params):
            record.params = pythia_params(record.model) or math.nan
            if math.isfinite(record.params):
                from_table.append(f"{record.model} {record.params:.0f}")
        if not math.isfinite(record.params):
            raise ValueError(f"{record.source}: no parameter count for model {record.model!r}; pass "
                             f"--params {record.model}=COUNT (params={{name: count}})")
        for key in reads:
            _check_range(record, key, declared)
        _derive(record)
    if from_table:
        count_notes.append("params from the built-in Pythia table (the files have no counts): " + ", ".join(from_table))
    notes = _notes(records, reads) + count_notes
    records.sort(key=lambda r: r.params)
    return Family(task=task or "", models=[r.model for r in records],
                  params=np.array([r.params for r in records]),
                  values={m: np.array([r.values[m] for r in records]) for m in names},
                  stderr={m: np.array([r.stderr[m] for r in records]) for m in names},
                  n_test=np.array([r.n_test for r in records]), sources=[r.source for r in records],
                  formats=[r.format for r in records], notes=notes)


def _place(record: ModelScores, key: str | None = None) -> str:
    """Where a record (or one of its values) comes from: the file, with the CSV line(s)."""
    lines = sorted(set(record.lines.values())) if key is None else [record.lines[key]] if key in record.lines else []
    if not lines:
        return record.source
    return f"{record.source} line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}"


def _check_range(record: ModelScores, key: str, declared: set) -> None:
    """Refuse a value outside the closed range of its metric, and a negative stderr."""
    where = f"{_place(record, key)}: model {record.model!r}: {key}"
    if record.keys.get(key, key) != key:
        where += f" (read as {record.keys[key]!r})"
    if math.isnan(record.values[key]):
        raise ValueError(f"{where} is NaN; give a number, or leave the model or metric out")
    se = record.stderr[key]
    if se < 0:
        raise ValueError(f"{where}: stderr {se:g} is negative; a standard error is >= 0")
    base = key.partition(",")[0]
    if key in declared or base not in METRICS:
        return     # a metric the user defines has no range we know
    lo, hi = (0.0, 1.0) if METRICS[base].proportion else _RANGES.get(base, (-_INF, _INF))
    value = record.values[key]
    if lo <= value <= hi:
        return
    kind = "a proportion of examples" if METRICS[base].proportion else METRICS[base].description
    hint = (" (a percentage must be divided by 100)" if METRICS[base].proportion and 1 < value <= 100 else "")
    raise ValueError(f"{where} = {value:g} is outside [{lo:g}, {hi:g}], the range of {base} ({kind}); check that the "
                     f"file or column holds this metric{hint}")


def _notes(records: list, reads: dict) -> list:
    """What the reader decided, for the report: formats, names read for each metric, unknown stderrs."""
    formats = Counter(r.format for r in records)
    notes = ["input formats: " + ", ".join(f"{name} ({n} model{'s' if n > 1 else ''})" for name, n in formats.items())]
    lm_eval = sorted(name for name in formats if name.startswith("lm-eval"))
    if len(lm_eval) > 1:
        notes.append(f"the models come from different lm-evaluation-harness formats {lm_eval}: task definitions may "
                     f"differ between harness versions")
    for key, request in reads.items():
        meaning = {}
        for record in records:
            file_key = record.keys[key]
            base, comma, filter_name = file_key.partition(",")
            meaning.setdefault((_RENAMED_BACK.get(base, base), filter_name if comma else "none"), []).append(record)
        if len(meaning) > 1:
            seen = "; ".join(f"{group[0].keys[key]!r} in {group[0].source}" for group in meaning.values())
            raise ValueError(f"metric {request!r} is a different metric in different files ({seen}); name the "
                             f"filter, e.g. --metrics {next(iter(meaning.values()))[0].keys[key]}")
        file_keys = sorted({r.keys[key] for r in records} - {key, key + ",none"})
        if file_keys:
            notes.append(f"{key} read as {', '.join(map(repr, file_keys))} in the files")
        unknown = [r.model for r in records if key in r.unknown_stderr]
        if unknown:
            notes.append(f"{key}: stderr 'N/A' (unknown) in the file for {len(unknown)} of {len(records)} model(s) "
                         f"({', '.join(unknown)}): no interval for those points")
    return notes


def _metric_list(metrics, lower_is_better=(), higher_is_better=()):
    """(names to report, {name: what to read}): ``acc,none`` is reported as ``acc``; ``ppl`` brings
    its derived ``p_target`` and ``p_target`` reads ``ppl``."""
    if isinstance(metrics, str):
        metrics = split_metrics(metrics, lower_is_better, higher_is_better)
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty: name at least one metric")
    for m in metrics:
        if not isinstance(m, str):
            raise TypeError(f"metric names must be str, got {type(m).__name__}")
    names = [m.strip().removesuffix(",none") for m in metrics]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:     # acc,acc or acc and acc,none: the same metric twice
        raise ValueError(f"metrics name {repeated} more than once (got {metrics}); name each metric once")
    reads = {}
    for name, request in zip(names, metrics):
        if name not in _DERIVED:
            reads.setdefault(name, request.strip())
    for derived, source in _DERIVED.items():
        if source in names and derived not in names:
            names.append(derived)
        if derived in names:
            reads.setdefault(source, source)
    return list(dict.fromkeys(names)), reads


def _derive(record: ModelScores) -> None:
    """``p_target = 1/ppl`` with its delta-method stderr ``se(ppl) / ppl^2``."""
    ppl = record.values.get("ppl")
    if ppl is None:
        return
    if ppl <= 0:
        raise ValueError(f"{record.source}: ppl must be positive to derive p_target, got {ppl}")
    record.values["p_target"] = 1.0 / ppl
    record.stderr["p_target"] = record.stderr.get("ppl", math.nan) / ppl**2
