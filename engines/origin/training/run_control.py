"""The run folder as the line between a training process and whoever watches or steers it.

    <run>/run.json        how the run was started (dataset, settings): a run killed before its first
                          checkpoint restarts from it (``train --run R --resume``)
    <run>/status.json     the training process's own account: state, step, and its process id with
                          that process's start time, so a pid reused by another program never
                          passes for the run (``ProcessId.alive``)
    <run>/control/        ``stop``, ``save``, ``sample``: flag files anyone may create (the Training
                          tab, a terminal: ``touch runs/R/control/save``); the trainer looks at the
                          top of each step and deletes each flag it handled

Steering through files rather than signals or a socket: it is the same on Windows (where a
signal cannot stop a process gracefully), it survives a studio restart, it needs no port, and a
multi-GPU run decides once on the main process and tells the others in the step's collective.

``TrainingQueue`` keeps one training run at a time on a machine: each ``app.py train`` takes a
ticket in ``<data>/runtime/training-queue/`` and starts when its ticket is the oldest one whose
process still lives; the ticket goes when the process ends, however it ends.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from engines.files import atomic_write_bytes, mtime

CONTROL_DIR = "control"
COMMANDS = ("stop", "save", "sample")
# What the training process writes; "crashed" is also what a reader concludes from a "running"
# status whose process is gone (kill -9, a power cut).
STATES = ("queued", "starting", "running", "finished", "stopped", "crashed")
STATUS_EVERY_S = 2.0  # a step's status update is skipped if the last one is this recent
_START_TIME_SLACK_S = 1.0  # create_time is a float from /proc or the OS: equal to within rounding


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Not fsynced: a status lost to a power cut is re-derived (the pid is gone: "crashed").
    atomic_write_bytes(path, json.dumps(data, indent=1).encode("utf-8"), durable=False)


# -- the process behind a run -----------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessId:
    """A process as the OS knows it: its pid alone is reused once it ends, pid + start time is not."""

    pid: int
    started: float  # psutil's create_time(), seconds since the epoch
    host: str

    @classmethod
    def current(cls) -> "ProcessId":
        import psutil

        return cls(os.getpid(), psutil.Process().create_time(), socket.gethostname())

    @classmethod
    def of(cls, pid: int) -> Optional["ProcessId"]:
        import psutil

        try:
            return cls(pid, psutil.Process(pid).create_time(), socket.gethostname())
        except (psutil.Error, OSError):
            return None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Optional["ProcessId"]:
        try:
            return cls(int(data["pid"]), float(data["pid_started"]), str(data.get("host", "")))
        except (KeyError, TypeError, ValueError):
            return None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "pid_started": self.started, "host": self.host}

    def alive(self) -> bool:
        """True while this very process runs (on another machine: unknown, so assumed alive)."""
        import psutil

        if self.host and self.host != socket.gethostname():
            return True  # a multi-node run's folder on shared storage: its status says the rest
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started) > _START_TIME_SLACK_S:
                return False  # the pid now belongs to another program
            return process.status() != psutil.STATUS_ZOMBIE  # ended, not yet reaped by its parent
        except (psutil.Error, OSError):
            return False


# -- steering flags -----------------------------------------------------------------------------------
class ControlFlags:
    """``<run>/control/<command>`` files: created by whoever steers, deleted by the trainer."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(run_dir) / CONTROL_DIR

    def request(self, command: str) -> None:
        if command not in COMMANDS:
            raise ValueError(f"unknown run command {command!r}; one of {', '.join(COMMANDS)}")
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / command, f"{time.time():.3f}\n".encode(), durable=False)

    def pending(self) -> set[str]:
        return {c for c in COMMANDS if (self.folder / c).exists()}

    def clear(self, *commands: str) -> None:
        for command in commands or COMMANDS:
            (self.folder / command).unlink(missing_ok=True)

    def clear_older_than(self, when: float) -> None:
        """Drop flags written before ``when`` (this process's start): meant for one that ended first."""
        for command in COMMANDS:
            path = self.folder / command
            try:
                if path.stat().st_mtime < when:
                    path.unlink(missing_ok=True)
            except OSError:
                pass


