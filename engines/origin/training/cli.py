"""`python app.py train`: train an Origin model, search its hyperparameters, or train the SR enhancer.

    python app.py train --data DIR --run DIR [--resolution 64] [--space auto|pixel|latent] [--vae MODEL]
                        [--epochs N] [--batch-size N]
                        [--config FILE] [--resume] [--stage {main,sr}] [--search N] [--max-steps N]
    python app.py train --dashboard RUN                        a live view in the terminal
    python app.py train --chart RUN --output chart.png         the whole run's progress chart
    accelerate launch [--num_processes 2] app.py train ...     several GPUs or machines

The studio starts this same command as a detached subprocess, so a crash in training never takes
the UI down and closing the browser never stops a run. One run trains at a time on a machine: a
second waits its turn (``run_control.TrainingQueue``). Ctrl+C, SIGTERM or ``<run>/control/stop``
(the studio's Stop button) saves a checkpoint at the next step and exits; a stop that has not
finished within a minute ends the process (``STOP_GRACE_S``). ``--resume`` continues from the
newest checkpoint, or starts over from the recorded dataset and settings when there is none yet.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path
from typing import Any

from engines.errors import Cancelled, InvalidRequestError
from engines.settings import MachineSettings

# Test-only failures (request.FaultInjection) as JSON; an artist never sets this.
FAULTS_ENV = "INKFRAME_TRAIN_FAULTS"
STOP_GRACE_S = 60.0  # a graceful stop that takes longer than this (a step stuck somewhere) is forced


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", help="the dataset folder: images with same-name .txt captions"
    )
    parser.add_argument("--run", metavar="DIR",
                        help="the run folder for config, checkpoints, samples, metrics and logs "
                             "(a bare name means <data-dir>/runs/NAME)")
    parser.add_argument("--dashboard", metavar="RUN",
                        help="show a run's progress live in this terminal (Ctrl+C leaves; the run goes on)")
    parser.add_argument("--chart", metavar="RUN", help="write a run's 3x3 progress chart (PNG) to --output")
    parser.add_argument("--output", metavar="FILE", help="--chart: the PNG to write (default RUN/chart.png)")
    parser.add_argument("--resolution", type=int, metavar="PX", help="training size in pixels (default 64)")
    parser.add_argument("--space", choices=("auto", "pixel", "latent"),
                        help="draw pixels, or the latents of a frozen VAE (512 px at the cost of 64 px); "
                             "auto (default): latent above 128 px")
    parser.add_argument("--vae", metavar="MODEL",
                        help="latent space: the VAE, a hub id, folder or file (default stabilityai/sd-vae-ft-mse)")
    parser.add_argument("--epochs", type=int, metavar="N", help="passes over the dataset (default 100)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="images per step (default 8)")
    parser.add_argument(
        "--config", metavar="FILE", help="an OriginConfig JSON file (e.g. search/best_config.json)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest good checkpoint of the run"
    )
    parser.add_argument("--stage", choices=("main", "sr"), default="main",
                        help="main: the diffusion model; sr: the super-resolution enhancer")
    parser.add_argument(
        "--search", type=int, metavar="N", help="run N short trials to find good hyperparameters"
    )
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="stop after N optimizer steps (length of each --search trial, default 200)")
    parser.add_argument(
        "--sr-scale", type=int, choices=(2, 4), default=2, help="--stage sr: 2x or 4x (default 2)"
    )


def _resolve_folder(value: str, under: Path, must_exist: bool) -> Path:
    """A path as given, or a bare name inside the studio's data folder (runs/, datasets/)."""
    path = Path(value).expanduser()
    bare = len(path.parts) == 1 and not path.exists()
    if bare and (not must_exist or (under / value).is_dir()):
        return under / value
    return path


def _faults() -> Any:
    from engines.origin.training.request import FaultInjection

    text = os.environ.get(FAULTS_ENV, "")
    return FaultInjection(**json.loads(text)) if text else FaultInjection()


def _cancel_on_signals() -> tuple[Any, dict]:
    """First Ctrl+C / SIGTERM: stop cleanly at the next step (checkpoint saved); second: stop now.

    Returns the token and the previous handlers, which ``run`` puts back when it ends.
    """
    from engines.progress import CancelToken

    token = CancelToken()
    previous: dict = {}

    def handler(signum, frame):
        if token.cancelled:
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        token.cancel()
        print(
            "\nStopping after this step and saving a checkpoint (Ctrl+C again to stop at once)...", flush=True
        )

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (run() called from a worker thread)
            pass
    return token, previous


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    import logging

    # accelerate logs every file of every checkpoint at INFO; main.log already says what matters.
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    if args.dashboard or args.chart:
        return _run_view(args, settings)
    if not args.run:
        raise InvalidRequestError("Give the run folder with --run DIR (or a run to watch with --dashboard RUN).")
    run_dir = _resolve_folder(args.run, settings.paths.runs, must_exist=False)
    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate launch, one bar is enough
    try:
        return _train(args, settings, run_dir, main_process)
    except BaseException as error:
        if main_process:
            _note_end(run_dir, error)
        raise


