"""Behaviour across controlled changes (Holtzman, West & Zettlemoyer 2023, arXiv 2308.00189).

``run_sweep(models, tasks, values=...)`` measures every (model, task, axis value) cell once, each
model loaded once, finished units kept in ``out/units.jsonl`` so a killed sweep resumes; then
it fits every curve along the models and along each task's axis (transition location and width
with bootstrap CIs, smooth versus sigmoid), checks whether thresholded and continuous metrics
agree (Schaeffer et al. 2023) and times every curve against a reference one.
``emergence-fast sweep`` is the command line (:mod:`.cli`).
"""
from .analyse import SweepResult
from .grid import ModelSpec, checkpoint_step, parse_model
from .report import plot, summary_table, write_report
from .run import run_sweep
from .tasks import TASKS, Measurement, SweepMetric, Task

__all__ = [
           "TASKS",
           "Measurement",
           "ModelSpec",
           "SweepMetric",
           "SweepResult",
           "Task",
           "checkpoint_step",
           "parse_model",
           "plot",
           "run_sweep",
           "summary_table",
           "write_report",
]
