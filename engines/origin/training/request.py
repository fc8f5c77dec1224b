"""What a training run is asked to do: ``TrainRequest``, its checks, and the config it resolves to.

``check(request)`` turns every bad value into one sentence before anything loads, and returns the
run's ``OriginConfig``: the request's, the run's own when resuming, or the defaults, with the
command line's overrides on top. ``trainer.train`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from engines.errors import InvalidRequestError
from engines.origin.model import checkpoints
from engines.origin.model.config import OriginConfig, resolve_space

PRECISIONS = ("auto", "no", "fp16", "bf16")


@dataclass(frozen=True)
class FaultInjection:
    """Failures on purpose, so tests can exercise the recovery paths (never set by an artist;
    the CLI reads them from the INKFRAME_TRAIN_FAULTS environment variable)."""

    pause_in_checkpoint_s: float = 0.0  # sleep inside a checkpoint write, before meta.json
    pause_from_checkpoint: int = 1  # ... from the n-th checkpoint this process writes
    oom_at_step: int = 0  # raise torch.OutOfMemoryError once, in this step
    nan_at_step: int = 0  # make this step's loss NaN


@dataclass(frozen=True)
class TrainRequest:
    data: Path  # the dataset folder (images + same-stem .txt captions)
    run: Path  # the run folder
    config: Optional[OriginConfig] = None  # None: the run's config.json when resuming, else the defaults
    resolution: Optional[int] = None  # overrides config.model.resolution
    epochs: Optional[int] = None  # overrides config.train.epochs (may grow when resuming)
    batch_size: Optional[int] = None  # overrides config.train.batch_size
    space: Optional[str] = None  # overrides config.model.space: auto | pixel | latent
    vae: Optional[str] = None  # overrides config.model.vae (latent space)
    resume: bool = False  # continue from the newest good checkpoint in ``run``
    max_steps: Optional[int] = None  # stop after this many optimizer steps in total (trials, smoke runs)
    write_checkpoints: bool = True  # search trials only need their score
    faults: FaultInjection = field(default_factory=FaultInjection)


@dataclass(frozen=True)
class TrainResult:
    run: Path
    config: OriginConfig
    steps: int  # optimizer steps done in total (including before a resume)
    epochs: int  # completed epochs
    checkpoint: Optional[Path]  # the last one written
    losses: list[float]  # total loss of each step of this session (NaN for skipped ones)
    skipped_steps: int
    oom_recoveries: int
    micro_batch: int
    seconds: float


def resolve_config(request: TrainRequest) -> OriginConfig:
    """The run's configuration: the request's, the run's own when resuming, or the defaults,
    with the command line's overrides on top."""
    run_config = Path(request.run) / "config.json"
    if request.resume:
        latest = checkpoints.find_latest(request.run)
        if latest is None:
            raise InvalidRequestError(
                f"The run folder {request.run} has no finished checkpoint to resume from; "
                "start it without --resume."
            )
        if request.config is not None:
            raise InvalidRequestError("A resumed run keeps the config it was started with (its config.json); "
                                      "leave out --config, or start a new run with it.")
        # The checkpoint's config built the weights being resumed: it wins over any file.
        config = OriginConfig.from_dict(latest.meta["config"])
        space = config.model.space
        if request.space not in (None, "auto", space):
            # A pixel model's weights read and draw 3 colour channels, a latent one's the VAE's 4.
            raise InvalidRequestError(f"The run was trained in {space} space; it cannot resume in {request.space} "
                                      f"space: start a new run with --space {request.space}.")
        if request.vae is not None and space == "latent" and request.vae != config.model.vae:
            raise InvalidRequestError(f"The run was trained in the latent space of the VAE {config.model.vae}; "
                                      "it resumes with that VAE only: leave out --vae, or start a new run.")
        for name, value in (("resolution", request.resolution), ("batch_size", request.batch_size)):
            current = config.model.resolution if name == "resolution" else config.train.batch_size
            if value is not None and value != current:
                raise InvalidRequestError(f"The run was trained with {name.replace('_', ' ')} {current}; "
                                          f"it cannot change to {value} when resuming.")
    else:
        config = request.config or (OriginConfig.load(run_config) if run_config.is_file() else OriginConfig())
    model = (
        config.model if request.resolution is None else replace(config.model, resolution=request.resolution)
    )
    if request.vae is not None and not request.resume:
        model = replace(model, vae=request.vae)
    config = resolve_space(replace(config, model=model), None if request.resume else request.space)
    model = config.model
    train = config.train
    if request.epochs is not None:
        train = replace(train, epochs=request.epochs)
    if request.batch_size is not None:
        train = replace(train, batch_size=request.batch_size)
    return replace(config, model=model, train=train)


