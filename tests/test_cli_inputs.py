"""The ie command on odd models and inputs: an encoder-decoder needs --stack, and bad folders or ids are one line."""
import json

import pytest
import torch

from emergence_fast import cli
from tests.icl.coin import coin_tokenizer
from tests.tiny_encoder_decoder import tiny_encoder_decoder
from tests.tiny_models import icl_ids, one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bart")
    tiny_encoder_decoder("bart").save_pretrained(folder)
    coin_tokenizer().save_pretrained(folder)
    torch.save(icl_ids(32, 2), folder / "ids.pt")
    return folder


def ie(folder, out, *extra, ids=None):
    return cli.main(["ie", "--model", str(folder), "--dataset", f"ids:{ids or folder / 'ids.pt'}", "--n-samples", "32",
                     "--batch-size", "8", "--quiet", "--out", str(out), *extra])


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("emergence-fast ie: error: "), err
    return err[len("emergence-fast ie: error: "):]


def test_an_encoder_decoder_without_stack_is_one_line_naming_the_flag(bart_dir, tmp_path, capsys):
    capsys.readouterr()
    assert ie(bart_dir, tmp_path / "out") == 2
    assert one_line_error(capsys) == (
        "BartForConditionalGeneration is an encoder-decoder model: choose the blocks to score with stack='encoder' or "
        "stack='decoder' (CLI: --stack encoder|decoder); one of ('encoder', 'decoder')")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stack, n_blocks", [("encoder", 2), ("decoder", 3)])
def test_stack_scores_the_chosen_blocks_and_records_it(bart_dir, tmp_path, stack, n_blocks):
    assert ie(bart_dir, tmp_path / "out", "--stack", stack) == 0
    result = json.loads((tmp_path / "out" / "ie.json").read_text())
    assert result["config"]["stack"] == stack and result["config"]["causal"] is False
    assert result["layers"] == list(range(n_blocks))
    assert any(note.startswith(f"stack: the {stack} blocks") for note in result["notes"])


def test_a_folder_that_is_not_a_model_is_one_line(tmp_path, capsys):
    folder = tmp_path / "not-a-model"
    coin_tokenizer().save_pretrained(folder)
    torch.save(icl_ids(32, 2), folder / "ids.pt")
    capsys.readouterr()
    assert ie(folder, tmp_path / "out") == 2
    assert one_line_error(capsys) == f"model {str(folder)!r} is not a model folder: no config.json or *.gguf file in it"


def test_ids_outside_the_vocabulary_are_one_line(bart_dir, tmp_path, capsys):
    ids = icl_ids(32, 2)
    ids[3, 1] = 999
    torch.save(ids, tmp_path / "ids.pt")
    capsys.readouterr()
    assert ie(bart_dir, tmp_path / "out", "--stack", "encoder", ids=tmp_path / "ids.pt") == 2
    # --dataset is read before the model loads, so the model's embedding (64 rows) is what catches it.
    assert one_line_error(capsys) == ("dataset ids:ids.pt holds the token id 999 (row 3, position 1), outside the "
                                      "model's vocabulary of 64 ids (0..63): were the ids made with another tokenizer?")
