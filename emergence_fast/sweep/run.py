"""Run a sweep: every (model, task) unit once, each model loaded once, finished units kept on disk.

The grid is models (in the declared order) x tasks x each task's axis values. For each model the
units not yet in the store are evaluated on one load of the model; a model whose units are all
stored is not loaded at all. Under torch.distributed every rank walks the same grid, the tasks
share each unit's batches out across ranks (:mod:`emergence_fast.distributed`), and rank 0 alone
writes the store and the report.
"""
from __future__ import annotations

import gc
import hashlib
import json
import time
from pathlib import Path

from .. import distributed
from .._validation import check_int, check_probability, check_seed
from . import grid
from .analyse import SweepResult, _parse_reference, _x_of_models, analyse
from .store import UnitStore
from .tasks import AXES, Settings, get

GENERIC_TASKS = ("entity-animals", "induction")


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's vocabulary (token -> id): equal hashes, same tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:12]


def model_info(model, tokenizer) -> dict:
    from ..mirage.live import count_parameters

    config = getattr(model, "config", None)
    return {"params": count_parameters(model), "model_type": getattr(config, "model_type", None),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "tokenizer": tokenizer_fingerprint(tokenizer), "vocab": len(tokenizer)}


def _check_values(task, values) -> tuple:
    """The task's axis values as a tuple of ints (or ``("all",)`` for IE's blocks); ValueError naming ``values``."""
    if isinstance(values, (str, int)):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError(f"values[{task.name!r}]: the {task.axis} axis is empty; give at least one value")
    if task.axis == "block" and values == ["all"]:
        return ("all",)
    lowest = {"shots": 0 if task.name.startswith("arithmetic") else 1, "length": 2 if task.name == "induction" else 1,
              "block": 0}[task.axis]
    checked = [check_int(v, f"values[{task.name!r}]", minimum=lowest) for v in values]
    repeated = sorted({v for v in checked if checked.count(v) > 1})
    if repeated:
        raise ValueError(f"values[{task.name!r}]: {repeated} given more than once")
    return tuple(checked)


def plan(models, tasks=None, values=None, settings: Settings | None = None):
    """The grid: ``(specs, tasks, values, settings, family)`` with every default filled in.

    ``family`` is the shared ``emergence_fast.json`` task block when every model is a checkpoint of
    one ``make-family induction`` run, else None; its defaults are tasks ``induction`` and ``ie``,
    the family's repeat length, and IE on those sequences.
    """
    specs = grid.parse_models(models)
    infos = [grid.family_info(s) for s in specs]
    family = None
    if all(i is not None and i.get("family") == "induction" for i in infos):
        family = infos[0].get("task", {})
    settings = settings or Settings()
    if tasks is None:
        tasks = ("induction", "ie") if family else GENERIC_TASKS
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks: the list is empty; name at least one task")
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise ValueError(f"tasks: {repeated} named more than once")
    tasks = [get(t) for t in tasks]
    values = dict(values or {})
    unknown = sorted(set(values) - {t.name for t in tasks})
    if unknown:
        raise ValueError(f"values: {unknown} are not tasks of this sweep ({', '.join(t.name for t in tasks)})")
    resolved = {}
    for task in tasks:
        default = task.defaults
        if family and task.name == "induction":
            default = (int(family["half_length"]),)
        resolved[task.name] = _check_values(task, values.get(task.name, default))
    if family and settings.ie_dataset == Settings.ie_dataset:
        settings = Settings(**{**settings.__dict__, "ie_dataset": f"induction:{int(family['half_length'])}"})
    return specs, tasks, resolved, settings, family