def _restart_record(args: argparse.Namespace, run_dir: Path) -> None:
    """``--resume`` of a run killed before its first checkpoint: start it over, from its run.json."""
    from engines.origin.training.run_control import read_run_record

    record = read_run_record(run_dir) or {}
    args.data = args.data or record.get("data")
    if not args.data:
        raise InvalidRequestError(f"The run folder {run_dir} has no checkpoint and no record of its dataset; "
                                  "start it again with --data DIR.")
    if not args.config and (run_dir / "config.json").is_file():
        args.config = str(run_dir / "config.json")
    args.resume = False
    print(f"{run_dir.name} has no checkpoint yet, so it starts over from step 0 with its recorded dataset "
          f"({args.data}) and settings.", flush=True)


def _train(args: argparse.Namespace, settings: MachineSettings, run_dir: Path, main_process: bool) -> int:
    from engines.context import build_engine_context
    from engines.origin.model.config import OriginConfig
    from engines.progress import TqdmProgress, no_progress

    if args.resume:
        from engines.origin.model.checkpoints import find_latest

        latest = find_latest(run_dir)
        if latest is None:
            _restart_record(args, run_dir)
        elif not args.data:
            args.data = latest.meta.get("data")  # the dataset it was trained on
    if not args.data:
        raise InvalidRequestError("Give the dataset folder with --data DIR.")
    data = _resolve_folder(args.data, settings.paths.datasets, must_exist=True)
    config = None
    if args.config:
        if not Path(args.config).is_file():
            raise InvalidRequestError(f"The config file {args.config} does not exist.")
        config = OriginConfig.load(Path(args.config))
    from engines.origin.training.request import TrainRequest, check

    request = TrainRequest(
        data=data,
        run=run_dir,
        config=config,
        resolution=args.resolution,
        epochs=args.epochs,
        batch_size=args.batch_size,
        space=args.space,
        vae=args.vae,
        resume=args.resume,
        max_steps=args.max_steps,
        faults=_faults(),
    )
    if args.stage == "main":
        check(request)  # a bad value is one sentence now, not after a wait in the queue
    if main_process and run_dir.is_dir():
        from engines.origin.training.run_control import ControlFlags, ProcessId

        # Flags left by a process that ended before it read them are not for this one; a Stop pressed
        # while this process was starting is.
        ControlFlags(run_dir).clear_older_than(ProcessId.current().started)
    cancel, previous_handlers = _cancel_on_signals()
    watchdog = _StopWatchdog(run_dir, cancel) if main_process else None
    ticket, progress = None, None
    try:
        ticket = _wait_for_turn(settings, run_dir, cancel) if main_process and _single_process() else None
        ctx = build_engine_context(settings)
        progress = TqdmProgress(desc="train", unit="step") if main_process else None
        on_step = progress or no_progress
        if args.stage == "sr":
            return _run_sr(args, data, run_dir, ctx, on_step, cancel, main_process)
        if args.search is not None:
            return _run_search(request, args.search, ctx, on_step, cancel, main_process)
        from engines.origin.training.trainer import train

        result = train(request, ctx, on_step=on_step, cancel=cancel)
    finally:
        if progress is not None:
            progress.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        if ticket is not None:
            ticket[0].leave(ticket[1])
        if watchdog is not None:
            watchdog.close()
    if main_process:
        print(f"Trained {result.steps} steps ({result.epochs} epochs) in {result.seconds:.0f} s; newest "
              f"checkpoint: {result.checkpoint}. Generate with: python app.py generate --model {run_dir} "
              '--prompt "..." --output panel.png')
    return 0


def _single_process() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1


def _wait_for_turn(settings: MachineSettings, run_dir: Path, cancel: Any) -> Any:
    """Take a place in the machine's training queue and wait for it; returns (queue, ticket).

    Runs under ``accelerate launch`` skip this: whoever starts several processes has planned the machine.
    """
    from engines.origin.training.run_control import ControlFlags, StatusFile, TrainingQueue

    queue = TrainingQueue(settings.paths.runtime)
    ticket = queue.join(run_dir)
    flags = ControlFlags(run_dir)
    status = StatusFile(run_dir)

    def waiting(position: int) -> None:
        status.write("queued", queue_position=position)
        print(f"Another training run is using this machine; {run_dir.name} is number {position} in the queue "
              "and starts by itself when its turn comes.", flush=True)

    if not queue.wait(ticket, cancelled=lambda: cancel.cancelled or "stop" in flags.pending(), on_wait=waiting):
        flags.clear("stop")
        raise Cancelled(f"{run_dir.name} left the training queue before it started.")
    return queue, ticket


