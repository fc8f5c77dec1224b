"""The plain baseline: a diffusers ``UNet2DConditionModel`` that hears the caption and nothing else.

``ModelConfig.architecture = "plain"`` trains it with the same text encoder, trainer, schedule and
losses as Origin (no experts, no GNN, no reference, no auxiliary heads), so the learns-benchmark
(``bench/bench_origin_learns.py``) can say what Origin's conditioning path adds at equal size. It
answers Origin's ``forward`` with an ``OriginOutput`` whose routing is a single expert.

Sizes: ``base_channels * channel_mult`` per level, ``num_res_blocks`` ResNet blocks per level,
cross-attention at ``attention_levels``; with ``caption_to_time`` the pooled caption goes in as the
UNet's class embedding (a projection added to the time embedding), as Origin's does, and the
caption goes through the same ``CaptionEncoder`` (caption.py) when ``caption_layers`` asks for it.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from engines.origin.model.caption import CaptionEncoder, attend_mask
from engines.origin.model.config import ModelConfig
from engines.origin.model.network import OriginOutput, masked_mean
from engines.origin.model.unet import norm_groups


class PlainModel(nn.Module):
    """``forward(x_t, timesteps, text_tokens, text_mask=None, reference=None) -> OriginOutput``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config
        widths = tuple(config.base_channels * m for m in config.channel_mult)
        levels = range(len(widths))
        attention = set(config.attention_levels)
        self.text_proj = nn.Linear(config.text_dim, config.context_dim)
        self.caption = CaptionEncoder.from_config(config)
        self.unet = UNet2DConditionModel(
            sample_size=config.sample_size, in_channels=config.in_channels, out_channels=config.in_channels,
            block_out_channels=widths, layers_per_block=config.num_res_blocks,
            down_block_types=tuple("CrossAttnDownBlock2D" if lv in attention else "DownBlock2D"
                                   for lv in levels),
            up_block_types=tuple("CrossAttnUpBlock2D" if lv in attention else "UpBlock2D"
                                 for lv in reversed(levels)),
            cross_attention_dim=config.context_dim,
            attention_head_dim=max(1, widths[-1] // config.attention_heads),
            norm_num_groups=min(norm_groups(w) for w in widths),
            class_embed_type="projection" if config.caption_to_time else None,
            projection_class_embeddings_input_dim=config.context_dim if config.caption_to_time else None,
            dropout=config.dropout,
        )

    def forward(self, x_t: Tensor, timesteps: Tensor, text_tokens: Tensor, text_mask: Optional[Tensor] = None,
                reference: Optional[Tensor] = None) -> OriginOutput:
        b = x_t.shape[0]
        if text_mask is None:
            text_mask = torch.ones(text_tokens.shape[:2], dtype=torch.bool, device=x_t.device)
        context = self.text_proj(text_tokens.to(x_t.dtype))
        if self.caption is not None:
            context = self.caption(context, text_mask)
        # An empty caption (all-False mask) still gets one token to attend to.
        attend = attend_mask(text_mask)
        pooled = masked_mean(context, text_mask) if self.config.caption_to_time else None
        sample = self.unet(x_t, timesteps, encoder_hidden_states=context, encoder_attention_mask=attend,
                           class_labels=pooled).sample
        ones = x_t.new_ones(b, 1)
        return OriginOutput(sample=sample, routing=ones.float(), expert_states=x_t.new_zeros(b, 1, 1))

    def expert_aux_losses(self, output: OriginOutput, clean: Tensor) -> dict[str, Tensor]:
        return {}

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        if enabled:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    def parameter_counts(self) -> dict[str, int]:
        unet = sum(p.numel() for p in self.unet.parameters())
        text = sum(p.numel() for m in (self.text_proj, self.caption) if m is not None for p in m.parameters())
        return {"unet": unet, "text_and_vision": text, "router": 0, "experts": 0, "gnn": 0, "aux_heads": 0,
                "total": unet + text}