def run_sweep(models, tasks=None, *, values=None, x: str = "auto", x_values=None, log_x=None, out=None,
              n_examples: int = 64, seed: int = 0, batch_size: int = 16, concepts=("01", "011"), depth: int = 3,
              ie_samples: int = 256, ie_dataset: str | None = None, ie_estimator: str | None = None,
              n_boot: int = 200, ci: float = 0.95, reference: str | None = None, metrics=None, loader=None, device=None,
              dtype=None, world=None, progress: bool = False) -> SweepResult:
    """Run ``tasks`` over ``models`` and return the :class:`~.analyse.SweepResult` (table, transitions, checks).

    Parameters
    ----------
    models : list of str
        Folders, ``.gguf`` files, cached Hugging Face ids (``id@revision`` for a revision) or
        ``"default"``, in the declared order (:func:`.grid.parse_model`).
    tasks : list of str, optional
        Names in :data:`.tasks.TASKS`. Default: ``induction`` and ``ie`` for the checkpoints of one
        ``make-family induction`` run, else ``entity-animals`` and ``induction``.
    values : dict, optional
        ``{task: axis values}`` (shots, lengths, or block indices / ``["all"]``); default each task's.
    x : str
        The models' x: ``"step"`` (training step, :func:`.grid.checkpoint_step`), ``"params"``,
        ``"index"`` (0, 1, ... in the declared order), ``"values"`` (``x_values``, one per model)
        or ``"auto"`` (step when every model has one, else params).
    log_x : bool, optional
        Fit transitions along models in log10 x (default: for params only).
    out : path, optional
        Folder for ``units.jsonl`` (resume) and, through :func:`.report.write_report`, the report.
    n_examples, seed, batch_size, concepts, depth, ie_samples, ie_dataset, ie_estimator
        What the tasks' examples depend on (:class:`.tasks.Settings`); ``ie_dataset`` is
        ``"induction:L"`` or a :func:`emergence_fast.datasets.load_dataset` spec.
    n_boot, ci : int, float
        Bootstrap replicates and level of every transition's confidence interval.
    reference : str, optional
        ``"task:metric"`` or ``"task:metric@value"``: the along-models curve every other is timed
        against (default: ``induction:in_context_loss`` when induction runs, else the first task's
        reference metric at its largest axis value; when ``metrics`` leaves that metric out, the first
        kept metric of the same task, else of the first task with one).
    metrics : list of str, optional
        Keep only these metrics in the table and the fits (default: every metric of every task);
        every name must belong to a task of the sweep, and a task with none of them is not run.
    loader : callable, optional
        ``loader(spec) -> (model, tokenizer)`` in place of :func:`emergence_fast.models.load_model`.

    Raises
    ------
    ValueError
        Naming the argument: unknown task or metric, empty axis, models named twice, a folder that
        holds no model, a model not in the local cache or an unknown revision (on load), x values
        that are missing, not finite or repeated, a reference that names no curve of the sweep, a
        setting the tasks read that cannot be right (seed < 0, a concept not of 0 and 1, an unknown
        IE estimator or dataset), ``ci`` outside (0, 1): all before any model is loaded. A unit the
        model cannot run (a length over its positions) is recorded, with a note, not raised.
    """
    settings = Settings(n_examples=check_int(n_examples, "n_examples", minimum=1),
                        seed=check_int(check_seed(seed), "seed", minimum=0),
                        batch_size=check_int(batch_size, "batch_size", minimum=1),
                        concepts=tuple(str(c) for c in ([concepts] if isinstance(concepts, str) else concepts)),
                        depth=check_int(depth, "depth", minimum=1), ie_samples=check_int(ie_samples, "ie_samples",
                                                                                          minimum=2),
                        ie_dataset=ie_dataset or Settings.ie_dataset, ie_estimator=ie_estimator)
    specs, tasks, values, settings, family = plan(models, tasks, values, settings)
    _check_settings(settings, tasks)
    metrics = _check_metrics(metrics, tasks)
    if metrics is not None:  # a task none of whose metrics is kept would be computed for nothing
        tasks = [t for t in tasks if set(t.metric_names) & set(metrics)]
        values = {t.name: values[t.name] for t in tasks}
    check_int(n_boot, "n_boot", minimum=0)
    check_probability(ci, "ci", low_open=True, high_open=True)
    if x not in ("auto", *grid.X_KINDS):
        raise ValueError(f"x must be one of {('auto', *grid.X_KINDS)}, got {x!r}")
    steps = [grid.checkpoint_step(s) for s in specs]
    if x == "auto":
        x = "step" if all(s is not None for s in steps) else "params"
    if x == "step" and any(s is None for s in steps):
        missing = [s.label for s, st in zip(specs, steps) if st is None]
        raise ValueError(f"x='step' needs every model's training step; none is recorded for {missing} "
                         f"(no emergence_fast.json or trainer_state.json, no stepN revision or folder name)")
    if x == "values":
        if x_values is None or len(list(x_values)) != len(specs):
            raise ValueError(f"x_values must give one number per model ({len(specs)}), got {x_values!r}")
    elif x_values is not None:
        raise ValueError(f"x_values is only read with x='values', got x={x!r}")
    # Checked again by analyse(); here too so that a typo is refused before hours of work, not after.
    by_name = {t.name: t for t in tasks}
    ref = _parse_reference(reference, by_name, values)
    if metrics is not None and ref is not None and ref[2] not in metrics:
        if reference is not None:
            raise ValueError(f"reference: {reference!r} names a metric that metrics leaves out "
                             f"(kept: {', '.join(metrics)})")
        # The default reference is filtered out: time against the reference task's first kept metric,
        # else the first kept metric of the first task that has one.
        task = next(t for t in [by_name[ref[0]], *tasks] if set(t.metric_names) & set(metrics))
        reference = f"{task.name}:{next(m for m in task.metric_names if m in metrics)}" + (
            f"@{ref[1]}" if task.name == ref[0] else "")
    if x != "params":  # parameter counts are known only once the models are loaded
        xs = _x_of_models(specs, [], x, steps, x_values)[0]
        if log_x and min(xs) <= 0:
            low = [s.label for s, v in zip(specs, xs) if v <= 0]
            raise ValueError(f"log_x needs every model's x ({x}) > 0; it is <= 0 for {low}")
    world = world if world is not None else distributed.current()
    store = UnitStore(out)
    store.units = distributed.broadcast_object(store.units, world)  # rank 0's view of the folder
    if loader is None:
        from .. import models as model_loading

        device = distributed.rank_device(device, world)

        def loader(spec):
            return model_loading.load_model(**spec.load_kwargs(), device=device, dtype=dtype)

    from tqdm.auto import tqdm

    weights = None if dtype is None else str(dtype).removeprefix("torch.")  # a float16 unit is not a float32 one

    def key(spec, task):
        return grid.unit_key(spec, task.name, values[task.name], settings.for_task(task), weights)

    units = [(spec, task) for spec in specs for task in tasks]
    bar = tqdm(total=len(units), desc="sweep", unit="unit", disable=not progress or not world.is_main)
    loads, evaluated = [], []
    try:
        for spec in specs:
            pending = [t for t in tasks if key(spec, t) not in store]
            bar.update(len(tasks) - len(pending))
            if not pending:
                continue
            from ..mirage.live import load_agreed

            bar.set_postfix_str(f"loading {spec.label}")
            model, tokenizer = load_agreed(lambda _, spec=spec: loader(spec), spec.label, world)
            loads.append(spec.label)
            info = model_info(model, tokenizer)
            for task in pending:
                bar.set_postfix_str(f"{spec.label}: {task.name}")
                record = _evaluate(spec, task, values[task.name], settings, model, tokenizer, info, world,
                                   key(spec, task))
                store.add(record, write=world.is_main)
                evaluated.append(record["key"])
                bar.update(1)
            del model, tokenizer
            gc.collect()
    finally:
        bar.close()
    records = [store.units[key(s, t)] for s in specs for t in tasks]
    return analyse(specs, tasks, values, settings, records, x=x, steps=steps, x_values=x_values, log_x=log_x,
                   n_boot=n_boot, ci=ci, reference=reference, family=family, loads=loads, metrics=metrics,
                   evaluated=evaluated)