class _StopWatchdog:
    """Ends the process when a stop asked for (flag file or signal) has not finished in a minute:
    a graceful stop waits for the step to end, and a step can hang (a driver, a network drive)."""

    def __init__(self, run_dir: Path, cancel: Any, grace_s: float = STOP_GRACE_S) -> None:
        import threading

        self.run_dir, self.cancel, self.grace_s = run_dir, cancel, grace_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import time

        from engines.origin.training.run_control import ControlFlags

        flags = ControlFlags(self.run_dir)
        asked = None
        while not self._done.wait(1.0):
            if asked is None and (self.cancel.cancelled or "stop" in flags.pending()):
                asked = time.monotonic()
            if asked is not None and time.monotonic() - asked > self.grace_s:
                _note_end(self.run_dir, Cancelled(f"the stop did not finish within {self.grace_s:.0f} s and was "
                                                  "forced; the newest checkpoint is intact"))
                flags.clear("stop")
                os._exit(137)

    def close(self) -> None:
        self._done.set()


def _note_end(run_dir: Path, error: BaseException) -> None:
    """status.json for an end the trainer did not report itself (a refused request, a stop while
    queued, a forced stop): only for a run folder that exists, so a typo makes no folder."""
    from engines.origin.training.run_control import ProcessId, StatusFile, read_status
    from engines.origin.training.trainer import one_line

    if not run_dir.is_dir():
        return
    status = read_status(run_dir) or {}
    mine = ProcessId.from_dict(status) == ProcessId.current()
    if mine and status.get("state") in ("finished", "stopped", "crashed") and "forced" not in str(error):
        return
    fields = {k: status[k] for k in ("step", "total_steps", "epoch", "epochs") if k in status and mine}
    try:
        if isinstance(error, (Cancelled, KeyboardInterrupt)):
            StatusFile(run_dir).write("stopped", note=str(error), **fields)
        else:
            StatusFile(run_dir).write("crashed", error=one_line(error), **fields)
    except OSError:
        pass  # the status is a courtesy; the error itself is what the terminal shows


def _run_view(args: argparse.Namespace, settings: MachineSettings) -> int:
    from engines.origin.training.runs import judge

    run_dir = _resolve_folder(args.dashboard or args.chart, settings.paths.runs, must_exist=True)
    if not run_dir.is_dir():
        raise InvalidRequestError(f"There is no run folder {run_dir}.")
    if args.chart:
        from engines.origin.training.chart import write_chart

        output = Path(args.output).expanduser() if args.output else run_dir / "chart.png"
        print(f"Chart written to {write_chart(run_dir, output)}")
        return 0
    from engines.origin.training.dashboard import follow

    return follow(run_dir, is_running=lambda: judge(run_dir).active)


def _run_search(request: Any, trials: int, ctx: Any, on_step: Any, cancel: Any, main_process: bool) -> int:
    from engines.origin.training.search import run_search

    result = run_search(request, trials, ctx, on_step=on_step, cancel=cancel)
    if main_process:
        for trial in result.trials:
            p = trial.params
            print(
                f"trial {trial.index} ({trial.kind}): score {trial.score:.4f}  lr {p.learning_rate:.2e}  "
                f"batch {p.batch_size}  weight decay {p.weight_decay:.2e}  betas ({p.beta1:.3f}, {p.beta2})  "
                f"dropout {p.dropout:.3f}"
            )
        print(
            f"Best: trial {result.best.index} (score {result.best.score:.4f}); its config is in "
            f"{result.best_config_path}. Train with: python app.py train --data {request.data} --run NEW_RUN "
            f"--config {result.best_config_path}"
        )
    return 0


def _run_sr(args: argparse.Namespace, data: Path, run_dir: Path, ctx: Any, on_step: Any, cancel: Any,
            main_process: bool) -> int:
    from engines.origin.training.sr_stage import (
        DEFAULT_EPOCHS,
        DEFAULT_RESOLUTION,
        SrRequest,
        train_sr,
    )

    if args.search is not None or args.resume:
        raise InvalidRequestError(
            "--stage sr trains from scratch in minutes; leave out --search and --resume."
        )
    request = SrRequest(
        data=data,
        run=run_dir,
        scale=args.sr_scale,
        resolution=args.resolution or DEFAULT_RESOLUTION,
        epochs=args.epochs or DEFAULT_EPOCHS,
        batch_size=args.batch_size or 8,
        max_steps=args.max_steps,
    )
    result = train_sr(request, ctx, on_step=on_step, cancel=cancel)
    if main_process:
        print(f"Super-resolution {args.sr_scale}x trained ({result.steps} steps): L1 {result.loss:.4f} vs "
              f"bicubic {result.bicubic_loss:.4f}; saved {result.path}. `generate --upscale {args.sr_scale}` "
              "uses it.")
    return 0
