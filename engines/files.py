"""Files on disk: writing one so that a crash or a power cut leaves the old version or the new one,
never half, and noticing when a file was replaced behind the studio's back."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable[[Path], None], *, durable: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it over ``path``.

    ``durable`` fsyncs before the rename, so the new content survives a power cut too; a cache
    that can recompute its files skips it. The temporary name is unique per process and call,
    so DataLoader workers and several training processes never write the same temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data), durable=durable)


def tail_lines(path: Path, max_bytes: int = 65536) -> list[str]:
    """The last lines of a text file that may be huge (a days-long log), reading ``max_bytes`` at most.

    A first line cut in half by the limit is left out; a missing file gives no lines."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > max_bytes else lines


def mtime(path: Path) -> float | None:
    """The file's modification time, None if it is not there."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


@dataclass(frozen=True)
class FileStamp:
    """What some files looked like on disk (size, mtime, inode), to notice when one is replaced.

    One ``stat`` per file and no reading, so it is cheap enough to check on every use: writing
    over a file changes its mtime, and a new file renamed over it (a download, a copy tool,
    ``atomic_write``) changes its inode. A content hash would also catch a same-size rewrite
    within one tick of the file system's clock, but costs reading gigabytes per check.
    """

    paths: tuple[Path, ...]
    states: tuple[tuple[int, int, int] | None, ...]  # (size, mtime_ns, inode) per path; None: missing

    @classmethod
    def of(cls, paths: Iterable[Path | str]) -> FileStamp:
        found = tuple(Path(p) for p in paths)
        return cls(found, tuple(_file_state(p) for p in found))

    def changed(self) -> bool:
        """True when any file differs from when the stamp was taken (or appeared or vanished)."""
        return any(_file_state(p) != state for p, state in zip(self.paths, self.states))

    def again(self) -> FileStamp:
        """A fresh stamp of the same files."""
        return FileStamp.of(self.paths)

    @property
    def missing(self) -> tuple[Path, ...]:
        """The files that did not exist when the stamp was taken."""
        return tuple(p for p, state in zip(self.paths, self.states) if state is None)


def picture_paths(folder: Path, seeds: Iterable[int], stamp: str) -> list[Path]:
    """``<stamp>-<seed>.png`` in ``folder`` for each seed, never a file that exists or a name given twice
    (``-2``, ``-3``... are added): a picture made in the same second with the same seed replaces nothing."""
    paths: list[Path] = []
    for seed in seeds:
        path = Path(folder) / f"{stamp}-{seed}.png"
        n = 1
        while path.exists() or path in paths:
            n += 1
            path = Path(folder) / f"{stamp}-{seed}-{n}.png"
        paths.append(path)
    return paths
