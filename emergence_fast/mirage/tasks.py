"""The arithmetic tasks Schaeffer et al. (NeurIPS 2023) re-analysed on GPT-3/InstructGPT, generated for any model.

BIG-bench ``arithmetic`` subtasks (Srivastava et al. 2022), in its few-shot question format:

* ``arithmetic-2d-mult``: 2-shot multiplication of two 2-digit numbers (10–99);
* ``arithmetic-4d-add``: 2-shot addition of two 4-digit numbers (1000–9999).

A prompt is the shots followed by the query, each ``"\\n\\nQ: What is {a} {op} {b}?\\n\\nA:"``, a
shot followed by ``" {answer}"``; the target is ``" {answer}"`` with its leading space, so the
answer's tokens are the ones a model writes after ``"A:"``. Operands are drawn uniformly with a
seeded ``numpy.random.Generator``; the shots of an example are drawn independently of its query.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_int, check_seed

_OPERATIONS = {
    "arithmetic-2d-mult": (2, "times", lambda a, b: a * b),
    "arithmetic-4d-add": (4, "plus", lambda a, b: a + b),
}
TASKS = tuple(_OPERATIONS)


@dataclass(frozen=True)
class TaskExamples:
    """Prompts and targets of a generated task, with the operands of each query."""

    task: str
    prompts: list
    targets: list
    operands: list
    shots: int
    seed: int


def question(a: int, b: int, op: str) -> str:
    return f"\n\nQ: What is {a} {op} {b}?\n\nA:"


def arithmetic_task(task: str, n_examples: int, *, shots: int = 2, seed: int = 0) -> TaskExamples:
    """``n_examples`` prompts of ``task`` (one of :data:`TASKS`) with ``shots`` solved examples each."""
    if task not in _OPERATIONS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    n_examples, shots = check_int(n_examples, "n_examples", minimum=1), check_int(shots, "shots", minimum=0)
    seed = check_seed(seed)
    digits, op, compute = _OPERATIONS[task]
    rng = np.random.default_rng(seed)
    draws = rng.integers(10 ** (digits - 1), 10**digits, size=(n_examples, shots + 1, 2))
    prompts, targets, operands = [], [], []
    for row in draws.tolist():
        context = "".join(question(a, b, op) + f" {compute(a, b)}" for a, b in row[:shots])
        a, b = row[shots]
        prompts.append(context + question(a, b, op))
        targets.append(f" {compute(a, b)}")
        operands.append((a, b))
    return TaskExamples(task, prompts, targets, operands, int(shots), int(seed))
