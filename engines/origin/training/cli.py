"""`python app.py train`: train an Origin model, search its hyperparameters, or train the SR enhancer.

    python app.py train --data DIR --run DIR [--resolution 64] [--space auto|pixel|latent] [--vae MODEL]
                        [--epochs N] [--batch-size N]
                        [--config FILE] [--resume] [--stage {main,sr}] [--search N] [--max-steps N]
    accelerate launch [--num_processes 2] app.py train ...     several GPUs or machines

The studio starts this same command as a subprocess, so a crash in training never takes the UI
down. Ctrl+C (or SIGTERM from the studio's Stop button) saves a checkpoint at the next step and
exits; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path
from typing import Any

from engines.errors import InvalidRequestError
from engines.settings import MachineSettings

# Test-only failures (request.FaultInjection) as JSON; an artist never sets this.
FAULTS_ENV = "INKFRAME_TRAIN_FAULTS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", help="the dataset folder: images with same-name .txt captions"
    )
    parser.add_argument("--run", metavar="DIR", required=True,
                        help="the run folder for config, checkpoints, samples, metrics and logs "
                             "(a bare name means <data-dir>/runs/NAME)")
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

    from engines.context import build_engine_context
    from engines.origin.model.config import OriginConfig
    from engines.progress import TqdmProgress, no_progress

    # accelerate logs every file of every checkpoint at INFO; main.log already says what matters.
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    ctx = build_engine_context(settings)
    run_dir = _resolve_folder(args.run, settings.paths.runs, must_exist=False)
    if not args.data and args.resume:
        from engines.origin.model.checkpoints import find_latest

        latest = find_latest(run_dir)
        args.data = latest.meta.get("data") if latest is not None else None  # the dataset it was trained on
    if not args.data:
        raise InvalidRequestError("Give the dataset folder with --data DIR.")
    data = _resolve_folder(args.data, settings.paths.datasets, must_exist=True)
    config = None
    if args.config:
        if not Path(args.config).is_file():
            raise InvalidRequestError(f"The config file {args.config} does not exist.")
        config = OriginConfig.load(Path(args.config))
    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate launch, one bar is enough
    cancel, previous_handlers = _cancel_on_signals()
    progress = TqdmProgress(desc="train", unit="step") if main_process else None
    on_step = progress or no_progress
    try:
        if args.stage == "sr":
            return _run_sr(args, data, run_dir, ctx, on_step, cancel, main_process)
        from engines.origin.training.request import TrainRequest

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
        if args.search is not None:
            return _run_search(request, args.search, ctx, on_step, cancel, main_process)
        from engines.origin.training.trainer import train

        result = train(request, ctx, on_step=on_step, cancel=cancel)
    finally:
        if progress is not None:
            progress.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    if main_process:
        print(f"Trained {result.steps} steps ({result.epochs} epochs) in {result.seconds:.0f} s; newest "
              f"checkpoint: {result.checkpoint}. Generate with: python app.py generate --model {run_dir} "
              '--prompt "..." --output panel.png')
    return 0


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
