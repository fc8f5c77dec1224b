"""Page projects on disk: a folder per page under ``outputs/pages/``, saved after every change.

    outputs/pages/<name>/page.json        the PageSpec (engines.manga.page_model), written atomically
    outputs/pages/<name>/panel-03.png     pictures dropped into or generated for the page, copied here
    outputs/pages/<name>/<name>.png       the last export

Pictures are copied into the page's folder (paths in page.json are relative to it), so a page still
opens after its source files are moved or deleted and the folder can be zipped and shared. A copy
replaces nothing: a new picture for panel 3 gets a new name, and the old one stays until the artist
deletes the page, so an undo or a crash never loses a picture.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Optional

from engines.errors import InvalidRequestError
from engines.files import atomic_write, atomic_write_bytes
from engines.manga.page_model import PageSpec, page_from_json, page_to_json

PAGES = "pages"
PROJECT_FILE = "page.json"
NAME_PATTERN = re.compile(r"[^\w\- ]+", re.UNICODE)


def pages_dir(outputs: Path) -> Path:
    return Path(outputs) / PAGES


def clean_name(name: str) -> str:
    """A page name usable as a folder name on Windows and Linux (letters, digits, - _ and spaces)."""
    cleaned = NAME_PATTERN.sub("", str(name or "")).strip().strip(".")[:80]
    if not cleaned:
        raise InvalidRequestError("Give the page a name made of letters, digits, spaces, - or _.")
    return cleaned


def new_page_name(outputs: Path, prefix: str = "page") -> str:
    """The next free "page-001" style name."""
    taken = {path.name for path in pages_dir(outputs).glob(f"{prefix}-*")}
    number = 1
    while f"{prefix}-{number:03d}" in taken:
        number += 1
    return f"{prefix}-{number:03d}"


def page_folder(outputs: Path, name: str) -> Path:
    return pages_dir(outputs) / clean_name(name)


def save_page(spec: PageSpec, folder: Path) -> Path:
    """Write page.json atomically (the old file survives a crash mid-write); returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PROJECT_FILE
    atomic_write_bytes(path, page_to_json(spec).encode("utf-8"))
    return path


def load_page(path: Path) -> tuple[PageSpec, Path]:
    """A page from its folder or its page.json; returns (spec, folder). One sentence when unreadable."""
    path = Path(path).expanduser()
    file = path / PROJECT_FILE if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequestError(f"There is no page project at {path}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidRequestError(f"The page project {file} cannot be read ({error}).") from None
    return page_from_json(text), file.parent


def list_pages(outputs: Path) -> list[Path]:
    """Page folders, the most recently saved first."""
    found = [p.parent for p in pages_dir(outputs).glob(f"*/{PROJECT_FILE}")]
    return sorted(found, key=lambda folder: (folder / PROJECT_FILE).stat().st_mtime, reverse=True)


def import_picture(folder: Path, number: int, source: Path) -> str:
    """Copy a picture into the page's folder for panel ``number``; returns its name relative to the folder.

    The copy is checked to open as an image first (a broken file gets one sentence and is not copied)."""
    from engines.manga.compose import open_picture

    source = Path(source)
    open_picture(source)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = source.suffix.lower() if source.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") else ".png"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / f"panel-{number:02d}-{stamp}{suffix}"
    count = 2
    while target.exists():
        target = folder / f"panel-{number:02d}-{stamp}-{count}{suffix}"
        count += 1
    if source.resolve() != target.resolve():
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    return target.name


def export_name(folder: Path, spec: PageSpec, suffix: str = ".png") -> Path:
    return Path(folder) / f"{clean_name(spec.name)}{suffix}"


def find_page(outputs: Path, name_or_path: str) -> Optional[Path]:
    """A page folder by name (under outputs/pages/) or by path; None when there is none."""
    path = Path(name_or_path).expanduser()
    for candidate in (path, pages_dir(outputs) / name_or_path):
        if (candidate / PROJECT_FILE).is_file() or (candidate.is_file() and candidate.suffix == ".json"):
            return candidate
    return None
