"""``MetricsTail``: read a metrics.jsonl that another process is still appending to.

Only the bytes appended since the last read are read; an unfinished last line is kept for next
time; a file that shrank, was replaced or was rewritten in place (a resumed run dropping lines)
starts the reading over and says so. The file is opened for each read and closed at once: on
Windows an open handle would make the trainer's atomic rewrite (``os.replace``) fail.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

MAX_LINE_BYTES = 1 << 20  # a "line" longer than this with no newline is garbage, not a metrics record
READ_CHUNK_BYTES = 1 << 20
_GUARD_BYTES = 64


@dataclass(frozen=True)
class TailBatch:
    records: list[dict[str, Any]]
    reset: bool = False  # the file was replaced, shrank or vanished: forget everything read before
    bad_lines: int = 0  # lines that were not a JSON object (a half line from a crash, garbage)


class MetricsTail:
    """Incremental reader of a JSON-lines file; ``read_new()`` or ``batches()`` for the new records."""

    def __init__(self, path: Path, *, chunk_bytes: int = READ_CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.chunk_bytes = max(1, int(chunk_bytes))
        self._forget()
        self.found = False  # whether the file exists (as of the last read); a vanished file is a reset

    def _forget(self) -> None:
        self.offset = 0
        self._identity: Optional[tuple[int, int]] = None
        self._guard = b""  # the bytes just before ``offset``, re-read to notice an in-place rewrite
        self._partial = b""
        self._skipping = False  # inside an over-long line, dropping bytes up to its newline

    def read_new(self) -> TailBatch:
        """All records appended since the last call, in one batch (tests, small files)."""
        records: list[dict[str, Any]] = []
        reset, bad = False, 0
        for batch in self.batches():
            if batch.reset:
                reset, bad = True, 0
                records.clear()
            records.extend(batch.records)
            bad += batch.bad_lines
        return TailBatch(records, reset, bad)

    def batches(self) -> Iterator[TailBatch]:
        """The new records in batches of about ``chunk_bytes``, so a first read of a days-long run
        never holds all its lines at once; the first batch carries ``reset`` when the file changed."""
        try:
            handle = open(self.path, "rb")
        except OSError:
            if self.found:
                self._forget()
                self.found = False
                yield TailBatch([], reset=True)
            return
        with handle:
            info = os.fstat(handle.fileno())
            identity = (info.st_dev, info.st_ino)
            reset = self._identity is not None and (identity != self._identity or info.st_size < self.offset)
            if not reset and self._guard:
                handle.seek(self.offset - len(self._guard))
                reset = handle.read(len(self._guard)) != self._guard
            if reset:
                self._forget()
            self._identity, self.found = identity, True
            handle.seek(self.offset)
            while True:
                data = handle.read(self.chunk_bytes)
                if not data:
                    break
                self.offset += len(data)
                self._guard = (self._guard + data[-_GUARD_BYTES:])[-_GUARD_BYTES:]
                records, bad = self._parse(data)
                yield TailBatch(records, reset, bad)
                reset = False
            if reset:  # replaced by an empty file
                yield TailBatch([], reset=True)

    def _parse(self, data: bytes) -> tuple[list[dict[str, Any]], int]:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        bad = 0
        if self._skipping:
            if not lines:
                self._partial = b""
                return [], 0
            lines.pop(0)  # the rest of the over-long line
            self._skipping = False
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial, self._skipping = b"", True
            bad += 1
        records = []
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
        return records, bad
