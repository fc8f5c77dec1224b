"""Fonts for lettering: which ones the studio can use and how a bubble gets one at a pixel size.

    book = FontBook(folders=[data_dir / "fonts"])
    book.names()                       # what the font picker lists, the default first
    lf = book.font("", size_px=38, bold=True)   # a LetteringFont: main face, fallback, stroke

The guaranteed default is IPAexGothic (IPA Font License), shipped in the wheel of the PyPI package
``matplotlib-fontja``: it covers kana, kanji and Latin and has the OpenType ``vert`` feature that
tategaki needs. We find its file through the import system's spec but never import the package,
because importing it pulls in matplotlib. System fonts (Yu Gothic, Meiryo, MS Gothic, Noto Sans
CJK JP, Hiragino) are offered when present, and an artist can drop .ttf/.otf/.ttc files in the
studio's ``fonts/`` folder. A face that lacks a character (a Latin-only font given Japanese) falls
back per character to the default font, so no bubble ever shows the missing-glyph box.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from PIL import ImageFont, features

from engines.errors import InvalidRequestError

DEFAULT_FONT = "IPAexGothic"
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
# The last private-use codepoint: no font assigns it, so it always renders as the font's .notdef box.
_UNASSIGNED = "\U0010FFFD"
# Synthetic bold: a stroke of this many ems around each glyph reads as bold without closing counters.
_SYNTHETIC_BOLD_EM = 0.045

# (name in the picker, regular file names, bold file names); the first file found wins.
_SYSTEM_FONTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Yu Gothic", ("YuGothM.ttc", "YuGothR.ttc"), ("YuGothB.ttc",)),
    ("Meiryo", ("meiryo.ttc",), ("meiryob.ttc",)),
    ("MS Gothic", ("msgothic.ttc",), ()),
    # The Noto CJK collections put Japanese first (JP, KR, SC, TC, HK), so index 0 is right.
    ("Noto Sans CJK JP", ("NotoSansCJK-Regular.ttc", "NotoSansCJKjp-Regular.otf", "NotoSansJP-Regular.otf"),
     ("NotoSansCJK-Bold.ttc", "NotoSansCJKjp-Bold.otf", "NotoSansJP-Bold.otf")),
    ("Hiragino Sans", ("ヒラギノ角ゴシック W3.ttc",), ("ヒラギノ角ゴシック W6.ttc",)),
)


@dataclass(frozen=True)
class FontFace:
    """A font the book knows by name: its regular file and, when it has one, its bold file."""

    name: str
    path: Path
    index: int = 0
    bold_path: Optional[Path] = None
    bold_index: int = 0


@dataclass(frozen=True)
class LetteringFont:
    """What lettering needs to draw one bubble: the chosen face at a pixel size, the default face at
    the same size for characters the chosen one lacks, and the stroke that makes synthetic bold."""

    main: ImageFont.FreeTypeFont
    fallback: ImageFont.FreeTypeFont
    size_px: int
    stroke: int = 0
    raqm: bool = True  # OpenType features (vert) need libraqm; without it lettering places glyphs itself
    _covers: dict = field(default_factory=dict, compare=False, repr=False)

    def for_char(self, ch: str) -> ImageFont.FreeTypeFont:
        """The face to draw ``ch`` with: the chosen one unless it lacks the glyph."""
        if self.main is self.fallback:
            return self.main
        found = self._covers.get(ch)
        if found is None:
            found = self._covers[ch] = not glyph_missing(self.main, ch)
        return self.main if found else self.fallback


def glyph_missing(font: ImageFont.FreeTypeFont, ch: str) -> bool:
    """True when ``font`` has no glyph for ``ch`` and would draw its missing-glyph (tofu) box.

    FreeType maps an unknown character to glyph 0 (.notdef), so its mask equals the mask of a
    codepoint no font assigns. Whitespace draws nothing in every font and is never missing."""
    if ch.isspace():
        return False
    mask, notdef = font.getmask(ch), font.getmask(_UNASSIGNED)
    return mask.size == notdef.size and bytes(mask) == bytes(notdef)


def default_font_path() -> Path:
    """IPAexGothic's file inside the installed matplotlib-fontja package (found, not imported)."""
    spec = importlib.util.find_spec("matplotlib_fontja")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "fonts" / "ipaexg.ttf"
        if path.is_file():
            return path
    raise InvalidRequestError(
        "The default lettering font IPAexGothic is missing: reinstall it with "
        "`pip install matplotlib-fontja`.")


def system_font_dirs() -> list[Path]:
    """Where Windows, macOS and Linux keep installed fonts, for this platform."""
    home = Path.home()
    if sys.platform.startswith("win"):
        dirs = [Path(os.environ.get("WINDIR", r"C:\Windows")) / "Fonts"]
        if os.environ.get("LOCALAPPDATA"):
            dirs.append(Path(os.environ["LOCALAPPDATA"]) / "Microsoft" / "Windows" / "Fonts")
        return dirs
    if sys.platform == "darwin":
        return [Path("/System/Library/Fonts"), Path("/Library/Fonts"), home / "Library" / "Fonts"]
    return [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), home / ".local" / "share" / "fonts",
            home / ".fonts"]


