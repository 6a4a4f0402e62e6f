r"""Token sequences for Information Emergence (IE; Chen, Yang, Zhu, Wang, "Quantifying (Semantic)
Emergence in Language Models", arXiv 2405.12617).

IE runs a causal LM on ``N`` sample sequences of one fixed length ``T`` and compares the mutual
information of hidden states at the sequence level with that at the token level. This module
makes those ``[N, T]`` token tensors, without padding, BOS or EOS (the metric adds a BOS when
the model needs one):

* ``icl-country``, ``icl-animal``, ``icl-color``: in-context-learning style lists, the paper's
  synthetic entity tasks. A sample is ``k`` shots of "entity," -- tokens
  ``[e_1, sep, e_2, sep, ..., e_k, sep]``, ``T = 2k`` -- where the entities are an ordered draw
  without repetition from the shipped list (``emergence_fast/data/*.txt``), kept only where the
  tokenizer writes ``" " + entity`` as exactly one token. Every entity carries the leading space,
  so one entity has one token id wherever it stands and a sample decodes to " dog, cat, ...".
* ``text:PATH``: spans of natural text, taken as the paper does: a span begins a sentence (right
  after a token ending in "." that whitespace follows, skipping whitespace-only tokens) and holds
  no token containing ``. : ? -`` or a line break, so each span lies inside one sentence.

:func:`prefix_entropy` is the exact plug-in entropy of the prefixes ``s_0..t`` over the samples:
for any injective map from prefixes to hidden states it equals the true MI between consecutive
hidden states, so it is the ceiling that an IE estimate can reach on a given data set.
:func:`icl_ceiling_bits` is its population value for the ICL data, ``log2 n!/(n-k)!``.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ._validation import check_int, check_positive_int, log_base
from .estimators.binned import plug_in_entropy

ICL_ENTITY_FILES = {"icl-country": "countries", "icl-animal": "animals", "icl-color": "colors"}
SEPARATOR = ","
TEXT_SUFFIXES = (".txt", ".jsonl")
# A span must stay inside one sentence: these mark sentence, clause or line boundaries.
REJECTED_SPAN_CHARS = (".", ":", "?", "-", "\n", "\r")


@dataclass
class TokenDataset:
    """``input_ids [N, T]`` (int64, no padding), the positions holding entities (``[]`` for text),
    and ``info``: how the data was made (entities kept and dropped, separator, seed, source...)."""

    input_ids: torch.LongTensor
    name: str
    entity_positions: list[int] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _tokenizer_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def _entity_resource(stem: str):
    return resources.files("emergence_fast") / "data" / f"{stem}.txt"


def entity_list(name: str) -> list[str]:
    """The shipped entities for ``name`` (``"icl-animal"`` or just ``"animals"``), file order."""
    stem = ICL_ENTITY_FILES.get(name, name)
    if stem not in ICL_ENTITY_FILES.values():
        valid = tuple(ICL_ENTITY_FILES) + tuple(ICL_ENTITY_FILES.values())
        raise ValueError(f"name must be one of {valid}, got {name!r}")
    text = _entity_resource(stem).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _special_tokens_added(tokenizer) -> dict:
    """What ``tokenizer(text)`` adds around the text by default, so the metric can decide on BOS."""
    plain = _encode(tokenizer, "x")
    full = list(tokenizer("x").input_ids)
    start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), 0)
    prefix, suffix = full[:start], full[start + len(plain):]
    return {"adds_bos": bool(prefix), "special_prefix_ids": prefix, "special_suffix_ids": suffix}


def special_prefix(tokenizer) -> list[int]:
    """The ids ``tokenizer(text)`` puts before every text by default (e.g. ``[BOS]``); ``[]`` when none."""
    return _special_tokens_added(tokenizer)["special_prefix_ids"]


def bos_token(tokenizer, add_bos="auto") -> int | None:
    """The BOS id to feed before every row under the ``add_bos`` policy, or None for no BOS.

    ``"auto"``: the tokenizer's ``bos_token_id`` when its :func:`special_prefix` starts with it
    (None without a tokenizer); ``True``: its ``bos_token_id``; ``False`` or ``None``: None; an
    int: that id. Raises ValueError for ``True`` when the tokenizer has no ``bos_token_id``, and
    for any other value of ``add_bos``.
    """
    if add_bos == "auto":
        bos = getattr(tokenizer, "bos_token_id", None)
        return bos if bos is not None and special_prefix(tokenizer)[:1] == [bos] else None
    if add_bos is True:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise ValueError("add_bos=True but the tokenizer has no bos_token_id")
        return bos
    if add_bos is False or add_bos is None:
        return None
    if isinstance(add_bos, int):
        return add_bos
    raise ValueError(f"add_bos must be 'auto', True, False or a token id, got {add_bos!r}")


# What split_special_prefix found; every caller records it (IE's config["bos_handling"], the
# mirage scores, the ICL runner's stats).
PREFIX_ADDED, PREFIX_PRESENT, PREFIX_ABSENT = "added", "already present", "absent"


def split_special_prefix(ids, prefix):
    """The one BOS rule: ``(content, status)`` such that ``prefix + content`` holds ``prefix`` exactly once.

    Parameters
    ----------
    ids : sequence of int, or integer tensor ``[N, T]``
        One token sequence, or rows that must all be treated alike.
    prefix : sequence of int
        The special prefix the model expects (e.g. ``[bos_token_id]``; ``[]`` for none).

    Returns
    -------
    (content, status)
        ``status`` is :data:`PREFIX_ABSENT` when ``prefix`` is empty (``content`` is ``ids``
        unchanged), :data:`PREFIX_PRESENT` when ``ids`` (every row) already starts with it
        (``content`` is ``ids`` without it, so prepending it again does not double it), else
        :data:`PREFIX_ADDED` (``content`` is ``ids``: the caller prepends ``prefix``).

    Raises
    ------
    ValueError
        Some rows of a tensor start with ``prefix`` and others do not (rows of one length must
        keep their positions aligned), or a row is nothing but the prefix.
    """
    prefix = [int(i) for i in prefix]
    if not prefix:
        return ids, PREFIX_ABSENT
    k = len(prefix)
    if isinstance(ids, torch.Tensor):
        starts = (ids[:, :k] == torch.tensor(prefix, dtype=ids.dtype, device=ids.device)).all(-1) \
            if ids.shape[1] >= k else torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        if not bool(starts.any()):
            return ids, PREFIX_ADDED
        if not bool(starts.all()):
            rows = torch.nonzero(starts).flatten().tolist()
            raise ValueError(f"rows {rows[:5]}{'...' if len(rows) > 5 else ''} of the {ids.shape[0]} token rows start "
                             f"with the special prefix {prefix} (BOS) and the others do not: remove it from those rows "
                             "or add it to every row")
        if ids.shape[1] == k:
            raise ValueError(f"the token rows hold only the special prefix {prefix} (BOS) and no other token")
        return ids[:, k:], PREFIX_PRESENT
    ids = list(ids)
    if ids[:k] == prefix:
        return ids[k:], PREFIX_PRESENT
    return ids, PREFIX_ADDED


def check_token_ids(ids: torch.Tensor, vocab_size: int | None, what: str, vocabulary: str = "the model's") -> None:
    """ValueError naming ``what``, the first offending id and where it is, if ``ids`` holds an id
    outside ``0 .. vocab_size - 1`` (``vocab_size`` None: only negative ids are refused)."""
    bad = ids < 0 if vocab_size is None else (ids < 0) | (ids >= vocab_size)
    if not bool(bad.any()):
        return
    where = [int(i) for i in torch.nonzero(bad)[0]]
    value = int(ids[tuple(where)])
    at = f"row {where[0]}, position {where[1]}" if len(where) == 2 else f"position {where[0]}"
    allowed = "ids must be >= 0" if vocab_size is None else \
        f"outside {vocabulary} vocabulary of {vocab_size} ids (0..{vocab_size - 1})"
    raise ValueError(f"{what} holds the token id {value} ({at}), {allowed}: were the ids made with another "
                     "tokenizer?")


def _single_token(tokenizer, text: str) -> int | None:
    """The id when ``text`` is exactly one real token; an unknown-token fallback is not one."""
    ids = _encode(tokenizer, text)
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(ids) != 1 or (unk is not None and ids[0] == unk):
        return None
    return ids[0]


def icl_dataset(name: str, tokenizer, n_samples: int, k_shots: int, seed: int = 0) -> TokenDataset:
    """``n_samples`` sequences ``[e_1, ",", ..., e_k, ","]`` (``T = 2 k_shots``), each an ordered
    draw of ``k_shots`` distinct one-token entities, uniform over all such draws, seeded."""
    if name not in ICL_ENTITY_FILES:
        raise ValueError(f"name must be one of {tuple(ICL_ENTITY_FILES)}, got {name!r}")
    n_samples = check_positive_int(n_samples, "n_samples")
    k_shots = check_positive_int(k_shots, "k_shots")

    sep_id = _single_token(tokenizer, SEPARATOR)
    if sep_id is None:
        raise ValueError(f"the separator {SEPARATOR!r} is not exactly one token for tokenizer "
                         f"{_tokenizer_name(tokenizer)!r}: it encodes as {_encode(tokenizer, SEPARATOR)}")

    kept, kept_ids, dropped = [], [], {}
    for entity in entity_list(name):
        token_id = _single_token(tokenizer, " " + entity)
        if token_id is None:
            dropped[entity] = "not one token"
        elif token_id == sep_id or token_id in kept_ids:
            # A normalising tokenizer can merge two entries; one id per entity keeps draws distinct.
            dropped[entity] = "same token as the separator or an earlier entry"
        else:
            kept.append(entity)
            kept_ids.append(token_id)
    if k_shots > len(kept):
        raise ValueError(f"k_shots={k_shots} exceeds the {len(kept)} entities of {name!r} that tokenizer "
                         f"{_tokenizer_name(tokenizer)!r} writes as one token; draws are without repetition")

    generator = torch.Generator().manual_seed(seed)
    # argsort of iid uniforms is a uniform random permutation per row; its first k columns are a
    # uniform ordered draw without repetition, for all rows in one call.
    order = torch.rand(n_samples, len(kept), generator=generator, dtype=torch.float64).argsort(dim=1)[:, :k_shots]
    input_ids = torch.full((n_samples, 2 * k_shots), sep_id, dtype=torch.long)
    input_ids[:, 0::2] = torch.tensor(kept_ids, dtype=torch.long)[order]

    source = _entity_resource(ICL_ENTITY_FILES[name])
    first = input_ids[0].tolist()
    info = {
        "entities_kept": kept,
        "entity_token_ids": kept_ids,
        "entities_dropped": dropped,
        "separator": SEPARATOR,
        "separator_id": sep_id,
        "entity_prefix": " ",
        "k_shots": k_shots,
        "n_samples": n_samples,
        "seed": seed,
        "source": str(source),
        "tokenizer": _tokenizer_name(tokenizer),
        # False means the model would read the sample differently from its own tokenization of the
        # decoded text (a merge across entity and separator), worth knowing before comparing models.
        "retokenizes_identically": _encode(tokenizer, tokenizer.decode(first)) == first,
        **_special_tokens_added(tokenizer),
    }
    return TokenDataset(input_ids, name, list(range(0, 2 * k_shots, 2)), info)


def read_documents(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"text data set not found: {path}")
    if path.suffix not in TEXT_SUFFIXES:
        raise ValueError(f"text data set must end with one of {TEXT_SUFFIXES}, got {path}")
    try:
        raw = path.read_bytes().decode("utf-8-sig")  # utf-8-sig: a BOM that editors on Windows write is dropped
    except UnicodeDecodeError as err:
        raise ValueError(f"text:{path} is not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start}): "
                         f"convert it, e.g. iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}") from None
    if path.suffix == ".txt":
        documents = [raw]
    else:
        documents = []
        for line_no, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{line_no}: each line must be a JSON object with a string field 'text'")
            documents.append(record["text"])
    documents = [doc for doc in documents if doc.strip()]
    if not documents:
        raise ValueError(f"text data set is empty: {path}")
    return documents


def _space_follows(tokenizer, period_id: int, next_id: int) -> bool:
    """Whether the text between a period token and the next token holds whitespace (decoded as a
    pair, since some decoders drop a token's leading space when it is decoded alone)."""
    head = tokenizer.decode([period_id])
    joint = tokenizer.decode([period_id, next_id])
    return head[-1:].isspace() or (joint.startswith(head) and joint[len(head):len(head) + 1].isspace())


def _valid_span_starts(ids: np.ndarray, ends_sentence: np.ndarray, blank: np.ndarray, rejected: np.ndarray,
                       seq_len: int, space_follows) -> np.ndarray:
    """Offsets in one document where a sentence begins and the next ``seq_len`` tokens hold no
    rejected character. ``space_follows(period_id, next_id)`` is memoised by the caller."""
    content = np.flatnonzero(~blank)
    periods = np.flatnonzero(ends_sentence)
    # Skip whitespace-only tokens (e.g. a paragraph break) so a span opens on the sentence's first word.
    next_content = np.searchsorted(content, periods + 1)
    has_next = next_content < len(content)
    periods, starts = periods[has_next], content[next_content[has_next]]
    # A period glued to the next word ("3.5", "x.size", "e.g.the") ends no sentence.
    spaced = np.array([bool(skipped) or space_follows(int(ids[p]), int(ids[s]))
                       for p, s, skipped in zip(periods, starts, starts > periods + 1)], dtype=bool)
    starts = starts[spaced]
    starts = np.unique(starts[starts + seq_len <= len(ids)])
    rejected_before = np.concatenate([[0], np.cumsum(rejected)])
    return starts[rejected_before[starts + seq_len] == rejected_before[starts]]


def text_dataset(path, tokenizer, n_samples: int, seq_len: int, seed: int = 0) -> TokenDataset:
    """``n_samples`` distinct spans of ``seq_len`` tokens from a ``.txt`` file (one document) or a
    ``.jsonl`` file (field ``"text"``, one document a line), each opening a sentence (after a period
    and whitespace) and holding none of ``. : ? -`` nor a line break; drawn without replacement,
    seeded. ``info["starts"]`` gives each span's (document, token offset)."""
    path = Path(path)
    n_samples = check_positive_int(n_samples, "n_samples")
    seq_len = check_positive_int(seq_len, "seq_len")
    documents = read_documents(path)

    # One batched call: a fast tokenizer encodes the documents in parallel.
    token_docs = [np.asarray(ids, dtype=np.int64)
                  for ids in tokenizer(documents, add_special_tokens=False, verbose=False).input_ids]
    longest = max(len(ids) for ids in token_docs)
    if longest < seq_len:
        raise ValueError(f"seq_len={seq_len} is longer than every document of {path} (longest: {longest} tokens)")

    # Decode each distinct id once; per-token flags are then gathers, not a Python loop over tokens.
    vocab_used, inverse = np.unique(np.concatenate(token_docs), return_inverse=True)
    texts = [tokenizer.decode([i]) for i in vocab_used.tolist()]
    ends_sentence = np.array([text.rstrip().endswith(".") for text in texts], dtype=bool)[inverse]
    blank = np.array([not text.strip() for text in texts], dtype=bool)[inverse]
    rejected = np.array([any(c in text for c in REJECTED_SPAN_CHARS) for text in texts], dtype=bool)[inverse]
    space_follows = functools.lru_cache(maxsize=None)(functools.partial(_space_follows, tokenizer))
    bounds = np.cumsum([0] + [len(ids) for ids in token_docs])
    candidates = []
    for d, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        starts = _valid_span_starts(token_docs[d], ends_sentence[lo:hi], blank[lo:hi], rejected[lo:hi], seq_len,
                                    space_follows)
        candidates += [(d, int(start)) for start in starts]
    if len(candidates) < n_samples:
        raise ValueError(f"n_samples={n_samples} spans requested but {path} has only {len(candidates)} valid spans "
                         f"of seq_len={seq_len} tokens (opening a sentence, with no . : ? - or line break)")

    generator = torch.Generator().manual_seed(seed)
    chosen = [candidates[i] for i in torch.randperm(len(candidates), generator=generator)[:n_samples].tolist()]
    input_ids = torch.from_numpy(np.stack([token_docs[d][s:s + seq_len] for d, s in chosen]))
    info = {
        "source": str(path),
        "n_documents": len(documents),
        "n_valid_spans": len(candidates),
        "starts": chosen,
        "rejected_chars": REJECTED_SPAN_CHARS,
        "seq_len": seq_len,
        "n_samples": n_samples,
        "seed": seed,
        "tokenizer": _tokenizer_name(tokenizer),
        **_special_tokens_added(tokenizer),
    }
    return TokenDataset(input_ids, f"text:{path}", [], info)


def load_dataset(spec: str, tokenizer, n_samples: int, *, k_shots: int = 8, seq_len: int = 8,
                 seed: int = 0) -> TokenDataset:
    """``spec`` is one of ``icl-country``, ``icl-animal``, ``icl-color`` (``k_shots`` shots),
    ``text:PATH`` (``seq_len`` tokens) or ``ids:PATH``: pre-tokenized ids, an integer ``[N', T]``
    tensor saved with ``torch.save`` (``.pt``) or numpy (``.npy``), of which the first ``n_samples``
    rows are used as they are, checked against ``len(tokenizer)`` (no BOS is added by the file;
    IE's ``add_bos`` still applies, and never doubles a BOS the rows already start with)."""
    if isinstance(spec, str) and spec.startswith("ids:") and len(spec) > len("ids:"):
        return ids_dataset(spec[len("ids:"):], n_samples, vocab_size=None if tokenizer is None else len(tokenizer))
    if spec in ICL_ENTITY_FILES:
        return icl_dataset(spec, tokenizer, n_samples, k_shots, seed=seed)
    if isinstance(spec, str) and spec.startswith("text:") and len(spec) > len("text:"):
        return text_dataset(spec[len("text:"):], tokenizer, n_samples, seq_len, seed=seed)
    raise ValueError(f"spec must be one of {tuple(ICL_ENTITY_FILES)}, 'text:PATH' (a .txt or .jsonl file) or "
                     "'ids:PATH' (a .pt or .npy integer tensor [N, T]), "
                     f"got {spec!r}")


def ids_dataset(path, n_samples: int, vocab_size: int | None = None) -> TokenDataset:
    """The first ``n_samples`` rows of a saved integer tensor ``[N, T]`` (``.pt`` or ``.npy``).

    Raises ValueError when the file is not such a tensor, has fewer rows, or its first
    ``n_samples`` rows hold an id below 0 or (given ``vocab_size``, e.g. ``len(tokenizer)``) at or
    above ``vocab_size``; the message names the id, its row and position.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dataset ids:{path} is not a file")
    try:
        ids = torch.from_numpy(np.load(path)) if path.suffix == ".npy" else torch.load(path, weights_only=True)
    except Exception as exc:
        # torch's own message advises weights_only=False, which would run code from an untrusted file.
        raise ValueError(f"dataset ids:{path} is not a tensor file saved with torch.save (.pt) or numpy (.npy) "
                         f"({type(exc).__name__} while reading it)") from exc
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"dataset ids:{path} must hold an integer tensor [N, T], got "
                         f"{type(ids).__name__ if not isinstance(ids, torch.Tensor) else (tuple(ids.shape), ids.dtype)}")
    if ids.shape[0] < n_samples:
        raise ValueError(f"n_samples={n_samples} but dataset ids:{path} has only {ids.shape[0]} rows")
    ids = ids[:n_samples].long()
    check_token_ids(ids, vocab_size, f"dataset ids:{path}", "the tokenizer's")
    return TokenDataset(ids, name=f"ids:{path.name}", info={"source": str(path)})


def _check_ids(input_ids) -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids must be an integer torch.Tensor [N, T], got {type(input_ids).__name__}")
    integer = not (input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool)
    if not integer or input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(f"input_ids must be a non-empty integer tensor [N, T], "
                         f"got shape {tuple(input_ids.shape)} and dtype {input_ids.dtype}")
    return input_ids


def prefix_entropy(input_ids, base=None) -> torch.Tensor:
    """``[T]`` float64: plug-in entropy of the empirical distribution of prefixes ``s_0..t`` over the
    ``N`` rows of ``input_ids [N, T]``, in nats (or units of ``base``)."""
    input_ids = _check_ids(input_ids)
    n, length = input_ids.shape
    # Prefix t+1 is distinct exactly when (code of prefix t, token t+1) is: two columns per unique.
    codes = torch.zeros(n, dtype=torch.long, device=input_ids.device)
    out = torch.empty(length, dtype=torch.float64)
    for t in range(length):
        pairs = torch.stack([codes, input_ids[:, t].long()], dim=1)
        _, codes, counts = torch.unique(pairs, dim=0, return_inverse=True, return_counts=True)
        out[t] = plug_in_entropy(counts)
    return out / log_base(base)


def token_entropy_per_position(input_ids, base=None) -> torch.Tensor:
    """``[T]`` float64: plug-in entropy of the token ``s_t`` alone at each position."""
    input_ids = _check_ids(input_ids)
    length = input_ids.shape[1]
    out = torch.stack([plug_in_entropy(torch.unique(input_ids[:, t], return_counts=True)[1]).cpu()
                       for t in range(length)])
    return out / log_base(base)


def icl_ceiling_bits(n_entities: int, k: int) -> float:
    """``log2(n!/(n-k)!)``: the entropy in bits of an ordered draw of ``k`` of ``n`` without repetition."""
    n_entities, k = check_int(n_entities, "n_entities", minimum=0), check_int(k, "k", minimum=0)
    if k > n_entities:
        raise ValueError(f"k={k} exceeds n_entities={n_entities}: a draw without repetition needs k <= n")
    return (math.lgamma(n_entities + 1) - math.lgamma(n_entities - k + 1)) / math.log(2)
