"""Generation parameters inside image files, in the formats other tools read.

An image the studio saves carries them twice: AUTOMATIC1111's ``parameters`` text chunk (see
``a1111_text``), which Civitai, A1111's "PNG Info" tab and most image sites read, and Inkframe's own
``inkframe`` JSON chunk with everything needed to reproduce the image exactly (A1111's text has no room for
most of it). Any image an artist drops into the studio is read the other way: Inkframe's chunk first, then
A1111's text (a PNG chunk, or the EXIF UserComment where A1111 puts it in JPEG and WebP files), then
ComfyUI's API graph (see ``comfyui_graph``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.errors import InvalidRequestError
from engines.files import atomic_write
from engines.sd15.a1111_text import GenerationParameters, format_a1111, parse_a1111
from engines.sd15.comfyui_graph import read_comfyui_graph

if TYPE_CHECKING:
    from PIL.Image import Image
    from PIL.PngImagePlugin import PngInfo

__all__ = [
    "GenerationParameters", "format_a1111", "parse_a1111", "read_png_parameters", "png_info", "save_png",
]

A1111_KEY = "parameters"
INKFRAME_KEY = "inkframe"
COMFYUI_KEY = "prompt"
_JSON_TYPES = {"str": str, "int": int, "float": (int, float)}  # a field's type -> what JSON may hold for it
_USER_COMMENT = (0x8769, 0x9286)  # EXIF sub-IFD, UserComment tag: where A1111 writes JPEG and WebP parameters


def _user_comment(image: Image) -> str | None:
    """A1111's parameters in a JPEG or WebP file: the EXIF UserComment, as piexif writes it."""
    try:
        raw = image.getexif().get_ifd(_USER_COMMENT[0]).get(_USER_COMMENT[1])
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return None  # Pillow raises any of these on a damaged EXIF block: then there is nothing to read
    if not isinstance(raw, bytes):
        return raw if isinstance(raw, str) else None
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        # piexif writes UTF-16 big-endian; some tools use the file's little-endian byte order instead.
        # Text that is mostly ASCII has its zero bytes first in big-endian.
        order = "utf-16-be" if body[0::2].count(0) >= body[1::2].count(0) else "utf-16-le"
        return body.decode(order, "replace").rstrip("\0")
    if prefix in (b"ASCII\0\0\0", b"\0" * 8):
        raw = body
    return raw.decode("utf-8", "replace").rstrip("\0")


def _texts(image: Image) -> dict[str, str]:
    texts = {key: value for key, value in image.info.items() if isinstance(value, str)}
    if image.format == "PNG":
        try:
            texts.update(image.text)  # type: ignore[attr-defined]  # also the chunks after the pixels
        except (OSError, SyntaxError, ValueError):
            pass  # a truncated file: the chunks before the pixels, already in info, are what there is
    if A1111_KEY not in texts:
        comment = _user_comment(image)
        if comment:
            texts[A1111_KEY] = comment
    return texts


def _open_texts(image_or_path: Any) -> dict[str, str]:
    from PIL import Image as PILImage

    if isinstance(image_or_path, PILImage.Image):
        return _texts(image_or_path)
    path = Path(image_or_path)
    try:
        with PILImage.open(path) as image:
            return _texts(image)
    except FileNotFoundError:
        raise InvalidRequestError(f"There is no file at {path}.") from None
    except PILImage.DecompressionBombError:
        raise InvalidRequestError(f"{path.name} is too large an image to read safely.") from None
    except (PILImage.UnidentifiedImageError, SyntaxError, ValueError):
        raise InvalidRequestError(f"{path.name} is not an image file the studio can read.") from None
    except OSError as error:
        raise InvalidRequestError(f"{path.name} could not be read ({error.strerror or error}).") from None


def _json_object(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _from_fields(values: dict) -> GenerationParameters:
    """Parameters stored in Inkframe's JSON by field name; a value of the wrong type is left out."""
    found: dict[str, Any] = {}
    for field in fields(GenerationParameters):
        value, kind = values.get(field.name), str(field.type).split(" ")[0]  # "int | None" -> "int"
        if field.name == "source":  # says where the fields came from, so the reader sets it
            continue
        if kind.startswith("tuple") and isinstance(value, list):
            pairs = [pair for pair in value if isinstance(pair, list) and len(pair) == 2]
            found[field.name] = tuple((str(a), str(b)) for a, b in pairs)
        elif isinstance(value, _JSON_TYPES.get(kind, ())) and not isinstance(value, bool):
            found[field.name] = value
    return GenerationParameters(**found)


def _inkframe_parameters(inkframe: dict, a1111_text: str | None) -> GenerationParameters:
    text = a1111_text or inkframe.get("a1111")
    if isinstance(text, str):
        parameters = parse_a1111(text)
    elif isinstance(inkframe.get("parameters"), dict):
        parameters = _from_fields(inkframe["parameters"])
    else:
        parameters = GenerationParameters()
    return replace(parameters, source="inkframe")


def read_png_parameters(image_or_path: Any) -> tuple[GenerationParameters, dict | None]:
    """The parameters an image carries, and Inkframe's JSON when it has some.

    Takes a PIL image or a path. Inkframe's chunk wins (its parameters come from the A1111 text of the same
    file), then A1111's text, then ComfyUI's graph; an image with none gives ``source == "none"``."""
    texts = _open_texts(image_or_path)
    inkframe = _json_object(texts.get(INKFRAME_KEY))
    if inkframe is not None:
        return _inkframe_parameters(inkframe, texts.get(A1111_KEY)), inkframe
    if texts.get(A1111_KEY, "").strip():
        return parse_a1111(texts[A1111_KEY]), None
    from_graph = read_comfyui_graph(_json_object(texts.get(COMFYUI_KEY)))
    if from_graph is not None:
        return from_graph, None
    return GenerationParameters(source="none"), None


def png_info(p: GenerationParameters, inkframe: dict) -> PngInfo:
    """PNG text chunks with both: A1111's ``parameters`` text and Inkframe's ``inkframe`` JSON.

    Pillow writes a chunk whose text is not Latin-1 (a Japanese prompt) as UTF-8 iTXt, as A1111 does."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(A1111_KEY, format_a1111(p))
    info.add_text(INKFRAME_KEY, json.dumps(inkframe, sort_keys=True))
    return info


def save_png(image: Image, path: Path | str, p: GenerationParameters, inkframe: dict) -> Path:
    """Save ``image`` as a PNG carrying both chunks, atomically: a crash leaves no half-written image."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InvalidRequestError(f"Generation parameters are saved only in .png files, not in {path.name}.")
    info = png_info(p, inkframe)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
    return path
