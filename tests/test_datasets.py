"""Data sets for Information Emergence, on tokenizers built in memory (no download)."""
import itertools
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from emergence_fast.datasets import (  # noqa: E402
    REJECTED_SPAN_CHARS,
    TokenDataset,
    entity_list,
    icl_ceiling_bits,
    icl_dataset,
    load_dataset,
    prefix_entropy,
    text_dataset,
    token_entropy_per_position,
)

ICL_NAMES = ("icl-country", "icl-animal", "icl-color")
SMOLLM2_DIR = Path.home() / ".cache" / "emergence_fast" / "smollm2-135m-instruct"

PROSE = (
    "The river ran past the old mill. A small boat drifted near the bank while children watched from the bridge. "
    "Nobody knew who owned it. The miller said it had come down with the spring flood, and he meant to keep it "
    "until someone asked.\n\nIn the autumn the boat was gone. Some said the miller sold it in town for 3.5 coins. "
    "Others thought the river took it back: rivers keep what they carry. Was it ever his? The children did not "
    "care much - they had a new dog by then. It followed them along the bank every single day of the winter.\n"
)


def _wrap(backend: Tokenizer, **special) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A GPT-2-style byte-level BPE trained on ICL lists and prose: most entities merge into one
    " entity" token; entities left out of the corpus and multi-word names stay several tokens."""
    corpus = [PROSE] * 5
    for name in ICL_NAMES:
        entities = entity_list(name)
        trained = entities[: len(entities) * 3 // 4]
        for _ in range(8):
            corpus += [" " + ", ".join(trained[i:i + 8]) + "," for i in range(0, len(trained), 8)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(corpus, trainer=trainer)
    return _wrap(backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def _word_level(words, with_comma=True, normalizer=None) -> PreTrainedTokenizerFast:
    """Whole words with their leading space; anything else is [UNK]."""
    vocab = {"[UNK]": 0, ".": 1, **({",": 2} if with_comma else {})}
    vocab.update({f" {w}": len(vocab) + i for i, w in enumerate(words)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z]+| ?[^A-Za-z\s]|\s+"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return _wrap(backend, unk_token="[UNK]")


@pytest.fixture(scope="module")
def five_colors():
    """Knows exactly five colours (everything else is [UNK]) and the separator."""
    return _word_level(["red", "green", "blue", "black", "white"])


# --- entity lists -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,stem,low,high,case", [("icl-country", "countries", 150, 200, str.istitle),
                                                      ("icl-animal", "animals", 130, 200, str.islower),
                                                      ("icl-color", "colors", 50, 80, str.islower)])
def test_entity_lists_are_clean(name, stem, low, high, case):
    entities = entity_list(name)
    assert low <= len(entities) <= high
    assert len(set(entities)) == len(entities)
    assert all(e and e == e.strip() and case(e) for e in entities)
    assert entity_list(stem) == entities


# --- ICL ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ICL_NAMES)
def test_icl_positions_hold_one_token_entities_and_separators(bpe_tokenizer, name):
    data = icl_dataset(name, bpe_tokenizer, n_samples=64, k_shots=6, seed=3)
    info = data.info
    assert isinstance(data, TokenDataset) and data.name == name
    assert data.input_ids.dtype == torch.long and data.input_ids.shape == (64, 12)
    assert data.entity_positions == [0, 2, 4, 6, 8, 10]
    assert set(info["entities_kept"]) | set(info["entities_dropped"]) == set(entity_list(name))
    assert info["entities_dropped"], "the fixture leaves a quarter of each list untrained"
    for entity, token_id in zip(info["entities_kept"], info["entity_token_ids"]):
        assert bpe_tokenizer.encode(" " + entity, add_special_tokens=False) == [token_id]
    for entity in info["entities_dropped"]:
        assert len(bpe_tokenizer.encode(" " + entity, add_special_tokens=False)) > 1
    assert bool((data.input_ids[:, 1::2] == info["separator_id"]).all())
    assert info["separator"] == "," and bpe_tokenizer.encode(",", add_special_tokens=False) == [info["separator_id"]]
    assert set(data.input_ids[:, 0::2].unique().tolist()) <= set(info["entity_token_ids"])
    assert info["adds_bos"] is False and info["retokenizes_identically"] is True
    assert info["seed"] == 3 and info["k_shots"] == 6 and info["source"].endswith(".txt")


def test_icl_draws_have_no_repetition_and_decode_as_lists(bpe_tokenizer):
    data = icl_dataset("icl-animal", bpe_tokenizer, n_samples=200, k_shots=10)
    entities = data.input_ids[:, data.entity_positions]
    assert all(len(set(row)) == len(row) for row in entities.tolist())
    text = bpe_tokenizer.decode(data.input_ids[0].tolist())
    assert re.fullmatch(r"( [a-z]+,){10}", text), text


def test_icl_seeded_determinism(bpe_tokenizer):
    a = icl_dataset("icl-color", bpe_tokenizer, 32, 4, seed=7).input_ids
    b = icl_dataset("icl-color", bpe_tokenizer, 32, 4, seed=7).input_ids
    c = icl_dataset("icl-color", bpe_tokenizer, 32, 4, seed=8).input_ids
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_icl_drops_unknown_words_and_draws_uniformly(five_colors):
    data = icl_dataset("icl-color", five_colors, n_samples=6000, k_shots=3, seed=0)
    assert data.info["entities_kept"] == ["red", "green", "blue", "black", "white"]  # file order
    assert len(data.info["entities_dropped"]) == len(entity_list("icl-color")) - 5
    counts = Counter(map(tuple, data.input_ids[:, 0::2].tolist()))
    assert len(counts) == 60 and 50 < min(counts.values()) and max(counts.values()) < 150
    assert five_colors.decode(data.input_ids[0].tolist()).count(",") == 3


def test_icl_entries_sharing_a_token_keep_the_first():
    spelling = _word_level(["red", "gray"], normalizer=normalizers.Replace("grey", "gray"))
    data = icl_dataset("icl-color", spelling, 4, 2)
    assert data.info["entities_kept"] == ["red", "gray"]
    assert data.info["entities_dropped"]["grey"] == "same token as the separator or an earlier entry"


def test_icl_errors(bpe_tokenizer, five_colors):
    with pytest.raises(ValueError, match=r"name must be one of .*icl-country.*icl-animal.*icl-color"):
        icl_dataset("icl-fruit", bpe_tokenizer, 4, 2)
    with pytest.raises(ValueError, match=r"k_shots=6 exceeds the 5 entities"):
        icl_dataset("icl-color", five_colors, 4, 6)
    with pytest.raises(ValueError, match="n_samples"):
        icl_dataset("icl-color", five_colors, 0, 2)
    with pytest.raises(ValueError, match="k_shots"):
        icl_dataset("icl-color", five_colors, 4, 0)
    no_comma = _word_level(["red", "blue"], with_comma=False)
    with pytest.raises(ValueError, match=r"separator ',' is not exactly one token for tokenizer"):
        icl_dataset("icl-color", no_comma, 4, 2)
    with pytest.raises(ValueError, match="name must be one of"):
        entity_list("fruits")


# --- entropy ceilings ----------------------------------------------------------------------------

def _all_ordered_draws(n=5, k=3, sep=99):
    rows = [[tok for e in perm for tok in (e, sep)] for perm in itertools.permutations(range(n), k)]
    return torch.tensor(rows)


def test_prefix_entropy_of_all_ordered_draws_is_log_permutations():
    ids = _all_ordered_draws()
    h = prefix_entropy(ids)
    assert h.dtype == torch.float64 and h.shape == (6,)
    for pos, value in zip((0, 2, 4), (5, 20, 60)):
        assert abs(float(h[pos]) - math.log(value)) < 1e-12
        assert float(h[pos + 1]) == float(h[pos])
    assert abs(float(prefix_entropy(ids, base=2)[4]) - math.log2(60)) < 1e-12
    assert abs(icl_ceiling_bits(5, 3) - math.log2(60)) < 1e-12
    tokens = token_entropy_per_position(ids)
    assert torch.allclose(tokens[0::2], torch.full((3,), math.log(5), dtype=torch.float64), atol=1e-12)
    assert bool((tokens[1::2] == 0).all())


def test_prefix_entropy_matches_counting_tuples():
    ids = torch.randint(0, 3, (500, 7), generator=torch.Generator().manual_seed(0))
    expected = []
    for t in range(7):
        counts = torch.tensor(list(Counter(map(tuple, ids[:, :t + 1].tolist())).values()), dtype=torch.float64)
        p = counts / 500
        expected.append(float(-(p * p.log()).sum()))
    assert torch.allclose(prefix_entropy(ids), torch.tensor(expected, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("name", ICL_NAMES)
def test_prefix_entropy_is_flat_at_separators(bpe_tokenizer, name):
    data = icl_dataset(name, bpe_tokenizer, 300, 5, seed=1)
    h = prefix_entropy(data.input_ids)
    assert torch.equal(h[1::2], h[0::2])
    assert bool((h[2::2] >= h[0:-2:2]).all()) and float(h[-1]) <= math.log(300) + 1e-12
    assert float(token_entropy_per_position(data.input_ids, base=2)[0]) <= math.log2(len(data.info["entities_kept"]))


def test_ceiling_and_entropy_errors():
    assert icl_ceiling_bits(7, 0) == 0.0
    assert abs(icl_ceiling_bits(150, 8) - sum(math.log2(150 - i) for i in range(8))) < 1e-9
    with pytest.raises(ValueError, match="k=4 exceeds n_entities=3"):
        icl_ceiling_bits(3, 4)
    with pytest.raises(ValueError, match="input_ids"):
        prefix_entropy(torch.rand(4, 3))
    with pytest.raises(ValueError, match="input_ids"):
        token_entropy_per_position(torch.arange(4))


# --- text ------------------------------------------------------------------------------------------

def _reference_starts(ids, decode, seq_len):
    """Brute force over every offset: the spec of a valid span, written independently."""
    texts = [decode([i]) for i in ids]
    starts = []
    for s in range(len(ids) - seq_len + 1):
        p = s - 1
        while p >= 0 and not texts[p].strip():
            p -= 1
        period = texts[p].rstrip() if p >= 0 else ""
        after_period = decode(ids[p:s + 1])[len(period):] if period.endswith(".") else ""
        opens_sentence = texts[s].strip() and after_period[:1].isspace()
        clean = not any(c in text for text in texts[s:s + seq_len] for c in REJECTED_SPAN_CHARS)
        if opens_sentence and clean:
            starts.append(s)
    return starts


@pytest.mark.parametrize("seq_len", [3, 5])
def test_text_spans_open_sentences_and_avoid_punctuation(tmp_path, bpe_tokenizer, seq_len):
    path = tmp_path / "prose.txt"
    path.write_text(PROSE, encoding="utf-8")
    ids = bpe_tokenizer.encode(PROSE, add_special_tokens=False)
    expected = _reference_starts(ids, bpe_tokenizer.decode, seq_len)
    data = text_dataset(path, bpe_tokenizer, n_samples=len(expected), seq_len=seq_len, seed=2)
    assert data.entity_positions == [] and data.name == f"text:{path}"
    assert data.input_ids.shape == (len(expected), seq_len)
    assert sorted(s for _, s in data.info["starts"]) == expected
    for row, (doc, start) in zip(data.input_ids.tolist(), data.info["starts"]):
        assert doc == 0 and row == ids[start:start + seq_len]
        for token in row:
            assert not any(c in bpe_tokenizer.decode([token]) for c in REJECTED_SPAN_CHARS)
    first_words = {bpe_tokenizer.decode(row[:1]).strip() for row in data.input_ids.tolist()}
    assert "In" in first_words  # after ".\n\n": the paragraph break is skipped
    assert "5" not in first_words  # "3.5": a period without whitespace after it ends no sentence


def test_text_jsonl_seeded_sampling_without_replacement(tmp_path, bpe_tokenizer):
    path = tmp_path / "docs.jsonl"
    docs = [PROSE[:200], PROSE[200:], "One sentence. Another short one here"]
    path.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)) + "\n\n", encoding="utf-8")
    full = text_dataset(path, bpe_tokenizer, n_samples=1, seq_len=3)
    n_valid = full.info["n_valid_spans"]
    assert full.info["n_documents"] == 3 and n_valid >= 6
    a = text_dataset(path, bpe_tokenizer, n_samples=n_valid, seq_len=3, seed=4)
    b = text_dataset(path, bpe_tokenizer, n_samples=n_valid, seq_len=3, seed=4)
    c = text_dataset(path, bpe_tokenizer, n_samples=n_valid, seq_len=3, seed=5)
    assert a.info["starts"] == b.info["starts"] and torch.equal(a.input_ids, b.input_ids)
    assert a.info["starts"] != c.info["starts"] and sorted(a.info["starts"]) == sorted(c.info["starts"])
    assert len(set(a.info["starts"])) == n_valid
    encoded = [bpe_tokenizer.encode(doc, add_special_tokens=False) for doc in docs]
    expected = {(d, s) for d, ids in enumerate(encoded) for s in _reference_starts(ids, bpe_tokenizer.decode, 3)}
    assert set(a.info["starts"]) == expected and any(d == 2 for d, _ in expected)
    with pytest.raises(ValueError, match=f"has only {n_valid} valid spans"):
        text_dataset(path, bpe_tokenizer, n_samples=n_valid + 1, seq_len=3)


def test_text_errors(tmp_path, bpe_tokenizer):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        text_dataset(missing, bpe_tokenizer, 2, 4)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        text_dataset(empty, bpe_tokenizer, 2, 4)
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text(json.dumps({"text": ""}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        text_dataset(empty_jsonl, bpe_tokenizer, 2, 4)
    short = tmp_path / "short.txt"
    short.write_text("A dog.", encoding="utf-8")
    with pytest.raises(ValueError, match=r"seq_len=50 is longer than every document"):
        text_dataset(short, bpe_tokenizer, 1, 50)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'text'"):
        text_dataset(bad, bpe_tokenizer, 1, 2)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"text": "A dog."}) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.jsonl:2: not valid JSON"):
        text_dataset(broken, bpe_tokenizer, 1, 2)
    other = tmp_path / "data.csv"
    other.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\.txt"):
        text_dataset(other, bpe_tokenizer, 1, 2)
    with pytest.raises(ValueError, match="seq_len"):
        text_dataset(short, bpe_tokenizer, 1, 0)


# --- load_dataset ---------------------------------------------------------------------------------

def test_load_dataset_dispatches(tmp_path, bpe_tokenizer):
    icl = load_dataset("icl-animal", bpe_tokenizer, 16, k_shots=3, seed=5)
    assert torch.equal(icl.input_ids, icl_dataset("icl-animal", bpe_tokenizer, 16, 3, seed=5).input_ids)
    path = tmp_path / "prose.txt"
    path.write_text(PROSE, encoding="utf-8")
    text = load_dataset(f"text:{path}", bpe_tokenizer, 4, seq_len=3, seed=1)
    assert torch.equal(text.input_ids, text_dataset(path, bpe_tokenizer, 4, 3, seed=1).input_ids)
    for spec in ("icl-fruit", "text:", "prose.txt", "wikitext"):
        with pytest.raises(ValueError, match=r"spec must be one of .*icl-country.*text:PATH"):
            load_dataset(spec, bpe_tokenizer, 4)


# --- the embedded model's tokenizer, when cached --------------------------------------------------

@pytest.mark.skipif(not SMOLLM2_DIR.is_dir(), reason=f"no cached SmolLM2 tokenizer at {SMOLLM2_DIR}")
def test_smollm2_icl_animal():
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(SMOLLM2_DIR), local_files_only=True)
    data = icl_dataset("icl-animal", tokenizer, 50, 6)
    kept = data.info["entities_kept"]
    assert len(kept) >= 30
    for row in data.input_ids.tolist():
        text = tokenizer.decode(row)
        words = re.fullmatch(r"((?: [a-z]+,){6})", text)
        assert words, text
        assert all(w in kept for w in text[1:-1].split(", "))


# ---- the one BOS rule, and ids outside the vocabulary ----------------------------------------------

from emergence_fast.datasets import (PREFIX_ABSENT, PREFIX_ADDED, PREFIX_PRESENT, bos_token,  # noqa: E402
                                     special_prefix, split_special_prefix)


@pytest.mark.parametrize("ids, prefix, content, status", [
    ([5, 6], [2], [5, 6], PREFIX_ADDED),
    ([2, 5, 6], [2], [5, 6], PREFIX_PRESENT),  # prefix + content holds the BOS once, not [2, 2, 5, 6]
    ([2, 2, 5], [2], [2, 5], PREFIX_PRESENT),  # only the one the caller would add again is taken off
    ([2, 5, 6], [], [2, 5, 6], PREFIX_ABSENT),
    ([7, 2, 5], [7, 2], [5], PREFIX_PRESENT),
    ([7, 5], [7, 2], [7, 5], PREFIX_ADDED),
    ([], [2], [], PREFIX_ADDED),
])
def test_split_special_prefix_on_one_sequence(ids, prefix, content, status):
    assert split_special_prefix(ids, prefix) == (content, status)


def test_split_special_prefix_on_rows():
    rows = torch.tensor([[2, 5, 6], [2, 7, 8]])
    content, status = split_special_prefix(rows, [2])
    assert status == PREFIX_PRESENT and torch.equal(content, rows[:, 1:])
    content, status = split_special_prefix(rows[:, 1:], [2])
    assert status == PREFIX_ADDED and torch.equal(content, rows[:, 1:])
    with pytest.raises(ValueError, match=r"rows \[1\] of the 2 token rows start with the special prefix \[2\] \(BOS\) "
                                         "and the others do not: remove it from those rows or add it to every row"):
        split_special_prefix(torch.tensor([[5, 6], [2, 6]]), [2])


def test_special_prefix_is_what_the_tokenizer_adds(bpe_tokenizer):
    from tests.tiny_models import tiny_tokenizer

    assert special_prefix(tiny_tokenizer(True)) == [2]
    assert special_prefix(tiny_tokenizer(False)) == []
    assert special_prefix(bpe_tokenizer) == []  # GPT-2 style: a bos_token it never adds


def test_bos_token_follows_the_add_bos_policy(bpe_tokenizer):
    from tests.tiny_models import tiny_tokenizer

    adds, never = tiny_tokenizer(True), tiny_tokenizer(False)
    assert bos_token(adds) == 2 and bos_token(never) is None and bos_token(None) is None  # "auto": what it adds
    assert bos_token(bpe_tokenizer) is None  # a bos_token_id the tokenizer does not put before a text
    assert bos_token(never, True) == 2 and bos_token(adds, False) is None and bos_token(adds, None) is None
    assert bos_token(None, 7) == 7
    with pytest.raises(ValueError, match=r"^add_bos=True but the tokenizer has no bos_token_id$"):
        bos_token(None, True)
    with pytest.raises(ValueError, match=r"^add_bos must be 'auto', True, False or a token id, got 'yes'$"):
        bos_token(adds, "yes")


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
@pytest.mark.parametrize("value", [1500, -3])
def test_ids_outside_the_tokenizer_vocabulary_are_named(tmp_path, bpe_tokenizer, suffix, value):
    ids = torch.randint(0, 100, (6, 5), generator=torch.Generator().manual_seed(0))
    ids[4, 2] = value
    path = tmp_path / f"ids{suffix}"
    if suffix == ".pt":
        torch.save(ids, path)
    else:
        import numpy as np

        np.save(path, ids.numpy())
    with pytest.raises(ValueError) as info:
        load_dataset(f"ids:{path}", bpe_tokenizer, 6)
    assert str(info.value) == (f"dataset ids:{path} holds the token id {value} (row 4, position 2), outside the "
                               f"tokenizer's vocabulary of {len(bpe_tokenizer)} ids (0..{len(bpe_tokenizer) - 1}): "
                               "were the ids made with another tokenizer?")
    # Only the rows used are checked: the first 4 are fine.
    assert load_dataset(f"ids:{path}", bpe_tokenizer, 4).input_ids.tolist() == ids[:4].tolist()


def test_non_utf8_text_is_named_with_the_byte_and_a_fix(tmp_path, bpe_tokenizer):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("A café. The dog ran.".encode("latin1"))
    with pytest.raises(ValueError) as info:
        text_dataset(latin1, bpe_tokenizer, 1, 2)
    assert str(info.value) == (f"text:{latin1} is not UTF-8 (byte 0xe9 at offset 5): convert it, e.g. iconv -f latin1 "
                               f"-t utf-8 {latin1} > latin1.utf8.txt")


def test_a_utf8_bom_is_not_part_of_the_text(tmp_path, bpe_tokenizer):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text(PROSE, encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + PROSE.encode("utf-8"))
    assert torch.equal(text_dataset(bom, bpe_tokenizer, 4, 4).input_ids,
                       text_dataset(plain, bpe_tokenizer, 4, 4).input_ids)


def test_an_ids_file_that_is_not_a_tensor_gets_our_message(tmp_path):
    """torch's own advice was to rerun torch.load with weights_only=False, which runs code from the file."""
    from emergence_fast.datasets import ids_dataset

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        ids_dataset(corpus, 1)
    assert str(info.value).startswith(f"dataset ids:{corpus} is not a tensor file saved with torch.save (.pt) or numpy "
                                      "(.npy) (")
    assert "weights_only" not in str(info.value)


def test_ceiling_arguments_give_the_standard_message():
    with pytest.raises(ValueError, match=r"^n_entities must be an integer >= 0, got 2\.0$"):
        icl_ceiling_bits(2.0, 1)
    with pytest.raises(ValueError, match=r"^k must be an integer >= 0, got True$"):
        icl_ceiling_bits(3, True)
