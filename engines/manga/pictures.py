"""Pictures as artists hand them over: transparency is paper, not black.

Panels, sprites and finished pages are drawn on white; PIL's own ``convert("RGB")`` or
``convert("L")`` would turn their transparent parts black. The page engine flattens every picture
it reads here first: a panel (compose), a picture to tone (tone), a page to print (export).
"""

from __future__ import annotations

from typing import Any

PAPER = (255, 255, 255)


def has_alpha(image: Any) -> bool:
    """An alpha channel, or a transparent palette entry or colour key (``transparency`` in a PNG or GIF)."""
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def on_paper(image: Any) -> Any:
    """An RGB copy of ``image`` with its transparent parts on white paper; ``image`` itself if it has no alpha."""
    from PIL import Image

    if not has_alpha(image):
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, PAPER + (255,)), rgba).convert("RGB")
