"""Relational reasoning over the experts: each expert's output is a node of a fully connected graph.

A graph attention layer (Velickovic et al. 2018, in its transformer form) lets every node
gather messages from the others, weighted by learned relevance: the light expert can read what
the scene expert decided about the layout, the line-art expert what anatomy decided about the
pose. Layers are pre-norm with residuals, so a stack starts close to identity and stays stable.

``GraphAttention(exclude_self=True)`` is also what an expert uses on its second run in
``experts.py``: attention over the *other* experts' outputs only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GraphAttention(nn.Module):
    """Multi-head attention across nodes ``[B, N, D]``; ``exclude_self``: a node never attends to itself."""

    def __init__(self, dim: int, *, heads: int, exclude_self: bool = False, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"graph width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.exclude_self = exclude_self
        self.dropout = dropout
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, nodes: Tensor) -> Tensor:
        b, n, d = nodes.shape
        q, k, v = (t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for t in self.to_qkv(nodes).chunk(3, dim=-1))
        mask = None
        if self.exclude_self and n > 1:
            mask = ~torch.eye(n, dtype=torch.bool, device=nodes.device)  # True = may attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class GraphLayer(nn.Module):
    """Message passing (attention) then a per-node update (MLP), each pre-norm with a residual."""

    def __init__(self, dim: int, *, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GraphAttention(dim, heads=heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim * 2, dim))

    def forward(self, nodes: Tensor) -> Tensor:
        nodes = nodes + self.attn(self.norm1(nodes))
        return nodes + self.mlp(self.norm2(nodes))


class ExpertGraph(nn.Module):
    """``depth`` graph layers over the expert nodes, then a final norm: ``[B, E, D] -> [B, E, D]``."""

    def __init__(self, dim: int, *, depth: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList([GraphLayer(dim, heads=heads, dropout=dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, nodes: Tensor) -> Tensor:
        for layer in self.layers:
            nodes = layer(nodes)
        return self.norm(nodes)