def _font_files(folders: Iterable[Path], depth: int) -> dict[str, Path]:
    """Font files under ``folders`` by lower-case file name (Linux nests fonts a few folders deep)."""
    found: dict[str, Path] = {}
    for top in folders:
        if not top.is_dir():
            continue
        for root, dirs, files in os.walk(top):
            if len(Path(root).relative_to(top).parts) >= depth:
                dirs[:] = []
            for name in sorted(files):
                if name.lower().endswith(FONT_SUFFIXES):
                    found.setdefault(name.lower(), Path(root) / name)
    return found


class FontBook:
    """The fonts this studio can letter with, and a cache of opened faces per (file, index, size).

    ``folders`` are the artist's font folders (the studio passes ``<data dir>/fonts``); each font
    file there is listed under its family name. ``system=False`` skips installed system fonts
    (tests use it so results do not depend on the machine). The font list is built on first use."""

    def __init__(self, folders: Iterable[Path | str] = (), *, system: bool = True,
                 raqm: Optional[bool] = None) -> None:
        self._folders = [Path(f) for f in folders]
        self._system = system
        self._raqm = features.check("raqm") if raqm is None else bool(raqm and features.check("raqm"))
        self._faces: Optional[dict[str, FontFace]] = None
        self._open: dict[tuple[str, int, int], ImageFont.FreeTypeFont] = {}

    # 1. Which fonts exist
    def faces(self) -> dict[str, FontFace]:
        if self._faces is None:
            faces = {DEFAULT_FONT: FontFace(DEFAULT_FONT, default_font_path())}
            for face in self._user_faces():
                faces.setdefault(face.name, face)
            if self._system:
                for face in self._system_faces():
                    faces.setdefault(face.name, face)
            self._faces = faces
        return self._faces

    def names(self) -> list[str]:
        """What a font picker lists: the default first, then the artist's fonts, then system ones."""
        return list(self.faces())

    def _user_faces(self) -> list[FontFace]:
        families: dict[str, dict[str, Path]] = {}
        for path in sorted(_font_files(self._folders, depth=2).values()):
            try:
                family, style = ImageFont.truetype(str(path), 12).getname()
            except OSError:
                continue  # a broken file in the folder must not hide the others
            kind = "bold" if "bold" in (style or "").lower() else "regular"
            families.setdefault(family or path.stem, {}).setdefault(kind, path)
        # A family with only a bold file uses it as its regular face too.
        return [FontFace(name, files.get("regular") or files["bold"], bold_path=files.get("bold"))
                for name, files in sorted(families.items())]

    def _system_faces(self) -> list[FontFace]:
        files = _font_files(system_font_dirs(), depth=4)
        faces = []
        for name, regulars, bolds in _SYSTEM_FONTS:
            regular = next((files[n.lower()] for n in regulars if n.lower() in files), None)
            bold = next((files[n.lower()] for n in bolds if n.lower() in files), None)
            if regular is not None:
                faces.append(FontFace(name, regular, bold_path=bold))
        return faces

    # 2. One face at one size
    def _truetype(self, path: Path, index: int, size_px: int) -> ImageFont.FreeTypeFont:
        key = (str(path), index, size_px)
        if key not in self._open:
            engine = ImageFont.Layout.RAQM if self._raqm else ImageFont.Layout.BASIC
            try:
                self._open[key] = ImageFont.truetype(str(path), size_px, index=index, layout_engine=engine)
            except OSError as error:
                raise InvalidRequestError(f"The font file {path} cannot be read ({error}).") from error
        return self._open[key]

    def _face(self, name: str) -> FontFace:
        faces = self.faces()
        if not name:
            return faces[DEFAULT_FONT]
        if name in faces:
            return faces[name]
        lowered = {key.lower(): face for key, face in faces.items()}
        if name.lower() in lowered:
            return lowered[name.lower()]
        path = Path(name).expanduser()
        if path.suffix.lower() in FONT_SUFFIXES and path.is_file():
            return FontFace(path.stem, path)
        where = f", or put its .ttf/.otf/.ttc file in {self._folders[0]}" if self._folders else ""
        raise InvalidRequestError(
            f"The font {name!r} is not available: choose one of {', '.join(faces)}{where}.")

    def font(self, name: str, size_px: int, bold: bool = False) -> LetteringFont:
        """``name`` ("" = the default, a listed name, or a font file's path) at ``size_px`` pixels per em.

        Bold uses the family's bold file when it has one, else synthetic bold: the returned
        ``stroke`` is the ``stroke_width`` to draw with (0 when no stroke is needed)."""
        size_px = max(1, int(size_px))
        face = self._face(name)
        stroke = 0
        if bold and face.bold_path is not None:
            main = self._truetype(face.bold_path, face.bold_index, size_px)
        else:
            main = self._truetype(face.path, face.index, size_px)
            stroke = max(1, round(size_px * _SYNTHETIC_BOLD_EM)) if bold else 0
        default = self.faces()[DEFAULT_FONT]
        fallback = main if face == default else self._truetype(default.path, default.index, size_px)
        return LetteringFont(main=main, fallback=fallback, size_px=size_px, stroke=stroke, raqm=self._raqm)
