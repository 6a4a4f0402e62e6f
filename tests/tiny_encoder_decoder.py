"""Tiny random encoder-decoder models (BART, T5) for the stack tests (no download)."""
from __future__ import annotations

import torch

VOCAB = 64
WIDTH = 32
ENCODER_LAYERS = 2
DECODER_LAYERS = 3  # unlike the encoder's, so a test sees which stack was hooked


def tiny_encoder_decoder(kind: str, seed: int = 0):
    """A randomly initialised ``kind`` (``"bart"`` or ``"t5"``) ForConditionalGeneration model in eval mode."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "bart":
        config = tf.BartConfig(vocab_size=VOCAB, d_model=WIDTH, encoder_layers=ENCODER_LAYERS,
                               decoder_layers=DECODER_LAYERS, encoder_attention_heads=2, decoder_attention_heads=2,
                               encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
        return tf.BartForConditionalGeneration(config).eval()
    if kind == "t5":
        config = tf.T5Config(vocab_size=VOCAB, d_model=WIDTH, d_kv=8, d_ff=64, num_layers=ENCODER_LAYERS,
                             num_decoder_layers=DECODER_LAYERS, num_heads=2, decoder_start_token_id=0)
        return tf.T5ForConditionalGeneration(config).eval()
    raise ValueError(f"unknown tiny encoder-decoder kind {kind!r}")
