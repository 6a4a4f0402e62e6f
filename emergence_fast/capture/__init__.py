"""Capture: find a model's blocks and stream their inputs and outputs out of a forward pass."""
from .blocks import BLOCK_PATHS, find_blocks, input_device, model_identity, parse_hook_point
from .hooks import BlockCapture, real_positions

__all__ = ["BLOCK_PATHS", "BlockCapture", "find_blocks", "input_device", "model_identity", "parse_hook_point",
           "real_positions"]
