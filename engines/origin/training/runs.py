"""Every run in ``runs/`` as the Training tab lists it, and starting or steering one.

A run's state is judged from its folder alone (``status.json``, the checkpoints, the logs) and a
check that its process is alive which a reused pid cannot fool (``run_control.ProcessId``), so
the studio can be restarted, or the browser closed, at any time and find every run as it is:

    queued    waiting for another run to finish (its place in the queue)
    starting  set-up: data, VAE latents, model
    running   training (step N of M)
    finished  all its epochs (or --max-steps) done
    stopped   by the artist; resume continues from its newest checkpoint
    crashed   an error, or the process vanished (kill -9, a power cut): at step N, with the last
              error line; resume continues from its newest checkpoint

Each run is ``python app.py train ...`` in its own process, detached from the studio (a new
session on Linux and macOS, a detached process group on Windows): the studio's exit, a closed
terminal or Ctrl+C in it never reaches the run. Steering goes through the folder's control flags.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from engines.errors import InvalidRequestError
from engines.files import mtime, tail_lines
from engines.origin.training.run_control import ControlFlags, ProcessId, StatusFile, read_status

ACTIVE = ("queued", "starting", "running")
APP = Path(__file__).resolve().parents[3] / "app.py"


@dataclass(frozen=True)
class RunInfo:
    name: str
    path: Path
    state: str  # see the module docstring; "new" for a folder no process has written to yet
    step: int = 0
    total_steps: Optional[int] = None
    epoch: float = 0.0
    epochs: Optional[int] = None
    error: str = ""  # crashed: the last error line
    queue_position: Optional[int] = None
    process: Optional[ProcessId] = None
    checkpoints: int = 0
    newest_checkpoint: Optional[str] = None
    updated_at: float = 0.0
    stop_requested_at: Optional[float] = None  # a graceful stop on its way

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def describe(self) -> str:
        """One line for the runs list: ``crashed at step 120: CUDA out of memory ...``."""
        of = f" of {self.total_steps}" if self.total_steps else ""
        if self.state == "queued":
            return f"queued (number {self.queue_position or '?'} in line)"
        if self.state == "running":
            stopping = " (stopping...)" if self.stop_requested_at else ""
            return f"running: step {self.step}{of}, epoch {self.epoch:.1f}{stopping}"
        if self.state == "crashed":
            return f"crashed at step {self.step}: {self.error or 'the process ended without a word'}"
        if self.state in ("finished", "stopped"):
            return f"{self.state} at step {self.step}{of}"
        return self.state


def last_error_line(run_dir: Path) -> str:
    """The newest ERROR line of logs/error.log, without its timestamp ('' if none)."""
    for line in reversed(tail_lines(Path(run_dir) / "logs" / "error.log")):  # a days-long log: its tail only
        if " ERROR " in line:
            return line.split(" ERROR ", 1)[1].strip()[:300]
    return ""


def judge(run_dir: Path) -> RunInfo:
    """The run's state from its folder; see the module docstring."""
    from engines.origin.model import checkpoints

    run_dir = Path(run_dir)
    status = read_status(run_dir) or {}
    found = checkpoints.list_checkpoints(run_dir)
    process = ProcessId.from_dict(status)
    state = str(status.get("state") or "new")
    error = str(status.get("error") or "")
    if state in ACTIVE and (process is None or not process.alive()):
        state = "crashed"  # the process is gone without saying so: killed, or the power went
        error = error or last_error_line(run_dir) or "the process ended unexpectedly (killed, or the computer " \
                                                       "lost power)"
    if state == "new" and found:
        state = "stopped"  # made by an older studio, or status.json lost: it can resume all the same
    stop_file = run_dir / "control" / "stop"
    # The status is written every few seconds; a checkpoint may be newer than its last word.
    step = max(int(status.get("step") or 0), found[-1].step if found else 0)
    return RunInfo(
        name=run_dir.name, path=run_dir, state=state, step=step,
        total_steps=status.get("total_steps"), epoch=float(status.get("epoch") or 0.0),
        epochs=status.get("epochs"), error=error, queue_position=status.get("queue_position"),
        process=process, checkpoints=len(found), newest_checkpoint=found[-1].path.name if found else None,
        updated_at=float(status.get("updated_at") or 0.0),
        stop_requested_at=mtime(stop_file) if state in ACTIVE else None,
    )