# -- the run's own account ----------------------------------------------------------------------------
def read_status(run_dir: Path) -> Optional[dict[str, Any]]:
    return _read_json(Path(run_dir) / "status.json")


class StatusFile:
    """``<run>/status.json`` of the process writing it; each write keeps the earlier fields."""

    def __init__(self, run_dir: Path, process: Optional[ProcessId] = None) -> None:
        self.path = Path(run_dir) / "status.json"
        self.process = process or ProcessId.current()
        self.fields: dict[str, Any] = {}
        self._written_at = 0.0

    def write(self, state: str, **fields: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        now = time.time()
        self.fields.update(fields)
        self.fields.setdefault("started_at", now)
        self.fields.update(state=state, updated_at=now, **self.process.to_dict())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(self.path, self.fields)
        self._written_at = time.monotonic()

    def tick(self, **fields: Any) -> None:
        """A running run's progress, at most every ``STATUS_EVERY_S`` (a step can take 50 ms)."""
        self.fields.update(fields)
        if time.monotonic() - self._written_at >= STATUS_EVERY_S:
            self.write(self.fields.get("state", "running"))


# -- how the run was started ---------------------------------------------------------------------------
def write_run_record(run_dir: Path, **record: Any) -> None:
    """``<run>/run.json``: the dataset and settings of the newest start (``created_at``: the first)."""
    path = Path(run_dir) / "run.json"
    previous = _read_json(path) or {}
    merged = {**previous, **record, "created_at": previous.get("created_at", time.time())}
    _write_json(path, {k: (str(v) if isinstance(v, Path) else v) for k, v in merged.items()})


def read_run_record(run_dir: Path) -> Optional[dict[str, Any]]:
    return _read_json(Path(run_dir) / "run.json")


# -- one training run at a time -----------------------------------------------------------------------
@dataclass(frozen=True)
class Ticket:
    path: Path
    run: str
    process: ProcessId


class TrainingQueue:
    """First come, first served over the processes of one machine (see the module docstring)."""

    def __init__(self, runtime_dir: Path) -> None:
        self.folder = Path(runtime_dir) / "training-queue"

    def join(self, run_dir: Path, process: Optional[ProcessId] = None) -> Ticket:
        process = process or ProcessId.current()
        self.folder.mkdir(parents=True, exist_ok=True)
        # time_ns first: the names sort in arrival order; the pid keeps two same-instant tickets apart.
        path = self.folder / f"{time.time_ns():020d}-{process.pid}.json"
        ticket = Ticket(path, str(run_dir), process)
        _write_json(path, {"run": str(run_dir), **process.to_dict()})
        return ticket

    def tickets(self) -> list[Ticket]:
        """Live tickets, oldest first; those of ended processes are removed on the way."""
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            data = _read_json(path)
            process = ProcessId.from_dict(data) if data else None
            if process is None or not process.alive():
                if data is not None or time.time() - (mtime(path) or 0.0) > 60:  # half-written: give it a minute
                    path.unlink(missing_ok=True)
                continue
            out.append(Ticket(path, str(data.get("run", "")), process))
        return out

    def position(self, ticket: Ticket) -> int:
        """0: this ticket's turn; n: n runs go first (-1: the ticket is gone)."""
        for index, other in enumerate(self.tickets()):
            if other.path == ticket.path:
                return index
        return -1

    def wait(self, ticket: Ticket, *, cancelled: Callable[[], bool], on_wait: Callable[[int], None] = lambda n: None,
             poll_s: float = 1.0) -> bool:
        """Block until it is this ticket's turn (True) or ``cancelled()`` (False, ticket left)."""
        told = None
        while True:
            position = self.position(ticket)
            if position == 0:
                return True
            if position < 0:  # removed by hand: take a new place at the end rather than jump the queue
                ticket = self.join(Path(ticket.run), ticket.process)
                continue
            if cancelled():
                self.leave(ticket)
                return False
            if position != told:
                on_wait(position)
                told = position
            time.sleep(poll_s)

    def leave(self, ticket: Ticket) -> None:
        ticket.path.unlink(missing_ok=True)
