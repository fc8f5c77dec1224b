"""The mixture of named experts: a router, the experts (each run twice), a fusion head, auxiliary heads.

Every sample is described by one condition vector (time, caption, reference, current canvas;
built in ``network.py``). From it:

1. the **router** gives each expert a weight (softmax with a learnable temperature: each row sums
   to 1). All experts run for every sample (there are only 14 and they are small, so a dense
   mixture costs less than the bookkeeping of sparse dispatch); the weight decides how loudly each
   one speaks to the UNet;
2. the **experts** run twice with the same weights: first alone, on the condition and their own
   identity embedding; then again, after attending to what the *other* experts produced on their
   first run, so the light expert can adjust to the scene expert's layout;
3. the GNN (``gnn.py``) lets the expert states exchange information once more;
4. the **fusion head** turns the states into context tokens for the UNet: one routing-weighted
   summary token plus one token per expert, scaled by its routing weight;
5. the **auxiliary heads** give each expert a job: predict its target (``expert_targets.py``) of
   the clean image from its state. They train the experts' states, not the routing, so an expert
   keeps learning its job even while the router listens to it little.

The experts are batched as ``[E, in, out]`` weight tensors and run with one einsum each, instead of
14 small matmuls: the same maths, a fraction of the kernel launches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.origin.model.expert_targets import EXPERT_TARGETS, check_expert_names, compute_targets
from engines.origin.model.gnn import GraphAttention

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


class Router(nn.Module):
    """``condition [B, D] -> routing [B, E]``: softmax(logits / temperature), temperature learned."""

    def __init__(self, dim: int, num_experts: int, *, temperature: float = 1.0):
        super().__init__()
        if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
            raise ValueError(f"router_temperature {temperature} is outside "
                             f"[{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
        self.norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, num_experts)
        # Zero logits: every expert starts with the same weight, and the router learns whom to
        # trust as the experts' states become informative.
        nn.init.zeros_(self.to_logits.weight)
        nn.init.zeros_(self.to_logits.bias)
        # Learned in log space (always positive); clamped so it can neither collapse the
        # routing to one expert nor flatten it to uniform for good.
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.clamp(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)).exp()

    def forward(self, condition: Tensor) -> Tensor:
        logits = self.to_logits(self.norm(condition)).float()
        return torch.softmax(logits / self.temperature, dim=-1)


class Experts(nn.Module):
    """``condition [B, D] -> expert outputs [B, E, D]``; each expert an MLP, run alone then informed."""

    def __init__(self, dim: int, num_experts: int, *, heads: int, mult: int = 2, dropout: float = 0.0):
        super().__init__()
        hidden = dim * mult
        self.identity = nn.Parameter(torch.randn(num_experts, dim) * 0.02)  # what makes expert e itself
        self.norm = nn.LayerNorm(dim)
        self.w1 = nn.Parameter(torch.randn(num_experts, dim, hidden) / math.sqrt(dim))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden))
        self.w2 = nn.Parameter(torch.randn(num_experts, hidden, dim) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(num_experts, dim))
        self.dropout = nn.Dropout(dropout)
        self.listen_norm = nn.LayerNorm(dim)
        self.listen = GraphAttention(dim, heads=heads, exclude_self=True, dropout=dropout)

    def run(self, x: Tensor) -> Tensor:
        """Every expert's own MLP on its own row: ``[B, E, D] -> [B, E, D]``."""
        h = torch.einsum("bed,edh->beh", self.norm(x), self.w1) + self.b1
        return torch.einsum("beh,ehd->bed", self.dropout(F.gelu(h)), self.w2) + self.b2

    def forward(self, condition: Tensor) -> Tensor:
        base = condition[:, None, :] + self.identity
        alone = self.run(base)
        # Each expert hears only the others (a lone expert has no one to hear).
        heard = self.listen(self.listen_norm(alone)) if alone.shape[1] > 1 else torch.zeros_like(alone)
        informed = self.run(base + heard)
        return alone + informed


class FusionHead(nn.Module):
    """``states [B, E, D], routing [B, E] -> context tokens [B, 1 + E, context_dim]``."""

    def __init__(self, dim: int, context_dim: int, num_experts: int):
        super().__init__()
        self.num_experts = num_experts
        self.fuse = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * 2), nn.GELU(),
                                  nn.Linear(dim * 2, context_dim))
        self.to_tokens = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, context_dim))

    def forward(self, states: Tensor, routing: Tensor) -> Tensor:
        weights = routing.to(states.dtype)[..., None]
        fused = self.fuse((weights * states).sum(dim=1))
        # Scaled by E so that uniform routing leaves the tokens at unit scale; an expert the
        # router ignores fades out of the UNet's attention values.
        tokens = self.to_tokens(states) * (weights * self.num_experts)
        return torch.cat((fused[:, None], tokens), dim=1)


class ExpertHeads(nn.Module):
    """One small auxiliary head per expert, predicting that expert's target from its state."""

    def __init__(self, names: tuple[str, ...], dim: int):
        super().__init__()
        check_expert_names(names)
        self.names = tuple(names)
        self.heads = nn.ModuleDict({
            name: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(),
                                nn.Linear(dim, EXPERT_TARGETS[name].size))
            for name in self.names
        })

    def forward(self, states: Tensor) -> dict[str, Tensor]:
        return {name: self.heads[name](states[:, i]) for i, name in enumerate(self.names)}

    def losses(self, states: Tensor, clean: Tensor) -> dict[str, Tensor]:
        """``{expert: MSE(head(state), target(clean))}``, in float32."""
        targets = compute_targets(clean, self.names)
        predictions = self(states)
        return {name: F.mse_loss(predictions[name].float(), targets[name].to(predictions[name].device))
                for name in self.names}