def list_runs(runs_root: Path) -> list[RunInfo]:
    """Every run folder under ``runs_root``: active runs first, then the most recently updated."""
    root = Path(runs_root)
    runs = [judge(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    return sorted(runs, key=lambda r: (not r.active, -max(r.updated_at, mtime(r.path) or 0.0)))


# -- starting and steering ------------------------------------------------------------------------------
def train_command(settings: Any, run_dir: Path, *, data: Optional[Path] = None, config: Optional[Path] = None,
                  resume: bool = False, extra: Sequence[str] = (), python: str = sys.executable) -> list[str]:
    """The ``app.py train`` command line of a run, with the studio's machine settings."""
    command = [python, str(APP), "train", "--run", str(run_dir)]
    if data is not None:
        command += ["--data", str(data)]
    if config is not None:
        command += ["--config", str(config)]
    if resume:
        command.append("--resume")
    command += ["--data-dir", str(settings.data_dir)]
    if settings.cpu:
        command.append("--cpu")
    if settings.offline:
        command.append("--offline")
    if settings.precision != "auto":
        command += ["--precision", settings.precision]
    if settings.vram_limit_gb is not None:
        command += ["--vram-limit", str(settings.vram_limit_gb)]
    if settings.ram_limit_gb is not None:
        command += ["--ram-limit", str(settings.ram_limit_gb)]
    return command + list(extra)


def launch(command: Sequence[str], run_dir: Path, *, env: Optional[dict[str, str]] = None) -> ProcessId:
    """Start ``command`` detached from this process, its output in ``<run>/logs/console.log``."""
    run_dir = Path(run_dir)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    ControlFlags(run_dir).clear()  # a stop left from an earlier session must not stop this one
    options: dict[str, Any] = {}
    if os.name == "nt":
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
    else:
        options["start_new_session"] = True
    with open(run_dir / "logs" / "console.log", "ab") as console:
        process = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                   cwd=str(APP.parent), env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                   close_fds=True, **options)
    identity = ProcessId.of(process.pid) or ProcessId(process.pid, time.time(), "")
    # Until the new process writes its own status (its imports take a second or two), this says it lives.
    StatusFile(run_dir, identity).write("starting", step=_newest_step(run_dir))
    return identity


def stop(run_dir: Path) -> None:
    """Graceful: a checkpoint at the next step, then the process ends (forced after a minute)."""
    ControlFlags(run_dir).request("stop")


def save_now(run_dir: Path) -> None:
    ControlFlags(run_dir).request("save")


def sample_now(run_dir: Path) -> None:
    ControlFlags(run_dir).request("sample")


def force_stop(run_dir: Path, *, timeout_s: float = 10.0) -> bool:
    """End the run's process (and its children) now; its newest checkpoint stays. True if it ended."""
    import psutil

    info = judge(run_dir)
    if info.process is None or not info.active or not info.process.alive():
        return False
    try:
        root = psutil.Process(info.process.pid)
        family = root.children(recursive=True) + [root]
        for process in family:
            process.kill()
        psutil.wait_procs(family, timeout=timeout_s)
    except psutil.Error:
        pass
    StatusFile(run_dir, info.process).write("stopped", step=info.step, note="force-stopped by the artist")
    ControlFlags(run_dir).clear("stop")
    return True


def start(settings: Any, *, data: Path, run_dir: Path, config: Any, env: Optional[dict[str, str]] = None) -> ProcessId:
    """Check a new run as ``app.py train`` would (one sentence for anything wrong), then launch it."""
    from engines.origin.training.request import TrainRequest, check

    check_new_run(run_dir)
    check(TrainRequest(data=Path(data), run=Path(run_dir), config=config))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    config_file = Path(run_dir) / "start-config.json"
    config.save(config_file)
    return launch(train_command(settings, run_dir, data=data, config=config_file), run_dir, env=env)


def resume(settings: Any, run_dir: Path, *, env: Optional[dict[str, str]] = None) -> ProcessId:
    """Continue a stopped or crashed run from its newest checkpoint (or start it over if it has none)."""
    from engines.origin.training.run_control import read_run_record

    info = judge(run_dir)
    if info.active:
        raise InvalidRequestError(f"The run {info.name} is {info.state} already.")
    if info.state == "finished":
        raise InvalidRequestError(f"The run {info.name} has finished all its epochs; start a new run to train more.")
    if not info.checkpoints and read_run_record(run_dir) is None:
        raise InvalidRequestError(f"The run {info.name} has no checkpoint and no record of its dataset; start it anew.")
    return launch(train_command(settings, run_dir, resume=True), run_dir, env=env)


def check_new_run(run_dir: Path) -> None:
    """One sentence for a name that cannot start a new run."""
    info = judge(run_dir)
    if info.active:
        raise InvalidRequestError(f"The run {info.name} is {info.state}; stop it first or choose another name.")
    if info.checkpoints:
        raise InvalidRequestError(f"The run {info.name} already has checkpoints; resume it, or choose a new name.")


def _newest_step(run_dir: Path) -> int:
    from engines.origin.model import checkpoints

    latest = checkpoints.find_latest(run_dir)
    return latest.step if latest is not None else 0
