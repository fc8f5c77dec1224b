"""A reference image to three embeddings: structure, colour and composition.

For image-conditioned generation (a style reference, the previous panel of a page) the model
needs to know *what kind* of picture the reference is, not its pixels. A small multi-scale CNN
reads it at three scales, each answering one question:

- fine (3x3 convs at full working size): strokes and shapes, kept as a 4x4 grid of features
  -> the **structure** embedding;
- mid (pooled to half size): channel means and standard deviations of the features plus the raw
  R, G, B statistics, the same statistics style transfer matches (Huang & Belongie 2017, AdaIN)
  -> the **colour** embedding;
- global (quarter size): a global average and a 2x2 layout of the deepest features
  -> the **composition** embedding.

The image is first resized to ``size`` pixels, so the cost is the same for a 64 px thumbnail and a
2000 px page. ``OriginModel`` uses one encoder for the reference and a second, smaller one to let
the experts look at the current noisy canvas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.origin.model.unet import group_norm

EMBEDDINGS = ("structure", "color", "composition")


def conv_block(dim_in: int, dim_out: int, *, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(dim_in, dim_out, 3, stride=stride, padding=1), group_norm(dim_out), nn.SiLU(),
        nn.Conv2d(dim_out, dim_out, 3, padding=1), group_norm(dim_out), nn.SiLU(),
    )


class VisionEncoder(nn.Module):
    """``forward(image [B, 3, h, w] in [-1, 1]) -> [B, 3, vision_dim]``: structure, colour, composition."""

    def __init__(self, *, vision_dim: int = 128, channels: int | None = None, in_channels: int = 3,
                 size: int = 64):
        super().__init__()
        c = channels or max(16, vision_dim // 4)
        self.size = size
        self.fine = conv_block(in_channels, c)
        self.mid = nn.Sequential(nn.AvgPool2d(2), conv_block(c, c * 2))
        self.coarse = conv_block(c * 2, c * 4, stride=2)
        self.to_structure = nn.Sequential(nn.Linear(c * 16, vision_dim), nn.LayerNorm(vision_dim))
        self.to_color = nn.Sequential(nn.Linear(c * 4 + in_channels * 2, vision_dim),
                                      nn.LayerNorm(vision_dim))
        self.to_composition = nn.Sequential(nn.Linear(c * 4 * 5, vision_dim), nn.LayerNorm(vision_dim))

    def forward(self, image: Tensor) -> Tensor:
        image = F.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=image.shape[-1] > self.size or image.shape[-2] > self.size)
        fine = self.fine(image)
        mid = self.mid(fine)
        coarse = self.coarse(mid)

        structure = F.adaptive_avg_pool2d(fine, 4).flatten(1)
        stats = torch.cat((mid.mean(dim=(2, 3)), mid.std(dim=(2, 3)),
                           image.mean(dim=(2, 3)), image.std(dim=(2, 3))), dim=1)
        layout = torch.cat((coarse.mean(dim=(2, 3)), F.adaptive_avg_pool2d(coarse, 2).flatten(1)), dim=1)
        embeddings = (self.to_structure(structure), self.to_color(stats), self.to_composition(layout))
        return torch.stack(embeddings, dim=1)
