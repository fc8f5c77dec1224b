"""``train --search N``: N short training trials to find good hyperparameters for this dataset.

Random search first (Bergstra & Bengio 2012: on a handful of trials it beats a grid, because only
a few of the settings matter and random search tries more values of each), then trials around
the best so far: the learning rate and weight decay jittered on a log scale, betas and dropout
nudged, the batch size moved one step. Half of the trials are random (at least one).

Each trial is a real, short training run in ``<run>/search/trial-NN/`` (its logs and metrics
stay for comparison). Trials are compared on one fixed yardstick rather than their own training
loss, which batch size and dropout bias: the diffusion loss of the trained weights on up to 32
of the dataset's images, at fixed noise and evenly spaced timesteps, with dropout off. The best
configuration goes to ``<run>/search/best_config.json``, ready for ``train --config``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.files import atomic_write
from engines.origin.model.config import OriginConfig
from engines.progress import CancelToken, OnStep, no_progress

DEFAULT_TRIAL_STEPS = 200
EVAL_IMAGES = 32
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
BETA2S = (0.99, 0.995, 0.999)


@dataclass(frozen=True)
class TrialParams:
    learning_rate: float
    batch_size: int
    weight_decay: float
    beta1: float
    beta2: float
    dropout: float

    def apply(self, config: OriginConfig) -> OriginConfig:
        train = replace(config.train, learning_rate=self.learning_rate, batch_size=self.batch_size,
                        weight_decay=self.weight_decay, betas=(self.beta1, self.beta2))
        return replace(config, train=train, model=replace(config.model, dropout=self.dropout))


@dataclass(frozen=True)
class Trial:
    index: int
    kind: str  # "random" or "around the best"
    params: TrialParams
    score: float  # fixed-noise diffusion loss, lower is better
    seconds: float
    folder: Path


@dataclass(frozen=True)
class SearchResult:
    best: Trial
    trials: list[Trial]
    best_config: OriginConfig
    best_config_path: Path


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def random_params(rng: random.Random, max_batch: int) -> TrialParams:
    sizes = [b for b in BATCH_SIZES if b <= max_batch] or [1]
    return TrialParams(learning_rate=_log_uniform(rng, 3e-5, 1e-3), batch_size=rng.choice(sizes),
                       weight_decay=_log_uniform(rng, 1e-4, 1e-1), beta1=rng.uniform(0.8, 0.95),
                       beta2=rng.choice(BETA2S), dropout=rng.uniform(0.0, 0.2))


def params_near(rng: random.Random, best: TrialParams, max_batch: int) -> TrialParams:
    sizes = [b for b in BATCH_SIZES if b <= max_batch] or [1]
    nearest = min(range(len(sizes)), key=lambda i: abs(sizes[i] - best.batch_size))
    batch = sizes[max(0, min(len(sizes) - 1, nearest + rng.choice((-1, 0, 1))))]
    beta2 = BETA2S[max(0, min(len(BETA2S) - 1, BETA2S.index(best.beta2) + rng.choice((-1, 0, 1))))] \
        if best.beta2 in BETA2S else best.beta2
    return TrialParams(
        learning_rate=min(1e-2, best.learning_rate * math.exp(rng.gauss(0.0, 0.4))),
        batch_size=batch,
        weight_decay=min(0.5, best.weight_decay * math.exp(rng.gauss(0.0, 0.5))),
        beta1=min(0.99, max(0.5, best.beta1 + rng.gauss(0.0, 0.03))),
        beta2=beta2,
        dropout=min(0.5, max(0.0, best.dropout + rng.gauss(0.0, 0.04))),
    )


def evaluate(checkpoint: Path, data: Path, device: Any, text: Any, vae: Any = None) -> float:
    """Diffusion loss of a checkpoint's raw weights at fixed noise and timesteps (the yardstick).

    ``text`` is the caption encoder (a ``TextEncoder``) the trials share; ``vae`` the ``LatentCodec``
    of a latent-space search (the images are scored as its latents).
    """
    import torch

    from engines.origin.model import checkpoints
    from engines.origin.model.build import build_model
    from engines.origin.model.schedule import training_scheduler
    from engines.origin.training.data import ArtDataset
    from engines.origin.training.losses import add_noise_target, diffusion_loss

    config, state, _ = checkpoints.load_for_inference(checkpoint, prefer_ema=False)
    model = build_model(config.model)
    model.load_state_dict(state)
    model.to(device).eval()
    m = config.model
    dataset = ArtDataset(data, m.resolution)
    count = min(EVAL_IMAGES, len(dataset))
    items = [dataset[i * len(dataset) // count] for i in range(count)]
    clean = torch.stack([item["image"] for item in items]).to(device)
    if m.space == "latent":
        clean = vae.encode(clean).to(device)
    tokens, mask = text.encode([item["caption"] for item in items], device)
    scheduler = training_scheduler(config)
    generator = torch.Generator("cpu").manual_seed(0)
    noise = torch.randn(tuple(clean.shape), generator=generator).to(device)
    # Evenly spaced noise levels: every trial is judged on the same mix of easy and hard steps.
    timesteps = torch.linspace(0, config.train.num_train_timesteps - 1, count).round().long().to(device)
    with torch.no_grad():
        x_t = scheduler.add_noise(clean, noise, timesteps)
        out = model(x_t, timesteps, tokens.to(device), mask.to(device)).sample.float()
        target = add_noise_target(scheduler, clean, noise, timesteps, m.prediction_type)
        return float(diffusion_loss(out, target, timesteps, scheduler, config.loss.min_snr_gamma))


def run_search(request: Any, trials: int, ctx: Any, *, on_step: OnStep = no_progress,
               cancel: Optional[CancelToken] = None) -> SearchResult:
    """Run ``trials`` short trainings of ``request`` (a TrainRequest) and keep the best configuration."""
    from accelerate import PartialState

    from engines.origin.model.latent import register_vae
    from engines.origin.model.text_encoder import register_text_encoder
    from engines.origin.training.data import ArtDataset
    from engines.origin.training.request import TrainRequest, check
    from engines.origin.training.trainer import train

    if not isinstance(trials, int) or trials < 1:
        raise InvalidRequestError(f"--search needs a number of trials of at least 1, not {trials}.")
    if request.resume:
        raise InvalidRequestError("--search starts fresh trials; leave out --resume.")
    base = check(replace(request, run=Path(request.run) / "search" / "trial-check"))
    folder = Path(request.run).expanduser() / "search"
    max_batch = len(ArtDataset(Path(request.data).expanduser(), base.model.resolution))
    steps = request.max_steps or DEFAULT_TRIAL_STEPS
    # A trial only needs its final weights: no periodic checkpoints, no sample images.
    # Many epochs and a short warm-up: the LR is at its peak for most of the trial, so the trial
    # measures the LR itself rather than how far a schedule got.
    base = replace(
        base,
        train=replace(
            base.train,
            checkpoint_every_epochs=10**9,
            milestones=(),
            sample_every_steps=0,
            epochs=10**6,
            warmup_steps=min(base.train.warmup_steps, steps // 10),
        ),
    )
    main = PartialState().is_main_process
    # The trials and the yardstick read captions through the one encoder the trainer uses.
    text_name = register_text_encoder(ctx.hardware, base.model, store=getattr(ctx, "models", None))
    vae_name = (register_vae(ctx.hardware, base.model.vae, store=getattr(ctx, "models", None))
                if base.model.space == "latent" else None)
    rng = random.Random(base.train.seed)
    n_random = max(1, trials // 2)
    done: list[Trial] = []
    for index in range(1, trials + 1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        best = min(done, key=lambda t: t.score) if done else None
        kind = "random" if index <= n_random or best is None else "around the best"
        params = (
            random_params(rng, max_batch) if kind == "random" else params_near(rng, best.params, max_batch)
        )
        trial_dir = folder / f"trial-{index:02d}"
        if main and trial_dir.exists():
            shutil.rmtree(trial_dir)  # a trial from an earlier, interrupted search
        PartialState().wait_for_everyone()
        started = time.perf_counter()
        result = train(
            TrainRequest(data=request.data, run=trial_dir, config=params.apply(base), max_steps=steps),
            ctx,
            on_step=lambda s, total, message="", preview=None, i=index: on_step(
                (i - 1) * steps + s, trials * steps, f"trial {i}/{trials}, step {s}/{steps}"
            ),
            cancel=cancel,
        )
        with ctx.hardware.use(text_name) as text, (
                ctx.hardware.use(vae_name) if vae_name else nullcontext()) as vae:
            score = (
                evaluate(result.checkpoint, Path(request.data).expanduser(), ctx.hardware.device.torch_device, text,
                         vae)
                if result.checkpoint
                else math.inf
            )
        if not math.isfinite(score):
            score = math.inf  # a diverged trial loses, whatever its numbers
        trial = Trial(index, kind, params, score, time.perf_counter() - started, trial_dir)
        done.append(trial)
        if main:
            shutil.rmtree(
                trial_dir / "checkpoints", ignore_errors=True
            )  # weights of a 200-step trial are not worth keeping
            with open(folder / "trials.jsonl", "a", encoding="utf-8") as handle:
                handle.write(
                    json.dumps(
                        {
                            "trial": index,
                            "kind": kind,
                            "score": score if math.isfinite(score) else None,
                            "seconds": trial.seconds,
                            **asdict(params),
                        }
                    )
                    + "\n"
                )
    best = min(done, key=lambda t: t.score)
    best_config = best.params.apply(
        replace(base, train=replace(base.train, **_kept_train_fields(request, base)))
    )
    path = folder / "best_config.json"
    if main:
        atomic_write(path, best_config.save)
    PartialState().wait_for_everyone()
    return SearchResult(best, done, best_config, path)


def _kept_train_fields(request: Any, base: OriginConfig) -> dict[str, Any]:
    """Undo the trial-only settings, so best_config.json is a normal training config."""
    defaults = (request.config or OriginConfig()).train
    return {"checkpoint_every_epochs": defaults.checkpoint_every_epochs, "milestones": defaults.milestones,
            "sample_every_steps": defaults.sample_every_steps, "warmup_steps": defaults.warmup_steps,
            "epochs": request.epochs or defaults.epochs}
