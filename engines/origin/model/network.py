"""OriginModel: the conditioning path (text, reference, experts, GNN) feeding a pixel-space UNet.

    text_tokens ── text ──── text context, text summary ──┐
    reference ──── vision ── reference tokens (or null) ──┤
    x_t ────────── canvas ── canvas tokens ───────────────┤
    timesteps ──── time ──── time embedding ──────────────┴── condition
    condition ── router ── routing [B, E]
    condition ── experts (alone, then informed) ── gnn ── expert states [B, E, D]
    expert states, routing, reference, text ── fusion ── context tokens and mask
    x_t, timesteps, context ── UNet ── epsilon or v

Each named step is a stage of a ``DataFlow`` declared in ``__init__``: a new conditioning input
(a pose sketch, a second reference) is one more ``self.flow.register(...)`` and one more consumer.

The experts read the noisy canvas as well as the caption because their auxiliary targets (edges,
palette, light, layout of the clean image) are what a denoiser needs to know and what the caption
alone cannot say; their tokens then carry that knowledge into every cross-attention layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from engines.origin.model.caption import CaptionEncoder
from engines.origin.model.config import ARCHITECTURES, PREDICTION_TYPES, SPACES, ModelConfig
from engines.origin.model.dataflow import DataFlow
from engines.origin.model.experts import ExpertHeads, Experts, FusionHead, Router
from engines.origin.model.gnn import ExpertGraph
from engines.origin.model.schedule import check_schedule
from engines.origin.model.unet import SinusoidalPosEmb, UNet
from engines.origin.model.vision_encoder import EMBEDDINGS, VisionEncoder

CANVAS_SIZE = 32  # the experts see the noisy image at this size: enough for layout and palette


@dataclass
class OriginOutput:
    sample: Tensor  # predicted epsilon or v (config.prediction_type), same shape as x_t
    routing: Tensor  # [B, E] routing weights, each row sums to 1
    expert_states: Tensor  # [B, E, expert_dim] fused expert outputs (after GNN)


def check_model_config(config: ModelConfig) -> None:
    """Every size that would only fail deep inside a forward pass, as one ValueError sentence."""
    levels = len(config.channel_mult)
    if config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {config.prediction_type!r} must be one of "
                         f"{', '.join(PREDICTION_TYPES)}")
    check_schedule(config.noise_schedule, config.prediction_type)
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {config.architecture!r} must be one of {', '.join(ARCHITECTURES)}")
    if config.space not in SPACES:
        raise ValueError(f"space {config.space!r} must be one of {', '.join(SPACES)}")
    if config.latent_factor < 1 or config.resolution % config.latent_factor:
        raise ValueError(f"resolution {config.resolution} must be a multiple of the latent factor "
                         f"{config.latent_factor}")
    if levels < 1 or config.sample_size % 2 ** (levels - 1):
        raise ValueError(f"resolution {config.resolution} must be a multiple of "
                         f"{config.latent_factor * 2 ** (levels - 1)} for {levels} UNet levels")
    bad_levels = [lv for lv in config.attention_levels if not 0 <= lv < levels]
    if bad_levels:
        raise ValueError(f"attention level {bad_levels[0]} does not exist; levels are 0..{levels - 1}")
    widths = [("UNet width", config.base_channels * config.channel_mult[lv], config.attention_heads)
              for lv in (*config.attention_levels, levels - 1)]
    for name, width, heads in [*widths, ("expert_dim", config.expert_dim, config.gnn_heads)]:
        if width % heads:
            raise ValueError(f"{name} {width} is not divisible by {heads} heads")
    if not config.expert_names:
        raise ValueError("the model needs at least one expert")
    if config.caption_layers < 0 or (config.caption_layers and config.context_dim % config.attention_heads):
        raise ValueError(f"caption_layers {config.caption_layers} must be 0 or more, over a context_dim "
                         f"{config.context_dim} divisible by {config.attention_heads} heads")


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    weights = mask.to(tokens.dtype)[..., None]
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class OriginModel(nn.Module):
    """``forward(x_t, timesteps, text_tokens, text_mask=None, reference=None) -> OriginOutput``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        check_model_config(config)
        self.config = config
        d, c, v, e = config.expert_dim, config.context_dim, config.vision_dim, config.num_experts

        self.time_embed = nn.Sequential(SinusoidalPosEmb(d), nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.text_proj = nn.Linear(config.text_dim, c)
        self.caption = CaptionEncoder.from_config(config)
        # In latent space both encoders read latents (the reference is encoded by the same VAE).
        self.reference_encoder = VisionEncoder(vision_dim=v, in_channels=config.in_channels)
        # "No reference" is a point the model learns, not zeros it must treat as an image.
        self.null_reference = nn.Parameter(torch.zeros(len(EMBEDDINGS), v))
        self.reference_proj = nn.Linear(v, c)
        self.canvas_encoder = VisionEncoder(vision_dim=v, in_channels=config.in_channels, size=CANVAS_SIZE)
        self.to_condition = nn.Sequential(nn.Linear(d + c + 6 * v, d * 2), nn.SiLU(), nn.Linear(d * 2, d))
        self.router = Router(d, e, temperature=config.router_temperature)
        self.experts = Experts(d, e, heads=config.gnn_heads, dropout=config.dropout)
        self.graph = ExpertGraph(d, depth=config.gnn_layers, heads=config.gnn_heads, dropout=config.dropout)
        self.fusion = FusionHead(d, c, e)
        self.expert_heads = ExpertHeads(tuple(config.expert_names), d)
        self.unet = UNet.from_config(config)

        self.flow = DataFlow()
        self.flow.register("time", self._time, inputs=("timesteps",), outputs=("time_emb",))
        self.flow.register("text", self._text, inputs=("text_tokens", "text_mask"),
                           outputs=("text_context", "text_context_mask", "text_summary"))
        self.flow.register("vision", self._vision, inputs=("reference", "x_t"), outputs=("reference_tokens",))
        self.flow.register("canvas", self._canvas, inputs=("x_t",), outputs=("canvas_tokens",))
        self.flow.register("condition", self._condition,
                           inputs=("time_emb", "text_summary", "reference_tokens", "canvas_tokens"),
                           outputs=("condition",))
        self.flow.register("router", self._route, inputs=("condition",), outputs=("routing",))
        self.flow.register("experts", self._experts, inputs=("condition",), outputs=("expert_outputs",))
        self.flow.register("gnn", self._gnn, inputs=("expert_outputs",), outputs=("expert_states",))
        self.flow.register("fusion", self._fuse,
                           inputs=("expert_states", "routing", "reference_tokens", "text_context",
                                   "text_context_mask"),
                           outputs=("context", "context_mask"))

    # --- the stages of the conditioning path ---------------------------------------------------

    def _time(self, timesteps: Tensor) -> dict[str, Tensor]:
        return {"time_emb": self.time_embed(timesteps)}

    def _text(self, text_tokens: Tensor, text_mask: Optional[Tensor]) -> dict[str, Tensor]:
        if text_mask is None:
            text_mask = torch.ones(text_tokens.shape[:2], dtype=torch.bool, device=text_tokens.device)
        context = self.text_proj(text_tokens)
        if self.caption is not None:
            context = self.caption(context, text_mask)
        return {"text_context": context, "text_context_mask": text_mask.bool(),
                "text_summary": masked_mean(context, text_mask)}

    def _vision(self, reference: Optional[Tensor], x_t: Tensor) -> dict[str, Tensor]:
        if reference is None:
            tokens = self.null_reference.expand(x_t.shape[0], -1, -1)
        else:
            tokens = self.reference_encoder(reference.to(x_t.dtype))
        return {"reference_tokens": tokens}

    def _canvas(self, x_t: Tensor) -> dict[str, Tensor]:
        return {"canvas_tokens": self.canvas_encoder(x_t)}

    def _condition(self, time_emb: Tensor, text_summary: Tensor, reference_tokens: Tensor,
                   canvas_tokens: Tensor) -> dict[str, Tensor]:
        parts = (time_emb, text_summary, reference_tokens.flatten(1), canvas_tokens.flatten(1))
        return {"condition": self.to_condition(torch.cat(parts, dim=1))}

    def _route(self, condition: Tensor) -> dict[str, Tensor]:
        return {"routing": self.router(condition)}

    def _experts(self, condition: Tensor) -> dict[str, Tensor]:
        return {"expert_outputs": self.experts(condition)}

    def _gnn(self, expert_outputs: Tensor) -> dict[str, Tensor]:
        return {"expert_states": self.graph(expert_outputs)}

    def _fuse(self, expert_states: Tensor, routing: Tensor, reference_tokens: Tensor, text_context: Tensor,
              text_context_mask: Tensor) -> dict[str, Tensor]:
        expert_tokens = self.fusion(expert_states, routing)
        reference = self.reference_proj(reference_tokens)
        context = torch.cat((expert_tokens, reference, text_context), dim=1)
        # Expert and reference tokens are always there, so an empty caption (all-False text mask)
        # still leaves the cross-attention something to attend to.
        always = torch.ones(context.shape[0], expert_tokens.shape[1] + reference.shape[1], dtype=torch.bool,
                            device=context.device)
        return {"context": context, "context_mask": torch.cat((always, text_context_mask), dim=1)}

    # --- the model -------------------------------------------------------------------------------

    def _check_inputs(self, x_t: Tensor, timesteps: Tensor, text_tokens: Tensor, text_mask: Optional[Tensor],
                      reference: Optional[Tensor]) -> None:
        cfg = self.config
        if x_t.dim() != 4 or x_t.shape[1] != cfg.in_channels:
            raise ValueError(f"x_t must be [B, {cfg.in_channels}, H, W], got {tuple(x_t.shape)}")
        b = x_t.shape[0]
        if timesteps.shape != (b,):
            raise ValueError(f"timesteps must be [{b}], got {tuple(timesteps.shape)}")
        if text_tokens.dim() != 3 or text_tokens.shape[0] != b or text_tokens.shape[2] != cfg.text_dim:
            raise ValueError(f"text_tokens must be [{b}, L, {cfg.text_dim}], got {tuple(text_tokens.shape)}")
        if text_mask is not None and text_mask.shape != text_tokens.shape[:2]:
            raise ValueError(f"text_mask must be {tuple(text_tokens.shape[:2])}, "
                             f"got {tuple(text_mask.shape)}")
        if reference is not None and (reference.dim() != 4 or reference.shape[:2] != (b, cfg.in_channels)):
            raise ValueError(f"reference must be [{b}, {cfg.in_channels}, h, w], "
                             f"got {tuple(reference.shape)}")
        self.unet.check_size(*x_t.shape[-2:])

    def forward(self, x_t: Tensor, timesteps: Tensor, text_tokens: Tensor, text_mask: Optional[Tensor] = None,
                reference: Optional[Tensor] = None) -> OriginOutput:
        self._check_inputs(x_t, timesteps, text_tokens, text_mask, reference)
        values = self.flow.run({"x_t": x_t, "timesteps": timesteps, "text_tokens": text_tokens.to(x_t.dtype),
                                "text_mask": text_mask, "reference": reference})
        sample = self.unet(x_t, timesteps, values["context"], values["context_mask"],
                           cond=values["text_summary"])
        return OriginOutput(sample=sample, routing=values["routing"], expert_states=values["expert_states"])

    def expert_aux_losses(self, output: OriginOutput, clean: Tensor) -> dict[str, Tensor]:
        """One scalar loss per expert name (its auxiliary head vs a target computed from the clean image).

        ``clean`` is RGB in [-1, 1]: in latent space, the clean latents' approximate picture.
        """
        return self.expert_heads.losses(output.expert_states, clean)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute UNet activations in the backward pass: much less memory, ~30 % more time."""
        self.unet.gradient_checkpointing = enabled

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part, for the docs, the monitor and the benchmark's size match."""
        def count(*modules) -> int:
            params = (p for m in modules for p in (m.parameters() if isinstance(m, nn.Module) else [m]))
            return sum(p.numel() for p in params)

        counts = {
            "unet": count(self.unet),
            "text_and_vision": count(self.text_proj, *([self.caption] if self.caption is not None else []),
                                     self.reference_encoder, self.null_reference,
                                     self.reference_proj, self.canvas_encoder, self.time_embed,
                                     self.to_condition),
            "router": count(self.router),
            "experts": count(self.experts, self.fusion),
            "gnn": count(self.graph),
            "aux_heads": count(self.expert_heads),
        }
        counts["total"] = sum(counts.values())
        return counts
