"""The dataset's memory: every post ever seen, its hashes, status and rejection reason (SQLite, WAL).

A re-run (or a run after a crash) asks the manifest before downloading anything. Keeping an image is
a small protocol that survives ``kill -9`` at any point:

1. the row becomes ``writing`` (committed) with the file name it will get;
2. caption, sidecar and image are written (each atomically: temp file, fsync, rename);
3. the row becomes ``kept``.

On open, rows still ``writing`` belong to a run that died between 1 and 3: their files are deleted and
the row forgotten, so the post is processed again from scratch and no half-written image survives.
Each status change is its own transaction; WAL lets the tab read while a collection writes.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

SCHEMA_VERSION = 1
STATUSES = ("writing", "kept", "rejected", "failed", "removed", "trimmed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    source     TEXT NOT NULL,
    post_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    reason     TEXT,
    stem       TEXT UNIQUE,
    ext        TEXT,
    md5        TEXT,
    phash      TEXT,
    width      INTEGER,
    height     INTEGER,
    sharpness  REAL,
    colour_std REAL,
    rating     TEXT,
    score      INTEGER,
    file_url   TEXT,
    seq        INTEGER,
    updated    REAL NOT NULL,
    PRIMARY KEY (source, post_id)
);
CREATE INDEX IF NOT EXISTS posts_status ON posts (status);
CREATE INDEX IF NOT EXISTS posts_md5 ON posts (md5);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT);
"""
_COLUMNS = ("reason", "stem", "ext", "md5", "phash", "width", "height", "sharpness", "colour_std",
            "rating", "score", "file_url")


@dataclass(frozen=True)
class ManifestRow:
    source: str
    post_id: str
    status: str
    reason: Optional[str]
    stem: Optional[str]
    ext: Optional[str]
    md5: Optional[str]
    phash: Optional[int]
    width: Optional[int]
    height: Optional[int]
    sharpness: Optional[float]
    colour_std: Optional[float]
    rating: Optional[str]
    score: Optional[int]
    file_url: Optional[str]
    seq: Optional[int]

    @property
    def file_name(self) -> str:
        return f"{self.stem}{self.ext}"


def _row(record: sqlite3.Row) -> ManifestRow:
    values = dict(record)
    values.pop("updated", None)
    phash = values.get("phash")
    values["phash"] = int(phash, 16) if phash else None
    return ManifestRow(**values)


class Manifest:
    """One connection to ``<dataset>/.inkframe/manifest.sqlite3``; open one per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process (the WAL is in the OS's hands); only a power
        # cut can lose the last commits, and step 3 of the keep protocol makes that harmless.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO info VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading -----------------------------------------------------------------------------------

    def get(self, source: str, post_id: str) -> Optional[ManifestRow]:
        record = self._db.execute("SELECT * FROM posts WHERE source=? AND post_id=?",
                                  (source, post_id)).fetchone()
        return _row(record) if record else None

    def by_stem(self, stem: str) -> Optional[ManifestRow]:
        record = self._db.execute("SELECT * FROM posts WHERE stem=?", (stem,)).fetchone()
        return _row(record) if record else None

    def rows(self, status: str, *, newest_first: bool = False, limit: int = -1) -> list[ManifestRow]:
        order = "seq DESC" if newest_first else "seq, updated"
        cursor = self._db.execute(f"SELECT * FROM posts WHERE status=? ORDER BY {order} LIMIT ?",
                                  (status, limit))
        return [_row(r) for r in cursor]

    def count(self, status: str = "kept") -> int:
        return self._db.execute("SELECT COUNT(*) FROM posts WHERE status=?", (status,)).fetchone()[0]

    def hashes(self) -> Iterator[tuple[Optional[str], Optional[int]]]:
        """MD5 and pHash of every image in the dataset or removed from it by the artist."""
        for md5, phash in self._db.execute(
                "SELECT md5, phash FROM posts WHERE status IN ('kept', 'removed') ORDER BY seq"):
            yield md5, (int(phash, 16) if phash else None)

    def counts(self) -> dict[str, dict[str, int]]:
        """Kept per source, rejected per reason, and every status, for dataset.json and the tab."""
        by_source = dict(self._db.execute(
            "SELECT source, COUNT(*) FROM posts WHERE status='kept' GROUP BY source ORDER BY source"))
        by_reason = dict(self._db.execute(
            "SELECT reason, COUNT(*) FROM posts WHERE status IN ('rejected', 'failed') "
            "GROUP BY reason ORDER BY COUNT(*) DESC, reason"))
        by_status = dict(self._db.execute("SELECT status, COUNT(*) FROM posts GROUP BY status"))
        return {"kept_by_source": by_source, "rejected_by_reason": by_reason, "by_status": by_status}

    # --- writing -----------------------------------------------------------------------------------

    def record(self, source: str, post_id: str, status: str, **values: object) -> None:
        """Insert or update one post; columns not given keep their stored value."""
        if status not in STATUSES:
            raise ValueError(f"unknown manifest status {status!r}")
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown manifest columns {sorted(unknown)}")
        if isinstance(values.get("phash"), int):
            values["phash"] = f"{values['phash']:016x}"
        names = ["status", "updated", *values]
        params = [status, time.time(), *values.values()]
        sets = ", ".join(f"{name}=excluded.{name}" for name in names)
        self._db.execute(
            f"INSERT INTO posts (source, post_id, {', '.join(names)}) "
            f"VALUES (?, ?, {', '.join('?' for _ in names)}) "
            f"ON CONFLICT (source, post_id) DO UPDATE SET {sets}",
            (source, post_id, *params))

    def mark_kept(self, source: str, post_id: str) -> None:
        """Step 3: the files are in place; ``seq`` orders the dataset for a deterministic trim."""
        self._db.execute(
            "UPDATE posts SET status='kept', reason=NULL, updated=?, "
            "seq=(SELECT COALESCE(MAX(seq), 0) + 1 FROM posts) WHERE source=? AND post_id=?",
            (time.time(), source, post_id))

    def set_status(self, stem: str, status: str, reason: Optional[str] = None) -> None:
        self._db.execute("UPDATE posts SET status=?, reason=?, updated=? WHERE stem=?",
                         (status, reason, time.time(), stem))

    def forget(self, source: str, post_id: str) -> None:
        self._db.execute("DELETE FROM posts WHERE source=? AND post_id=?", (source, post_id))
