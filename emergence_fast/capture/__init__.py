"""Capture: find a model's blocks and stream their inputs and outputs out of a forward pass."""
from .blocks import (BLOCK_PATHS, STACKS, find_blocks, input_device, is_encoder_decoder, model_identity,
                     parse_hook_point, resolve_stack, vocab_size)
from .hooks import BlockCapture, real_positions

__all__ = ["BLOCK_PATHS", "STACKS", "BlockCapture", "find_blocks", "input_device", "is_encoder_decoder",
           "model_identity", "parse_hook_point", "real_positions", "resolve_stack", "vocab_size"]
