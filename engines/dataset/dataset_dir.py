"""The dataset folder on disk: images with their captions and sidecars, the manifest, and recovery.

```
<dataset>/danbooru_123.jpg       the image, byte for byte as the site served it
<dataset>/danbooru_123.txt       its caption
<dataset>/danbooru_123.json      sidecar: source URL, post id, rating, score, hashes, tags
<dataset>/dataset.json           counts per source and per rejection reason
<dataset>/.inkframe/             manifest.sqlite3, parts/ (downloads in flight), removed/, hf/
```
Only the three files per image are image-like: removed images keep a ``.removed`` suffix and
downloads in flight a ``.part`` one, so a trainer that scans the folder recursively finds nothing else.
Every file is written to a temporary name, fsynced and renamed, so a crash leaves either the old
state or the new one; the manifest's ``writing`` status covers the gap between the three files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from engines.dataset.dedupe import DuplicateIndex
from engines.dataset.http import write_error
from engines.dataset.manifest import Manifest, ManifestRow
from engines.files import atomic_write_bytes

STATE_DIR = ".inkframe"
SUMMARY_FILE = "dataset.json"
REMOVED_SUFFIX = ".removed"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file beside ``path``, fsync, rename: readers see the old file or the new one, never half."""
    try:
        atomic_write_bytes(path, data)
    except OSError as error:
        raise write_error(error, path.parent) from error


def stem_for(source: str, post_id: str) -> str:
    """A file name stem that is safe everywhere and unique per (source, post)."""
    safe = _UNSAFE.sub("-", post_id).strip("-")[:48]
    if safe != post_id:
        safe = f"{safe}-{hashlib.sha1(post_id.encode('utf-8')).hexdigest()[:8]}".lstrip("-")
    return f"{source}_{safe}"


class DatasetDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.state = self.root / STATE_DIR
        self.parts = self.state / "parts"
        self.removed = self.state / "removed"
        try:
            for folder in (self.root, self.parts, self.removed):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_error(error, self.root) from error
        self.manifest = Manifest(self.state / "manifest.sqlite3")

    @classmethod
    def open_existing(cls, root: Path) -> Optional["DatasetDir"]:
        """The dataset at ``root`` if one was ever collected there; never creates a folder."""
        path = Path(root).expanduser()
        if not (path / STATE_DIR / "manifest.sqlite3").is_file():
            return None
        return cls(path)

    def close(self) -> None:
        self.manifest.close()

    def __enter__(self) -> "DatasetDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- paths -------------------------------------------------------------------------------------

    def part_path(self, stem: str) -> Path:
        return self.parts / f"{stem}.part"

    def files_of(self, stem: str, ext: Optional[str]) -> list[Path]:
        names = [f"{stem}.txt", f"{stem}.json"] + ([f"{stem}{ext}"] if ext else [])
        return [self.root / name for name in names]

    # --- recovery ----------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Undo what a killed run left half-done; note images the artist deleted by hand."""
        undone = 0
        for row in self.manifest.rows("writing"):
            for path in self.files_of(row.stem or "", row.ext):
                path.unlink(missing_ok=True)
            self.manifest.forget(row.source, row.post_id)
            undone += 1
        for part in self.parts.glob("*.part"):
            part.unlink(missing_ok=True)
        for tmp in self.root.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        # A Hugging Face file downloaded but not yet moved to its .part when the run died.
        for staged in (self.state / "hf").rglob("*") if (self.state / "hf").is_dir() else ():
            if staged.suffix.lower() in IMAGE_SUFFIXES and staged.is_file():
                staged.unlink(missing_ok=True)
        deleted = 0
        for row in self.manifest.rows("kept"):
            if not (self.root / row.file_name).exists():
                self.manifest.set_status(row.stem or "", "removed", "deleted by hand")
                deleted += 1
        return {"undone": undone, "deleted_by_hand": deleted}

    # --- keeping, removing, trimming ---------------------------------------------------------------

    def keep(self, source: str, post_id: str, part: Path, *, stem: str, ext: str, caption: str,
             sidecar: dict[str, Any], columns: dict[str, Any]) -> Path:
        """The keep protocol (see engines/dataset/manifest.py): writing -> files -> kept."""
        self.manifest.record(source, post_id, "writing", stem=stem, ext=ext, reason=None, **columns)
        image = self.root / f"{stem}{ext}"
        write_atomic(self.root / f"{stem}.txt", (caption + "\n").encode("utf-8"))
        write_atomic(self.root / f"{stem}.json",
                     json.dumps(sidecar, indent=2, ensure_ascii=False).encode("utf-8"))
        try:
            os.replace(part, image)
        except OSError as error:
            raise write_error(error, self.root) from error
        self.manifest.mark_kept(source, post_id)
        return image

    def remove(self, stem: str, reason: str = "removed by the artist") -> Optional[ManifestRow]:
        """Take an image out of the dataset (its files go to .inkframe/removed/); never re-collected."""
        row = self.manifest.by_stem(stem)
        if row is None or row.status != "kept":
            return None
        for path in self.files_of(stem, row.ext):
            if path.exists():
                # ".removed" keeps a loader that scans the folder recursively from training on it.
                shutil.move(str(path), self.removed / f"{path.name}{REMOVED_SUFFIX}")
        self.manifest.set_status(stem, "removed", reason)
        return row

    def trim(self, target: int) -> int:
        """Over target (the artist lowered it): keep the first ``target`` images in collection order."""
        extra = self.manifest.rows("kept")[target:]
        for row in extra:
            for path in self.files_of(row.stem or "", row.ext):
                path.unlink(missing_ok=True)
            self.manifest.set_status(row.stem or "", "trimmed", "over the target")
        return len(extra)

    def duplicate_index(self, max_distance: int) -> DuplicateIndex:
        return DuplicateIndex.from_rows(self.manifest.hashes(), max_distance)

    # --- what the tab and dataset.json show --------------------------------------------------------

    def kept_images(self, limit: int = -1, newest_first: bool = True) -> list[tuple[Path, str]]:
        """(image path, caption) of kept images that are on disk."""
        out = []
        for row in self.manifest.rows("kept", newest_first=newest_first, limit=limit):
            image = self.root / row.file_name
            caption_file = self.root / f"{row.stem}.txt"
            caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.exists() else ""
            if image.exists():
                out.append((image, caption))
        return out

    def summary(self, request: Optional[dict] = None) -> dict[str, Any]:
        counts = self.manifest.counts()
        by_status = counts["by_status"]
        data: dict[str, Any] = {
            "format": "inkframe-dataset", "version": 1,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "images": by_status.get("kept", 0),
            "kept_by_source": counts["kept_by_source"],
            "rejected_by_reason": counts["rejected_by_reason"],
            "removed": by_status.get("removed", 0),
            "trimmed": by_status.get("trimmed", 0),
            "posts_seen": sum(by_status.values()),
        }
        if request is not None:
            data["request"] = request
        return data

    def write_summary(self, request: Optional[dict] = None) -> Path:
        path = self.root / SUMMARY_FILE
        previous = self.read_summary()
        if request is None and previous.get("request"):
            request = previous["request"]
        write_atomic(path, json.dumps(self.summary(request), indent=2, ensure_ascii=False).encode("utf-8"))
        return path

    def read_summary(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
