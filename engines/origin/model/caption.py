"""The model's own reading of the caption: learned word positions and a small transformer over the tokens.

The text encoder's tokens are what the cross-attention sees. The SHA-256 fallback gives every word
the same vector wherever it stands, so "a red circle, blue background" and "a blue circle, red
background" are the same *set* of tokens, and attention, which is blind to order, cannot tell which
colour belongs to which thing (measured in ``bench/bench_origin_learns.py``: the background colour
came out at chance). Learned positions and ``caption_layers`` pre-norm transformer layers over the
caption let each word hear its neighbours first ("blue" next to "background"), as a contextual
encoder's tokens already do; for those they cost little and change little.

An empty caption (classifier-free guidance's unconditional input, all tokens masked) stays empty:
zero tokens, still all masked.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from engines.origin.model.unet import Attention, FeedForward


def attend_mask(mask: Tensor) -> Tensor:
    """``mask`` with the first slot switched on in rows that have no words: attention over an empty
    row is NaN, so an empty caption attends to its first (zero-input) slot instead."""
    attend = mask.bool().clone()
    attend[~attend.any(dim=1), 0] = True
    return attend


class CaptionEncoder(nn.Module):
    """``(tokens [B, L, D], mask [B, L]) -> tokens [B, L, D]``; masked positions come out zero."""

    def __init__(self, dim: int, *, max_tokens: int, layers: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.position = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([nn.LayerNorm(dim), Attention(dim, heads=heads, dropout=dropout), nn.LayerNorm(dim),
                           FeedForward(dim, mult=2, dropout=dropout)])
            for _ in range(layers)
        )

    @classmethod
    def from_config(cls, config: Any) -> "Optional[CaptionEncoder]":
        """The caption layers a ``ModelConfig`` asks for over its context width, or None for 0 layers."""
        if config.caption_layers <= 0:
            return None
        return cls(config.context_dim, max_tokens=config.max_text_tokens, layers=config.caption_layers,
                   heads=config.attention_heads, dropout=config.dropout)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        keep = mask.bool()
        # An empty row's output is zeroed below like every masked slot.
        attend = attend_mask(keep)
        h = tokens + self.position[: tokens.shape[1]].to(tokens.dtype)
        for norm1, attention, norm2, feed_forward in self.layers:
            h = h + attention(norm1(h), mask=attend)
            h = h + feed_forward(norm2(h))
        return h * keep[..., None].to(h.dtype)