def _check_settings(settings: Settings, tasks) -> None:
    """The settings the chosen tasks read, checked before any model loads: a typo found by the first
    unit would be recorded as 'not applicable' for every model. ValueError naming the argument."""
    from ..datasets import ICL_ENTITY_FILES
    from ..estimators import registry
    from ..icl.prompts import as_flips

    names = {t.name for t in tasks}
    if "binary-concepts" in names:
        if not settings.concepts:
            raise ValueError("concepts: the list is empty; name at least one concept such as '01'")
        for concept in settings.concepts:
            as_flips(concept, "concepts", allow_empty=False)
    if "ie" not in names:
        return
    if settings.ie_estimator is not None:
        registry.get(settings.ie_estimator, "ie", "ie_estimator")
    spec = settings.ie_dataset
    if spec.startswith("induction:"):
        length = spec[len("induction:"):]
        if not length.isdigit() or int(length) < 2:
            raise ValueError(f"ie_dataset: 'induction:L' needs an integer L >= 2, got {spec!r}")
    elif spec.startswith(("text:", "ids:")):
        path = spec.split(":", 1)[1]
        if not Path(path).is_file():
            raise ValueError(f"ie_dataset: {path!r} is not a file")
    elif spec not in ICL_ENTITY_FILES:
        raise ValueError(f"ie_dataset must be 'induction:L', one of {tuple(ICL_ENTITY_FILES)}, 'text:PATH' or "
                         f"'ids:PATH', got {spec!r}")


def _check_metrics(metrics, tasks) -> tuple | None:
    """``metrics`` as a tuple of names every one of which some task measures; ValueError naming ``metrics``."""
    if metrics is None:
        return None
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics: the list is empty; name at least one metric (or none for all)")
    known = {m for t in tasks for m in t.metric_names}
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"metrics: {unknown} are measured by no task of this sweep; known: {', '.join(sorted(known))}")
    return tuple(dict.fromkeys(metrics))


def _evaluate(spec, task, values, settings, model, tokenizer, info, world, key: str) -> dict:
    """One unit's record; a task that cannot run on this model (ValueError) is recorded as not applicable,
    and one that cannot run at some axis values (a length over the model's positions) as partial, with
    the values it can run at measured."""
    start = time.perf_counter()
    status, note, measured = "ok", "", {}
    try:
        measured = task.evaluate(model, tokenizer, values, settings, world)
    except ValueError as exc:
        status, note = "not applicable", str(exc)
        if len(values) > 1 and values != ("all",):  # every task measures each axis value on its own
            failed = []
            for value in values:
                try:
                    measured.update(task.evaluate(model, tokenizer, (value,), settings, world))
                except ValueError as one:
                    failed.append(f"{task.axis} {value} ({one})")
            if measured:
                status, note = "partial", "; ".join(failed)
    cells = {str(v): {m: [r.value, r.stderr, r.n] for m, r in row.items()} for v, row in measured.items()}
    return {"key": key, "model": spec.label,
            "model_key": spec.key, "task": task.name, "axis": task.axis, "axis_unit": AXES[task.axis],
            "values": list(values), "settings": settings.for_task(task), "status": status, "note": note,
            "cells": cells, "model_info": info, "seconds": time.perf_counter() - start}
