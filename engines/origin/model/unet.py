"""The Origin denoiser: a pixel-space UNet with cross-attention to the conditioning tokens.

Reads top to bottom: helpers, the time embedding, the building blocks (ResNet block,
attention, the transformer block that carries self- and cross-attention), then the UNet.
The layout follows the DDPM/ADM UNet (Ho et al. 2020, Dhariwal & Nichol 2021) and the
cross-attention of latent diffusion (Rombach et al. 2022), at pixel level: there is no VAE,
so an artist's first run needs nothing downloaded and the model learns the line itself.

Sizes come from ``ModelConfig``: ``base_channels * channel_mult[i]`` channels at level ``i``
(each level halves the resolution), ``num_res_blocks`` per level, cross-attention at the
levels in ``attention_levels`` and always at the bottleneck.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# --- helpers -----------------------------------------------------------------------------------


def norm_groups(channels: int) -> int:
    """GroupNorm groups for a width: 32 as in the papers, fewer for the tiny test widths."""
    for groups in (32, 16, 8, 4, 2, 1):
        if channels % groups == 0:
            return groups
    return 1


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels, eps=1e-6)


def zero_init(module: nn.Module) -> nn.Module:
    """A layer that starts at zero, so each residual branch (and the whole UNet) starts as identity/zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class SinusoidalPosEmb(nn.Module):
    """Transformer position encoding of the diffusion timestep (Vaswani et al. 2017; DDPM)."""

    def __init__(self, dim: int, *, max_period: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.max_period = max_period

    def forward(self, timesteps: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=timesteps.device) / half)
        args = timesteps.float()[:, None] * freqs[None]
        emb = torch.cat((args.sin(), args.cos()), dim=-1)
        return F.pad(emb, (0, self.dim % 2))


# --- blocks ------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """Two 3x3 convs; the time embedding scales and shifts the second norm (FiLM, as in ADM)."""

    def __init__(self, dim_in: int, dim_out: int, *, time_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(dim_in)
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2))
        self.norm2 = group_norm(dim_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(dim_out, dim_out, 3, padding=1))
        self.skip = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: Tensor, time_emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time_proj(time_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class Attention(nn.Module):
    """Multi-head attention through torch's fused ``scaled_dot_product_attention``.

    Without ``context`` it is self-attention; with it, cross-attention (queries from the image,
    keys and values from the conditioning tokens). ``mask`` is ``[B, L]`` bool, True = attend.
    """

    def __init__(self, dim: int, *, heads: int, context_dim: Optional[int] = None, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, dim * 2, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Tensor:
        b, n, d = x.shape
        q = self.to_q(x)
        k, v = self.to_kv(x if context is None else context).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, -1, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    """GEGLU feed-forward (Shazeer 2020), the one latent-diffusion transformers use."""

    def __init__(self, dim: int, *, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult * 2)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(dim * mult, dim)

    def forward(self, x: Tensor) -> Tensor:
        h, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(h * F.gelu(gate)))


class SpatialTransformer(nn.Module):
    """Self-attention over pixels, cross-attention to the context tokens, feed-forward; residual."""

    def __init__(self, dim: int, *, context_dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm = group_norm(dim)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.norm1, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads=heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads=heads, context_dim=context_dim, dropout=dropout)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim, dropout=dropout)
        self.proj_out = zero_init(nn.Conv2d(dim, dim, 1))

    def forward(self, x: Tensor, context: Tensor, mask: Optional[Tensor]) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        tokens = tokens + self.self_attn(self.norm1(tokens))
        tokens = tokens + self.cross_attn(self.norm2(tokens), context, mask)
        tokens = tokens + self.ff(self.norm3(tokens))
        return x + self.proj_out(tokens.transpose(1, 2).reshape(b, c, h, w))


class UNetLayer(nn.Module):
    """One ResNet block, followed by a transformer block at attention levels."""

    def __init__(self, dim_in: int, dim_out: int, *, time_dim: int, attention: bool, context_dim: int,
                 heads: int, dropout: float):
        super().__init__()
        self.res = ResnetBlock(dim_in, dim_out, time_dim=time_dim, dropout=dropout)
        self.attn = (SpatialTransformer(dim_out, context_dim=context_dim, heads=heads, dropout=dropout)
                     if attention else None)

    def forward(self, x: Tensor, time_emb: Tensor, context: Tensor, mask: Optional[Tensor]) -> Tensor:
        x = self.res(x, time_emb)
        return x if self.attn is None else self.attn(x, context, mask)


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour then a 3x3 conv: no checkerboard artefacts of transposed convs (Odena et al.)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# --- the network -------------------------------------------------------------------------------


