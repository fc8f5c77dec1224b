"""The artist's own images: a folder (searched recursively), with or without caption files.

A caption file beside an image (``name.txt`` or ``name.caption``) is read as comma-separated tags, so
the blacklist, the meta tag list and the caption template apply to it like to a site's tags.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from engines.dataset.captions import TagGroups
from engines.dataset.errors import DownloadFailed
from engines.dataset.http import write_error
from engines.dataset.sources.base import Post, Source

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CAPTION_SUFFIXES = (".txt", ".caption")


def read_caption_tags(image: Path) -> tuple[str, ...]:
    for suffix in CAPTION_SUFFIXES:
        caption = image.with_suffix(suffix)
        if caption.is_file():
            text = caption.read_text(encoding="utf-8", errors="replace")
            return tuple(t.strip() for t in text.replace("\n", ",").split(",") if t.strip())
    return ()


class FolderSource(Source):
    label = "Local folder"

    def posts(self) -> Iterator[Post]:
        root = Path(self.spec.folder).expanduser().resolve()
        for dirpath, dirnames, filenames in os.walk(root):
            # Hidden folders (ours included: .inkframe) and the dataset being filled are skipped.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and Path(dirpath, d).resolve() != Path(self.request.out_dir).resolve())
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                yield Post(source=self.name, post_id=path.relative_to(root).as_posix(), file_url=None,
                           tags=TagGroups(general=read_caption_tags(path)), title="",
                           page_url=path.as_uri(), local_path=path)

    def fetch(self, post: Post, part: Path) -> tuple[str, int]:
        assert post.local_path is not None
        try:
            shutil.copyfile(post.local_path, part)
        except FileNotFoundError as error:
            raise DownloadFailed("the file disappeared") from error
        except OSError as error:
            part.unlink(missing_ok=True)
            raise write_error(error, part.parent) from error
        digest = hashlib.md5()
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest(), part.stat().st_size
