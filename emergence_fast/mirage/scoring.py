r"""Score targets under a causal LM in one teacher-forced, batched pass.

For a prompt :math:`c` and a target of tokens :math:`y_1..y_L`, one forward pass over
:math:`c \Vert y` gives every per-token log-probability :math:`\log p(y_i \mid c, y_{<i})` and, at
the same positions, the greedy token :math:`\hat y_i = \arg\max_v p(v \mid c, y_{<i})`. Exact match
of the free-running greedy continuation equals "every :math:`\hat y_i = y_i`" (if the first
:math:`i-1` greedy tokens are the target's, the free-running prefix *is* the teacher-forced one),
so exact match, per-token probability, log-likelihood and the teacher-forced token edit distance
(a per-position substitution count, which is what the :math:`L(1-p)` model describes) all come from
this single pass. ``continuation="free_running"`` adds a batched greedy generation of
:math:`L` tokens, for the edit distance of what the model would actually write (after a first
mistake it continues from its own tokens).

Tokenisation: the prompt is encoded with the tokenizer's special prefix (e.g. BOS) exactly once,
even when the prompt text already starts with it (:func:`~emergence_fast.datasets.split_special_prefix`;
``ScoredTargets.special_prefix`` records what was done), and no special suffix; the target is
encoded alone without special tokens, so :math:`L` is the token count of the target string by
itself. Sequences of different lengths are padded by hand on the side ``padding_side`` names; the attention mask hides the padding and explicit position ids
:math:`\mathrm{cumsum}(\text{mask}) - 1` give every real token the position it has unpadded,
so left and right padding give the unbatched log-probabilities. Sequences are batched in order
of length to keep padding small, and results come back in the caller's order.

Under torch.distributed (``torchrun``, or a caller's process group) the batches are the units of
work: each rank scores a contiguous run of them and the per-batch results are gathered in batch
order, so every example is scored in the same batch, with the same padding, as by one process
(a batched CPU forward can differ in the last bits when a batch's rows change).
"""
from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import distributed
from .._validation import as_device, check_positive_int
from ..capture.blocks import is_encoder_decoder, vocab_size
from ..capture.hooks import padded_position_ids
from ..datasets import special_prefix, split_special_prefix
from ..estimators.token_entropy import token_entropy
from . import metrics as mm

CONTINUATIONS = ("teacher_forced", "free_running")
PADDING_SIDES = ("right", "left")


@dataclass
class ScoredTargets:
    """Per-example results of :func:`score_targets`, in the order of the prompts.

    ``target_ids[i]`` are the target's tokens, ``token_log_probs[i]`` their log-probabilities
    (float64, nats), ``greedy_ids[i]`` the greedy tokens at the target positions (teacher-forced
    or free-running, per ``continuation``), ``greedy_text[i]`` / ``target_text[i]`` both decoded.
    ``special_prefix``: the tokenizer's special prefix ids (``"ids"``, ``[]`` when it adds none)
    and how many prompts got it ``"added"`` or had it ``"already present"`` (not doubled).
    ``token_entropies[i]``: the entropy (float64, nats) of the model's next-token distribution at
    each of target ``i``'s positions, teacher-forced; its first entry is the entropy right after the prompt.
    """

    prompts: list
    targets: list
    target_ids: list
    token_log_probs: list
    greedy_ids: list
    greedy_text: list
    target_text: list
    continuation: str
    special_prefix: dict = field(default_factory=dict)
    token_entropies: list = field(default_factory=list)

    def target_lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.target_ids], dtype=np.float64)

    def per_token_loss(self) -> float:
        """Mean of -log p over every target token of every example (nats per token)."""
        return float(-np.concatenate(self.token_log_probs).mean())

    def metrics(self) -> dict:
        """Every metric of :data:`metrics.LIVE_METRICS`, one value per example."""
        lps = self.token_log_probs
        return {
            "exact_match": mm.exact_match(self.greedy_text, self.target_text),
            "exact_match_nocase": mm.exact_match(self.greedy_text, self.target_text, ignore_case=True),
            "token_edit_distance": mm.token_edit_distance(self.greedy_ids, self.target_ids),
            "loglik": mm.target_log_likelihood(lps, per="total"),
            "loglik_per_token": mm.target_log_likelihood(lps, per="token"),
            "loglik_per_char": mm.target_log_likelihood(lps, per="char", targets=self.targets),
            "token_prob": mm.per_token_probability(lps),
            "seq_prob": mm.sequence_probability(lps),
        }


@dataclass
class ChoiceScores:
    """Option log-probabilities of :func:`score_choices`: ``option_log_probs[i][k]`` is the total
    log-probability of option ``k`` after prompt ``i``; ``option_token_counts`` their lengths."""

    option_log_probs: list
    option_token_counts: list


def _check_strings(values, name: str) -> list:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a list of str, got a single {type(values).__name__}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(v).__name__}")
    return values