def check(request: TrainRequest) -> OriginConfig:
    """Every bad value as one sentence before anything loads; returns the resolved config."""
    from engines.origin.training.data import IMAGE_SUFFIXES

    data, run = Path(request.data).expanduser(), Path(request.run).expanduser()
    if not data.is_dir():
        raise InvalidRequestError(f"The dataset folder {data} does not exist.")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in data.rglob("*") if p.is_file()):
        raise InvalidRequestError(f"The dataset folder {data} has no images ({', '.join(IMAGE_SUFFIXES)}).")
    if run.exists() and not run.is_dir():
        raise InvalidRequestError(f"The run folder {run} is a file; choose a folder.")
    if not request.resume and checkpoints.find_latest(run) is not None:
        raise InvalidRequestError(
            f"The run folder {run} already has checkpoints; add --resume to continue it "
            "or choose a new --run folder."
        )
    if request.max_steps is not None and request.max_steps < 1:
        raise InvalidRequestError(f"The number of steps must be at least 1, not {request.max_steps}.")
    config = resolve_config(request)
    m, t = config.model, config.train
    factor = 2 ** (len(m.channel_mult) - 1)
    if not 16 <= m.resolution <= 1024 or m.resolution % max(8, factor):
        raise InvalidRequestError(
            f"The resolution must be from 16 to 1024 pixels and a multiple of {max(8, factor)}, "
            f"not {m.resolution}."
        )
    for name, value, low in (("epochs", t.epochs, 1), ("batch size", t.batch_size, 1),
                             ("gradient accumulation", t.gradient_accumulation, 1),
                             ("checkpoint interval (epochs)", t.checkpoint_every_epochs, 1),
                             ("number of checkpoints to keep", t.keep_checkpoints, 1)):
        if not isinstance(value, int) or value < low:
            raise InvalidRequestError(f"The {name} must be a whole number of at least {low}, not {value}.")
    if not isinstance(t.safety_checkpoint_minutes, (int, float)) or t.safety_checkpoint_minutes < 0:
        raise InvalidRequestError("The safety checkpoint interval must be 0 (off) or a number of minutes, "
                                  f"not {t.safety_checkpoint_minutes}.")
    if not isinstance(t.validate_every_steps, int) or t.validate_every_steps < 0:
        raise InvalidRequestError("The validation interval must be 0 (off) or a whole number of steps, "
                                  f"not {t.validate_every_steps}.")
    if not (isinstance(t.learning_rate, (int, float)) and 0 < t.learning_rate < 1):
        raise InvalidRequestError(f"The learning rate must be between 0 and 1, not {t.learning_rate}.")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise InvalidRequestError(f"The Adam betas must be two numbers in [0, 1), not {list(t.betas)}.")
    if t.mixed_precision not in PRECISIONS:
        raise InvalidRequestError(
            f"Mixed precision '{t.mixed_precision}' is not one of {', '.join(PRECISIONS)}."
        )
    if (
        not 0 <= t.caption_dropout <= 1
        or not 0 <= t.ema_decay < 1
        or t.weight_decay < 0
        or t.warmup_steps < 0
    ):
        raise InvalidRequestError(
            "Caption dropout must be in [0, 1], EMA decay in [0, 1), and weight decay and "
            "warm-up steps 0 or more."
        )
    if not 0 <= m.dropout < 1:
        raise InvalidRequestError(f"The dropout must be in [0, 1), not {m.dropout}.")
    return config
