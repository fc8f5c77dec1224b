"""One GPU job at a time, across the studio's threads and the CLI's processes.

An in-process lock orders the UI's jobs; a lock file in the data dir's ``runtime/`` makes a
``python app.py generate`` in a terminal wait for (or refuse to clash with) the studio. Training
runs in its own process and instead *reserves* a share of the budget (``Reservations``), since
holding the lock for days would block every preview.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from engines.errors import StudioError

log = logging.getLogger(__name__)


class GpuBusyError(StudioError):
    exit_code = 75  # EX_TEMPFAIL: try again later


@dataclass(frozen=True)
class GpuOwner:
    job: str
    pid: int
    since: float


class GpuLock:
    def __init__(self, runtime_dir: Path) -> None:
        from filelock import FileLock

        runtime_dir.mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.RLock()
        self._file_lock = FileLock(str(runtime_dir / "gpu.lock"))
        self._owner_file = runtime_dir / "gpu-owner.json"
        self._owner: Optional[GpuOwner] = None
        self._depth = 0

    @property
    def owner(self) -> Optional[GpuOwner]:
        """Who holds the GPU in this process (None when idle here)."""
        return self._owner

    def _other_process_owner(self) -> str:
        try:
            data = json.loads(self._owner_file.read_text())
            return f"'{data['job']}' (process {data['pid']})"
        except (OSError, ValueError, KeyError):
            return "another studio process"

    @contextmanager
    def hold(self, job: str, timeout: Optional[float] = None) -> Iterator[GpuOwner]:
        wait = -1 if timeout is None else timeout
        if not self._thread_lock.acquire(timeout=wait):
            current = self._owner.job if self._owner else "another job"
            raise GpuBusyError(f"The GPU is busy with '{current}'; wait for it to finish or stop it.")
        try:
            if self._depth == 0:
                from filelock import Timeout

                try:
                    self._file_lock.acquire(timeout=wait)
                except Timeout:
                    raise GpuBusyError(
                        f"The GPU is busy with {self._other_process_owner()}; wait for it to finish."
                    ) from None
                self._owner = GpuOwner(job, os.getpid(), time.time())
                # Both ends of every hold, on one clock: a shared studio's load test reads them back.
                log.debug("GPU lock taken by '%s' at %.6f", job, time.monotonic())
                try:
                    self._owner_file.write_text(json.dumps({"job": job, "pid": os.getpid()}))
                except OSError:
                    pass  # the name is a courtesy for other processes' messages
            self._depth += 1
            try:
                yield self._owner  # type: ignore[misc]
            finally:
                self._depth -= 1
                if self._depth == 0:
                    log.debug("GPU lock released by '%s' at %.6f", job, time.monotonic())
                    self._owner = None
                    self._file_lock.release()
        finally:
            self._thread_lock.release()


class Reservations:
    """Budget shares held by other processes (a training run), one small JSON file each."""

    def __init__(self, runtime_dir: Path) -> None:
        self._dir = runtime_dir / "reservations"

    @contextmanager
    def reserve(self, name: str, nbytes: int) -> Iterator[None]:
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / f"{os.getpid()}-{threading.get_ident()}.json"
        path.write_text(json.dumps({"name": name, "bytes": int(nbytes), "pid": os.getpid()}))
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def held_by_others(self) -> list[tuple[str, int]]:
        """Live reservations of other processes; files of dead processes are cleaned up."""
        import psutil

        out = []
        for path in sorted(self._dir.glob("*.json")) if self._dir.exists() else []:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            pid = int(data.get("pid", -1))
            if pid == os.getpid():
                continue
            if not psutil.pid_exists(pid):
                path.unlink(missing_ok=True)
                continue
            out.append((str(data.get("name", "?")), int(data.get("bytes", 0))))
        return out