def _encode_prompt(tokenizer, text: str, prefix: list) -> tuple[list, str]:
    """The prompt with the special prefix (BOS) once, without any special suffix (EOS); and what was done."""
    content, status = split_special_prefix(list(tokenizer(text, add_special_tokens=False)["input_ids"]), prefix)
    return prefix + content, status


def _max_positions(model):
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0  # any id works: the attention mask hides it and no output is read there


def _batch(sequences, pad_id: int, side: str, device):
    """Padded ids, attention mask, position ids and each row's offset of its first real token."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    offsets = []
    for row, seq in enumerate(sequences):
        offset = width - len(seq) if side == "left" else 0
        ids[row, offset:offset + len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, offset:offset + len(seq)] = 1
        offsets.append(offset)
    positions = padded_position_ids(mask)
    return ids.to(device), mask.to(device), positions.to(device), offsets


def _forward_logits(model, ids, mask, positions, takes_positions: bool) -> torch.Tensor:
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if takes_positions:
        kwargs["position_ids"] = positions
    out = model(**kwargs)
    logits = getattr(out, "logits", None)
    if logits is None:
        raise TypeError(f"model must be a causal LM whose output has .logits, got {type(out).__name__}")
    return logits


def score_targets(model, tokenizer, prompts, targets, *, batch_size: int = 16, padding_side: str = "right",
                  continuation: str = "teacher_forced", device=None, world=None) -> ScoredTargets:
    """Per-token target log-probs and the greedy continuation of every (prompt, target) pair.

    ``model``: any Hugging Face causal LM (the embedded default included); ``tokenizer``: its
    tokenizer. ``batch_size`` sequences run per forward pass; ``padding_side`` is ``"right"``
    or ``"left"`` (the results agree); ``continuation`` is ``"teacher_forced"`` (one pass) or
    ``"free_running"`` (plus a greedy generation of each target's length). ``device`` defaults
    to the model's.

    ``world`` (an :class:`emergence_fast.distributed.World`; None: the current process group, if
    any) shares the batches out across ranks: every rank passes the same model and inputs, runs a
    contiguous run of the batches, and gets every example's result, identical to one process's
    (a batch holds the same examples whatever the number of ranks).
    """
    prompts = _check_strings(prompts, "prompts")
    targets = _check_strings(targets, "targets")
    if len(prompts) != len(targets):
        raise ValueError(f"prompts and targets must have the same length, got {len(prompts)} and {len(targets)}")
    batch_size = check_positive_int(batch_size, "batch_size")
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if continuation not in CONTINUATIONS:
        raise ValueError(f"continuation must be one of {CONTINUATIONS}, got {continuation!r}")
    if not callable(model) or not hasattr(model, "parameters"):
        raise TypeError(f"model must be a torch causal LM, got {type(model).__name__}")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    if world is not None and not isinstance(world, distributed.World):
        raise TypeError(f"world must be an emergence_fast.distributed.World or None, got {type(world).__name__}")
    if is_encoder_decoder(model):
        raise ValueError(f"model must be a causal LM: {type(model).__name__} is an encoder-decoder model (BART, T5), "
                         "whose next-token probabilities need a decoder input this scorer does not build")
    if device is None:
        device = next(model.parameters()).device
    else:
        from ..models import check_device

        device = as_device(device, "device")
        check_device(device, f"device={str(device)!r}")

    prefix = special_prefix(tokenizer)
    prompt_ids, statuses = zip(*(_encode_prompt(tokenizer, p, prefix) for p in prompts))
    target_ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets]
    limit, vocab = _max_positions(model), vocab_size(model)
    for i, (p, t) in enumerate(zip(prompt_ids, target_ids)):
        if not t:
            raise ValueError(f"targets[{i}] ({targets[i]!r}) encodes to no tokens")
        if not p:
            raise ValueError(f"prompts[{i}] encodes to no tokens and the tokenizer adds no BOS, so the first "
                             f"target token would have no context")
        for name, ids in ((f"prompts[{i}]", p), (f"targets[{i}]", t)):
            if vocab is not None and max(ids) >= vocab:
                raise ValueError(f"{name} encodes to the token id {max(ids)}, outside the model's vocabulary of {vocab} "
                                 f"ids (0..{vocab - 1}): is the tokenizer the model's?")
        if limit is not None and len(p) + len(t) > limit:
            raise ValueError(f"prompt + target {i} is {len(p) + len(t)} tokens, over the model's {limit} positions")

    pad_id = _pad_id(tokenizer)
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    order = sorted(range(len(prompts)), key=lambda i: -(len(prompt_ids[i]) + len(target_ids[i])))
    # The units of work: batches of the length order, which depends on the inputs and batch_size only.
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    world = world if world is not None else distributed.current()
    local = []
    with torch.inference_mode():
        for b in distributed.shard(len(batches), world):
            local.append(_score_batch(model, tokenizer, batches[b], prompt_ids, target_ids, pad_id, padding_side,
                                      continuation, takes_positions, device))
    results = distributed.gather_ordered(local, world)
    log_probs, greedy, entropies = [None] * len(prompts), [None] * len(prompts), [None] * len(prompts)
    for chunk, (chunk_log_probs, chunk_greedy, chunk_entropies) in zip(batches, results):
        for i, lp, g, h in zip(chunk, chunk_log_probs, chunk_greedy, chunk_entropies):
            log_probs[i], greedy[i], entropies[i] = lp, g, h
    return ScoredTargets(prompts, targets, target_ids, log_probs, greedy,
                         [tokenizer.decode(g, skip_special_tokens=False) for g in greedy],
                         [tokenizer.decode(t, skip_special_tokens=False) for t in target_ids], continuation,
                         {"ids": prefix, **Counter(statuses if prefix else ())}, entropies)


def _score_batch(model, tokenizer, chunk, prompt_ids, target_ids, pad_id, padding_side, continuation,
                 takes_positions, device):
    """One batch (the examples ``chunk``): per example, the target's token log-probs (float64
    numpy), the greedy tokens and the next-token entropies (float64 numpy, nats) at the target positions."""
    sequences = [prompt_ids[i] + target_ids[i] for i in chunk]
    ids, mask, positions, offsets = _batch(sequences, pad_id, padding_side, device)
    logits = _forward_logits(model, ids, mask, positions, takes_positions)
    rows, cols, wanted = [], [], []
    for row, (i, offset) in enumerate(zip(chunk, offsets)):
        first = offset + len(prompt_ids[i]) - 1  # the logits at position j predict token j + 1
        rows += [row] * len(target_ids[i])
        cols += range(first, first + len(target_ids[i]))
        wanted += target_ids[i]
    picked = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)].float()
    token_lp = torch.log_softmax(picked, dim=-1).gather(-1, torch.tensor(wanted, device=device)[:, None])[:, 0]
    token_lp = token_lp.double().cpu().numpy()
    entropy = token_entropy(picked).double().cpu().numpy()
    argmax = picked.argmax(-1).cpu().tolist()
    log_probs, greedy, entropies, at = [], [], [], 0
    for i in chunk:
        n = len(target_ids[i])
        log_probs.append(token_lp[at:at + n])
        greedy.append(argmax[at:at + n])
        entropies.append(entropy[at:at + n])
        at += n
    if continuation == "free_running":
        greedy = _generate(model, [prompt_ids[i] for i in chunk], [len(target_ids[i]) for i in chunk],
                           pad_id, tokenizer.eos_token_id, device)
    return log_probs, greedy, entropies


def _generate(model, prompts, lengths, pad_id, eos_id, device):
    """Greedy continuations of up to ``lengths[i]`` tokens, cut at the first EOS."""
    ids, mask, _, _ = _batch(prompts, pad_id, "left", device)  # generation appends on the right
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(lengths), min_new_tokens=0,
                         do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id)
    new = out[:, ids.shape[1]:].cpu().tolist()
    result = []
    for tokens, n in zip(new, lengths):
        tokens = tokens[:n]
        if eos_id is not None and eos_id in tokens:
            tokens = tokens[:tokens.index(eos_id)]
        result.append(tokens)
    return result


def score_choices(model, tokenizer, prompts, options, *, batch_size: int = 16,
                  padding_side: str = "right", device=None, world=None) -> ChoiceScores:
    """Total log-probability of every option after its prompt, all options of all prompts batched
    together in one :func:`score_targets` call. ``options[i]`` is the list of option strings of prompt ``i``;
    ``world`` as in :func:`score_targets`."""
    prompts = _check_strings(prompts, "prompts")
    if isinstance(options, (str, bytes)):
        raise TypeError("options must be a list of option lists, one per prompt")
    options = list(options)
    if len(options) != len(prompts):
        raise ValueError(f"prompts and options must have the same length, got {len(prompts)} and {len(options)}")
    flat_prompts, flat_options, owner = [], [], []
    for i, opts in enumerate(options):
        opts = _check_strings(opts, f"options[{i}]")
        if len(opts) < 2:
            raise ValueError(f"options[{i}] must hold at least 2 options, got {len(opts)}")
        flat_prompts += [prompts[i]] * len(opts)
        flat_options += opts
        owner += [i] * len(opts)
    scored = score_targets(model, tokenizer, flat_prompts, flat_options, batch_size=batch_size,
                           padding_side=padding_side, device=device, world=world)
    totals = np.array([lp.sum() for lp in scored.token_log_probs])
    counts = scored.target_lengths()
    owner = np.array(owner)
    return ChoiceScores([totals[owner == i] for i in range(len(prompts))],
                        [counts[owner == i] for i in range(len(prompts))])
