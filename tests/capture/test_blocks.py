"""Block discovery per architecture, explicit blocks, and hook-point names."""
import pytest
import torch
from torch import nn

from emergence_fast.capture import BLOCK_PATHS, find_blocks, parse_hook_point
from tests.tiny_models import one_thread, tiny_model  # noqa: F401 (autouse fixture)


def _module_at(model, path):
    for part in path.split("."):
        model = getattr(model, part)
    return model


@pytest.mark.parametrize("kind, path", [
    ("gpt2", "transformer.h"),
    ("llama", "model.layers"),
    ("gpt_neox", "gpt_neox.layers"),
    ("opt", "model.decoder.layers"),
    ("bert", "encoder.layer"),
])
def test_find_blocks_per_architecture(kind, path):
    model = tiny_model(kind)
    expected = list(_module_at(model, path))
    found = find_blocks(model)
    assert len(found) == 3
    assert all(a is b for a, b in zip(found, expected))


def test_string_path_and_explicit_modules():
    model = tiny_model("gpt2")
    expected = list(model.transformer.h)
    by_path = find_blocks(model, "transformer.h")
    assert all(a is b for a, b in zip(by_path, expected)) and len(by_path) == 3
    subset = [model.transformer.h[2], model.transformer.h[0]]
    explicit = find_blocks(model, subset)
    assert explicit == subset and explicit is not subset
    from_modulelist = find_blocks(model, model.transformer.h)
    assert all(a is b for a, b in zip(from_modulelist, expected))


def test_string_path_is_used_alone():
    model = tiny_model("gpt2")
    with pytest.raises(ValueError) as info:
        find_blocks(model, "transformer.ln_f")  # exists, but is not a list of blocks
    assert "transformer.ln_f" in str(info.value)
    assert "model.layers" not in str(info.value)  # only the given path was tried
    with pytest.raises(ValueError, match="no.such.path"):
        find_blocks(model, "no.such.path")


@pytest.mark.parametrize("blocks", [[], [nn.Linear(2, 2), "not a module"], (torch.zeros(2),)])
def test_explicit_blocks_must_be_modules(blocks):
    with pytest.raises(ValueError, match="non-empty sequence of nn.Module"):
        find_blocks(nn.Linear(2, 2), blocks)


def test_model_without_blocks_lists_tried_paths_and_the_remedy():
    with pytest.raises(ValueError) as info:
        find_blocks(nn.Linear(4, 4))
    message = str(info.value)
    assert "Linear" in message
    for path in BLOCK_PATHS:
        assert repr(path) in message
    assert "blocks=" in message  # says how to pass them


def test_empty_module_list_is_not_blocks():
    model = nn.Module()
    model.layers = nn.ModuleList()
    with pytest.raises(ValueError, match="could not find"):
        find_blocks(model)


@pytest.mark.parametrize("name, expected", [
    ("blocks.3.hook_resid_pre", (3, "input")),
    ("blocks.3.hook_resid_post", (3, "output")),
    ("blocks.0.hook_resid_pre", (0, "input")),
    ("blocks.11.hook_resid_post", (11, "output")),
])
def test_parse_hook_point(name, expected):
    assert parse_hook_point(name, 12) == expected


@pytest.mark.parametrize("name", [
    "blocks.3.hook_resid_mid", "blocks.-1.hook_resid_pre", "blocks.x.hook_resid_pre", "block.3.hook_resid_pre",
    "blocks.3.hook_resid_pre.x", " blocks.3.hook_resid_pre", "blocks..hook_resid_pre", "hook_resid_pre", "",
])
def test_parse_hook_point_rejects_bad_names(name):
    with pytest.raises(ValueError, match="is not of the form"):
        parse_hook_point(name, 12)


def test_parse_hook_point_rejects_trailing_newline():
    with pytest.raises(ValueError):
        parse_hook_point("blocks.3.hook_resid_pre\n", 12)


@pytest.mark.parametrize("layer", [12, 13, 100])
def test_parse_hook_point_rejects_out_of_range(layer):
    with pytest.raises(ValueError, match=r"blocks 0\.\.11"):
        parse_hook_point(f"blocks.{layer}.hook_resid_pre", 12)
