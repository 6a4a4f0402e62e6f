"""Generated arithmetic tasks: format, answers, seeding."""
import re

import pytest

from emergence_fast.mirage.tasks import TASKS, arithmetic_task, question


def test_prompt_format_and_answers():
    ex = arithmetic_task("arithmetic-2d-mult", 50, seed=3)
    assert len(ex.prompts) == len(ex.targets) == 50
    pattern = re.compile(r"(?:\n\nQ: What is (\d+) times (\d+)\?\n\nA: (\d+)){2}\n\nQ: What is (\d+) times (\d+)\?\n\nA:")
    for prompt, target, (a, b) in zip(ex.prompts, ex.targets, ex.operands):
        match = pattern.fullmatch(prompt)
        assert match, prompt
        assert prompt.endswith(question(a, b, "times"))
        assert target == f" {a * b}" and 10 <= a <= 99 and 10 <= b <= 99
        for shot in re.finditer(r"What is (\d+) times (\d+)\?\n\nA: (\d+)", prompt):
            assert int(shot.group(1)) * int(shot.group(2)) == int(shot.group(3))
    assert ex.prompts[0].startswith("\n\nQ: What is ")


def test_four_digit_addition_and_seeding():
    ex = arithmetic_task("arithmetic-4d-add", 20, shots=0, seed=1)
    for prompt, target, (a, b) in zip(ex.prompts, ex.targets, ex.operands):
        assert prompt == f"\n\nQ: What is {a} plus {b}?\n\nA:" and target == f" {a + b}"
        assert 1000 <= a <= 9999 and 1000 <= b <= 9999
    assert arithmetic_task("arithmetic-4d-add", 20, seed=1).prompts == arithmetic_task(
        "arithmetic-4d-add", 20, seed=1).prompts
    assert arithmetic_task("arithmetic-4d-add", 20, seed=1).prompts != arithmetic_task(
        "arithmetic-4d-add", 20, seed=2).prompts


def test_bad_arguments():
    with pytest.raises(ValueError, match=re.escape(f"task must be one of {TASKS}")):
        arithmetic_task("arithmetic-3d-sub", 5)
    with pytest.raises(ValueError, match="n_examples"):
        arithmetic_task("arithmetic-2d-mult", 0)
    with pytest.raises(ValueError, match="shots"):
        arithmetic_task("arithmetic-2d-mult", 5, shots=-1)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_examples": 0}, ValueError, "n_examples must be an integer >= 1, got 0"),
    ({"n_examples": 2.0}, ValueError, "n_examples must be an integer >= 1, got 2.0"),
    ({"shots": -1}, ValueError, "shots must be an integer >= 0, got -1"),
    ({"seed": True}, TypeError, "seed must be an integer, got bool True"),
])
def test_bad_sizes_and_seed_give_the_standard_message(kwargs, error, message):
    with pytest.raises(error) as info:
        arithmetic_task("arithmetic-2d-mult", **{"n_examples": 5, **kwargs})
    assert str(info.value) == message
