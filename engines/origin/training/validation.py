"""The validation loss: a few images, fixed timesteps, fixed noise, so its curve means something.

A training step's loss is drawn at a random timestep with random noise, and the loss at t=900 is
many times the loss at t=100: the curve is mostly that lottery, and a week of real progress can
hide under it. Here the same images are noised the same way at the same timesteps each time, so
the only thing that changes between two measurements is the model, and a falling curve means
it improved.

The images are held out of training when the dataset can spare them (1 in ``HOLD_OUT_EVERY``, at
most ``MAX_IMAGES``, chosen by a hash of their path so that adding images later keeps the choice);
a smaller dataset is validated on some of its training images, which still shows progress but
not overfitting, and the log says so. The choice is written to ``<run>/validation.json`` at the
first start and read back on every resume, so the training data never changes under a run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

HOLD_OUT_EVERY = 40
MAX_IMAGES = 8
TIMESTEP_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
NOISE_SEED = 20_240_607


@dataclass(frozen=True)
class ValidationChoice:
    paths: tuple[str, ...]  # relative to the dataset folder
    held_out: bool  # False: training images (the dataset is too small to spare any)

    def to_dict(self) -> dict[str, Any]:
        return {"paths": list(self.paths), "held_out": self.held_out}


def _rank(relative: str) -> str:
    return hashlib.sha256(relative.encode("utf-8")).hexdigest()


def choose(paths: list[str], root: Path) -> ValidationChoice:
    """The validation images of a new run over the dataset ``paths`` (absolute, under ``root``)."""
    relative = sorted((Path(p).relative_to(root).as_posix() for p in paths), key=_rank)
    count = min(MAX_IMAGES, len(relative) // HOLD_OUT_EVERY)
    if count:
        return ValidationChoice(tuple(relative[:count]), True)
    return ValidationChoice(tuple(relative[: min(4, len(relative))]), False)


def load_or_choose(run_dir: Path, paths: list[str], root: Path, *, resuming: bool,
                   write: bool = True) -> ValidationChoice:
    """The run's recorded choice, or a new one (recorded). A run resumed from before validation
    existed gets training images only: holding images out now would change its data mid-run."""
    file = Path(run_dir) / "validation.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return ValidationChoice(tuple(data["paths"]), bool(data["held_out"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    choice = choose(paths, root)
    if resuming and choice.held_out:
        choice = ValidationChoice(tuple(sorted(choice.paths)[:4]), False)
    if write:  # the main process; the others reach the same choice, it is a function of the files
        from engines.files import atomic_write_bytes

        atomic_write_bytes(file, json.dumps(choice.to_dict(), indent=1).encode("utf-8"))
    return choice


class Validator:
    """Computes the validation loss of a model; built once per run, called every N steps."""

    def __init__(self, clean: torch.Tensor, captions: list[str], *, num_timesteps: int, held_out: bool) -> None:
        """``clean``: ``[N, C, H, W]`` model inputs (pixels in [-1, 1] or latents), on the CPU."""
        self.clean = clean.float()
        self.captions = list(captions)
        self.held_out = held_out
        self.timesteps = [min(num_timesteps - 1, int(round(f * num_timesteps))) for f in TIMESTEP_FRACTIONS]
        generator = torch.Generator("cpu").manual_seed(NOISE_SEED)
        # One noise per (timestep, image), drawn once: the same every time the loss is measured.
        self.noise = torch.randn((len(self.timesteps), *self.clean.shape), generator=generator)

    def __len__(self) -> int:
        return self.clean.shape[0]

    @torch.no_grad()
    def measure(self, model: Any, text: Any, scheduler: Any, config: Any, device: Any, *, batch: int,
                autocast: Any) -> dict[str, Any]:
        """``{"loss": mean, "by_timestep": {t: loss}}`` with ``model`` (the OriginModel) in eval mode."""
        from engines.origin.training.losses import add_noise_target, diffusion_loss

        prediction = config.model.prediction_type
        was_training = model.training
        model.eval()  # no dropout: the measurement must not be random
        by_timestep: dict[str, float] = {}
        try:
            tokens, mask = text.encode(self.captions, device)
            for index, t in enumerate(self.timesteps):
                total, count = 0.0, 0
                for start in range(0, len(self), max(1, batch)):
                    end = min(len(self), start + max(1, batch))
                    clean = self.clean[start:end].to(device)
                    noise = self.noise[index, start:end].to(device)
                    timesteps = torch.full((end - start,), t, dtype=torch.long, device=device)
                    x_t = scheduler.add_noise(clean, noise, timesteps)
                    with autocast():
                        out = model(x_t, timesteps, tokens[start:end], mask[start:end], None)
                    target = add_noise_target(scheduler, clean, noise, timesteps, prediction)
                    loss = diffusion_loss(out.sample.float(), target, timesteps, scheduler,
                                          config.loss.min_snr_gamma, prediction_type=prediction)
                    total += float(loss) * (end - start)
                    count += end - start
                by_timestep[str(t)] = total / max(1, count)
        finally:
            model.train(was_training)
        return {"loss": sum(by_timestep.values()) / max(1, len(by_timestep)), "by_timestep": by_timestep,
                "images": len(self), "held_out": self.held_out}


def build_validator(choice: ValidationChoice, root: Path, load: Any, *, num_timesteps: int) -> Optional[Validator]:
    """``load(path) -> (tensor [C, H, W], caption)`` for each chosen image that still exists."""
    tensors, captions = [], []
    for relative in choice.paths:
        path = Path(root) / relative
        if not path.is_file():
            continue  # deleted since: validate on the rest
        try:
            tensor, caption = load(path)
        except (OSError, ValueError):
            continue
        tensors.append(tensor)
        captions.append(caption)
    if not tensors:
        return None
    return Validator(torch.stack(tensors), captions, num_timesteps=num_timesteps, held_out=choice.held_out)
