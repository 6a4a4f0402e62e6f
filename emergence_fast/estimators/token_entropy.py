r"""Per-position entropy of the next-token distribution, straight from logits.

.. math::

    H(\mathrm{softmax}(\ell)) = \log s - \frac{t}{s}, \qquad
    s = \sum_v e^{\ell_v - m}, \quad t = \sum_v e^{\ell_v - m}(\ell_v - m), \quad m = \max_v \ell_v

computed in one pass with an online max (the running state is rescaled when ``m`` grows,
as in online softmax: Milakov & Gimelshein 2018, arXiv 1805.02867), so the probabilities
are never materialised and vocabularies of 256k cost one read of the logits.
"""
from __future__ import annotations

import math

import torch

from ..ops.softmax_entropy import softmax_entropy
from .._validation import log_base


def token_entropy(logits, *, base=None, backend=None) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` over the last dim: ``[..., V] -> [...]``, in nats unless ``base``.

    ``-inf`` logits are masked-out tokens with zero probability. float64 logits give float64
    entropies; float16 / bfloat16 / float32 give float32 (accumulated in float32 or better).
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor of shape [..., V], got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must have a floating dtype, got {logits.dtype}")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., V] with V >= 1, got {tuple(logits.shape)}")
    if bool((torch.isnan(logits) | (logits == math.inf)).any()):
        raise ValueError("logits contains NaN or +Inf (-Inf is allowed: it masks a token)")
    if bool((logits == -math.inf).all(dim=-1).any()):
        raise ValueError("logits has a row where every entry is -Inf: the softmax is undefined there")
    unit = log_base(base)
    return softmax_entropy(logits, backend=backend) / unit
