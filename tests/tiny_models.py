"""Tiny random transformers and ICL-like token data for the capture and emergence tests (no download)."""
from __future__ import annotations

import itertools

import pytest
import torch

VOCAB = 64
WIDTH = 32
N_LAYERS = 3


def tiny_model(kind: str, seed: int = 0, n_layers: int = N_LAYERS):
    """A randomly initialised ``kind`` model in eval mode: gpt2, llama, gpt_neox, opt or bert."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "gpt2":
        config = tf.GPT2Config(n_layer=n_layers, n_embd=WIDTH, n_head=2, vocab_size=VOCAB, n_positions=64,
                               bos_token_id=None, eos_token_id=None)
        model = tf.GPT2LMHeadModel(config)
    elif kind == "llama":
        config = tf.LlamaConfig(num_hidden_layers=n_layers, hidden_size=WIDTH, intermediate_size=64,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                max_position_embeddings=64)
        model = tf.LlamaForCausalLM(config)
    elif kind == "gpt_neox":
        config = tf.GPTNeoXConfig(num_hidden_layers=n_layers, hidden_size=WIDTH, intermediate_size=64,
                                  num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=64)
        model = tf.GPTNeoXForCausalLM(config)
    elif kind == "opt":
        config = tf.OPTConfig(num_hidden_layers=n_layers, hidden_size=WIDTH, ffn_dim=64, num_attention_heads=4,
                              vocab_size=VOCAB, max_position_embeddings=64, word_embed_proj_dim=WIDTH)
        model = tf.OPTForCausalLM(config)
    elif kind == "bert":
        config = tf.BertConfig(num_hidden_layers=n_layers, hidden_size=WIDTH, intermediate_size=64,
                               num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=64)
        model = tf.BertModel(config)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    return model.eval()


def final_norm(model):
    """The norm HF applies to the last entry of ``hidden_states``."""
    if hasattr(model, "transformer"):
        return model.transformer.ln_f
    return model.model.norm


SEPARATOR = 1


def icl_ids(n_samples: int, k_shots: int = 2, n_entities: int = 20, seed: int = 0) -> torch.Tensor:
    """``[N, 2k]`` ICL-like rows: distinct entity tokens (ids 10..) at even positions, ``SEPARATOR`` at odd ones."""
    generator = torch.Generator().manual_seed(seed)
    entities = torch.stack([torch.randperm(n_entities, generator=generator)[:k_shots] for _ in range(n_samples)]) + 10
    ids = torch.full((n_samples, 2 * k_shots), SEPARATOR, dtype=torch.long)
    ids[:, 0::2] = entities
    return ids


def all_draws(n_entities: int, k_shots: int, repeats: int = 1) -> torch.Tensor:
    """Every ordered draw of ``k`` of ``n`` entities, each ``repeats`` times, as ICL-like rows."""
    draws = torch.tensor(list(itertools.permutations(range(n_entities), k_shots)), dtype=torch.long) + 10
    draws = draws.repeat(repeats, 1)
    ids = torch.full((draws.shape[0], 2 * k_shots), SEPARATOR, dtype=torch.long)
    ids[:, 0::2] = draws
    return ids


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded machine OpenMP barriers make
    each of their many small ops wait for a descheduled thread (15x slower here): run on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_tokenizer(bos: bool):
    """A word-level fast tokenizer with ``<s>`` (id 2); it prepends it to every text when ``bos``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, ",": 1, "<s>": 2, "a": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", bos_token="<s>")
