"""The character picture and the control maps, read and checked before any model loads.

Artists' files come in every shape: CMYK JPEGs from print work, 16-bit PNGs from painting programs,
palette GIFs and PNGs, pictures with transparency, photos turned on their side by EXIF. Each is read
into 8-bit RGB (plus its alpha when some pixel is see-through), upright; a file that is not a usable
picture (empty, broken, too large to decode safely) is one sentence that names it.

The working size is what SD 1.5 diffuses: the long side at ``long_side`` (640 by default, a little
above SD 1.5's 512 training size, where it still composes one figure well), both sides rounded to
a multiple of 64 so the ControlNets' and the UNet's feature maps line up at every level.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engines.errors import InvalidRequestError

MAX_SOURCE_PIXELS = 80_000_000  # past this a decode takes seconds and GBs; nothing is gained at 640 px
MIN_SOURCE_SIDE = 32
SIZE_MULTIPLE = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass(frozen=True)
class SourcePicture:
    """A picture read as the engine uses it: RGBA when it has transparency, RGB otherwise."""

    image: object  # PIL.Image.Image, upright, 8 bits per channel
    path: Path
    note: str = ""  # what was converted ("CMYK converted to RGB"), for the report

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size  # type: ignore[attr-defined]


def _eight_bit(image):  # noqa: ANN001 - PIL image in, PIL image out
    """16-bit and float greys scaled to 8 bits by their range (a plain convert would clip at 255)."""
    import numpy as np
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
    if image.mode == "F" and values.max() <= 1.0:
        top = 1.0
    return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def _normalise(image):  # noqa: ANN001
    """RGB or RGBA (only when some pixel is see-through), and a note of what changed."""
    import numpy as np

    note = ""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        image, note = _eight_bit(image), f"{mode} (16-bit) scaled to 8 bits"
    if mode == "CMYK":
        note = "CMYK converted to RGB"
    if mode in ("P", "PA", "1") or "transparency" in image.info:
        image = image.convert("RGBA")
        note = note or ("palette converted to RGB" if mode == "P" else "")
    if image.mode in ("LA", "La", "RGBa", "PA"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        if int(np.asarray(image.getchannel("A")).min()) < 255:
            return image, note
        return image.convert("RGB"), note
    return image.convert("RGB") if image.mode != "RGB" else image, note


def read_source(path: Path | str, what: str = "The picture") -> SourcePicture:
    """``path`` as a ``SourcePicture``; one sentence if it is not a usable picture."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidRequestError(f"{what} {path} does not exist.")
    if path.stat().st_size == 0:
        raise InvalidRequestError(f"{what} {path.name} is empty (0 bytes): export it again.")
    try:
        with warnings.catch_warnings():  # the size check below says it once, in words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            if opened.width * opened.height > MAX_SOURCE_PIXELS:
                raise InvalidRequestError(
                    f"{what} {path.name} is {opened.width}x{opened.height} pixels, too large to read safely: "
                    f"scale it below {MAX_SOURCE_PIXELS // 1_000_000} megapixels (it is diffused at about 640 px).")
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            image, note = _normalise(upright)
    except InvalidRequestError:
        raise
    except Image.DecompressionBombError:
        raise InvalidRequestError(f"{what} {path.name} is too large to read safely: scale it below "
                                  f"{MAX_SOURCE_PIXELS // 1_000_000} megapixels.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InvalidRequestError(f"{what} {path.name} is not a picture that can be read ({_first_line(error)}): "
                                  "export it again as PNG or JPEG.") from None
    if min(image.size) < MIN_SOURCE_SIDE:
        raise InvalidRequestError(f"{what} {path.name} is only {image.width}x{image.height} pixels; "
                                  f"give one at least {MIN_SOURCE_SIDE} pixels on each side.")
    return SourcePicture(image, path, note)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:120]


def working_size(size: tuple[int, int], long_side: int = 640,
                 fixed: Optional[tuple[int, int]] = None) -> tuple[int, int]:
    """The size SD diffuses: ``fixed`` when given, else the long side at ``long_side``, multiples of 64."""
    if fixed is not None and fixed[0] and fixed[1]:
        return int(fixed[0]), int(fixed[1])
    width, height = size
    scale = long_side / max(width, height)

    def rounded(value: float) -> int:
        return max(SIZE_MULTIPLE, int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)

    return rounded(width * scale), rounded(height * scale)


def fit_to(image, size: tuple[int, int]):  # noqa: ANN001
    """``image`` at exactly ``size``: scaled to cover it and centre-cropped, so nothing is stretched more
    than the rounding to 64 pixels needs."""
    from PIL import Image

    width, height = size
    scale = max(width / image.width, height / image.height)
    crop_w, crop_h = min(width / scale, image.width), min(height / scale, image.height)
    left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
    method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return image.resize((width, height), method, box=(left, top, left + crop_w, top + crop_h))


def read_control_map(path: Path | str, size: tuple[int, int], what: str):
    """A ready control map (depth or pose) as RGB at the working size; one sentence if unreadable."""
    from PIL import Image

    picture = read_source(path, what)
    image = picture.image
    if image.mode == "RGBA":  # a map drawn on transparency: the ControlNets read black as "nothing here"
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, image).convert("RGB")
    return fit_to(image, size)


def images_in(folder: Path | str) -> list[Path]:
    """The pictures in a batch folder (not its subfolders), in name order."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InvalidRequestError(f"The input folder {folder} does not exist.")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InvalidRequestError(f"The input folder {folder} holds no pictures ({', '.join(IMAGE_SUFFIXES)}).")
    return found