class UNet(nn.Module):
    """``forward(x_t, timesteps, context, context_mask) -> [B, in_channels, H, W]``.

    The output conv starts at zero, so an untrained model predicts zero: a sane epsilon/v guess
    that keeps the first steps' losses (and the art losses on the predicted image) finite.
    """

    def __init__(self, *, in_channels: int = 3, base_channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 4), num_res_blocks: int = 2,
                 attention_levels: tuple[int, ...] = (1, 2), attention_heads: int = 4,
                 context_dim: int = 256, dropout: float = 0.0, cond_dim: Optional[int] = None):
        super().__init__()
        self.num_levels = len(channel_mult)
        self.gradient_checkpointing = False
        time_dim = base_channels * 4
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(base_channels), nn.Linear(base_channels, time_dim),
                                      nn.SiLU(), nn.Linear(time_dim, time_dim))
        # A global condition (the pooled caption) added to the time embedding reaches every ResNet
        # block's scale and shift; it starts at zero, so it begins as the unconditioned UNet.
        self.cond_proj = (nn.Sequential(nn.Linear(cond_dim, time_dim), nn.SiLU(),
                                        zero_init(nn.Linear(time_dim, time_dim)))
                          if cond_dim else None)
        self.init_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        def layer(dim_in: int, dim_out: int, attention: bool) -> UNetLayer:
            return UNetLayer(dim_in, dim_out, time_dim=time_dim, attention=attention, context_dim=context_dim,
                             heads=attention_heads, dropout=dropout)

        # Down path: remember every feature map's width, the up path concatenates them back.
        self.downs = nn.ModuleList()
        ch, skip_widths = base_channels, [base_channels]
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.downs.append(layer(ch, base_channels * mult, level in attention_levels))
                ch = base_channels * mult
                skip_widths.append(ch)
            if level < self.num_levels - 1:
                self.downs.append(Downsample(ch))
                skip_widths.append(ch)

        self.mid = nn.ModuleList([layer(ch, ch, True), layer(ch, ch, False)])

        self.ups = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                skip = skip_widths.pop()
                self.ups.append(layer(ch + skip, base_channels * mult, level in attention_levels))
                ch = base_channels * mult
            if level > 0:
                self.ups.append(Upsample(ch))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(),
                                 zero_init(nn.Conv2d(ch, in_channels, 3, padding=1)))

    @classmethod
    def from_config(cls, config) -> "UNet":
        return cls(in_channels=config.in_channels, base_channels=config.base_channels,
                   channel_mult=tuple(config.channel_mult), num_res_blocks=config.num_res_blocks,
                   attention_levels=tuple(config.attention_levels), attention_heads=config.attention_heads,
                   context_dim=config.context_dim, dropout=config.dropout,
                   cond_dim=config.context_dim if getattr(config, "caption_to_time", False) else None)

    def check_size(self, height: int, width: int) -> None:
        factor = 2 ** (self.num_levels - 1)
        if height % factor or width % factor:
            raise ValueError(f"image size {height}x{width} must be a multiple of {factor} "
                             f"for a UNet with {self.num_levels} levels")

    def _layer(self, layer: UNetLayer, h: Tensor, t: Tensor, context: Tensor,
               mask: Optional[Tensor]) -> Tensor:
        # Activation checkpointing trades one extra forward per layer for the memory of its
        # activations: a 6 GB card then takes 2-3x the batch (docs/origin-model.md).
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, h, t, context, mask, use_reentrant=False)
        return layer(h, t, context, mask)

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor,
                context_mask: Optional[Tensor] = None, cond: Optional[Tensor] = None) -> Tensor:
        self.check_size(*x.shape[-2:])
        t = self.time_mlp(timesteps)
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this UNet takes a global condition (cond) with its time embedding")
            t = t + self.cond_proj(cond.to(t.dtype))
        h = self.init_conv(x)
        skips = [h]
        for block in self.downs:
            h = block(h) if isinstance(block, Downsample) else self._layer(block, h, t, context, context_mask)
            skips.append(h)
        for block in self.mid:
            h = self._layer(block, h, t, context, context_mask)
        for block in self.ups:
            if isinstance(block, Upsample):
                h = block(h)
            else:
                h = self._layer(block, torch.cat((h, skips.pop()), dim=1), t, context, context_mask)
        return self.out(h)
