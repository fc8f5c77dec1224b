"""``train --stage sr``: teach the super-resolution enhancer this artist's lines and screentones.

The dataset's images are the high-resolution targets; ``enhance.sr_training_pairs`` makes the
low-resolution inputs by antialiased downscaling. The network starts as exact bicubic (its last
layer is zero) and learns the correction with an L1 loss (EDSR's choice: sharper edges than L2,
which averages two plausible line positions into a blur). The result lands in
``<run>/sr/sr.safetensors`` + ``sr.json``, where ``generate --upscale`` finds it. Its own logs
and metrics go to ``<run>/sr/`` (main.log, metrics.jsonl with the bicubic baseline alongside).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.progress import CancelToken, OnStep, no_progress

DEFAULT_EPOCHS = 20
DEFAULT_RESOLUTION = 128  # high-resolution crop size; the inputs are this / scale


@dataclass(frozen=True)
class SrRequest:
    data: Path
    run: Path
    scale: int = 2
    resolution: int = DEFAULT_RESOLUTION
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 8
    learning_rate: float = 2e-4
    max_steps: Optional[int] = None
    seed: int = 0


@dataclass(frozen=True)
class SrResult:
    path: Path
    steps: int
    loss: float  # mean L1 of the last epoch
    bicubic_loss: float  # plain bicubic on the same pairs, for comparison
    seconds: float


def check(request: SrRequest) -> None:
    if not Path(request.data).expanduser().is_dir():
        raise InvalidRequestError(f"The dataset folder {request.data} does not exist.")
    if request.scale not in (2, 4):
        raise InvalidRequestError(f"The super-resolution scale must be 2 or 4, not {request.scale}.")
    if request.resolution < 16 * request.scale or request.resolution % request.scale:
        raise InvalidRequestError(
            f"The super-resolution training size must be a multiple of {request.scale} and at "
            f"least {16 * request.scale} pixels, not {request.resolution}."
        )
    for name, value in (("epochs", request.epochs), ("batch size", request.batch_size)):
        if value < 1:
            raise InvalidRequestError(f"The {name} must be at least 1, not {value}.")
    if request.max_steps is not None and request.max_steps < 1:
        raise InvalidRequestError(f"The number of steps must be at least 1, not {request.max_steps}.")


def train_sr(request: SrRequest, ctx: Any, *, on_step: OnStep = no_progress,
             cancel: Optional[CancelToken] = None) -> SrResult:
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator

    from engines.origin.training.data import ArtDataset, make_dataloader
    from engines.origin.generation.enhance import SuperResolution, sr_training_pairs
    from engines.origin.training.run_logs import RunLogs

    # 1. check and set up
    check(request)
    started = time.perf_counter()
    accelerator = Accelerator(cpu=ctx.hardware.device.type == "cpu")
    out_dir = Path(request.run).expanduser() / "sr"
    logs = RunLogs(out_dir, main_process=accelerator.is_main_process, rank=accelerator.process_index)
    try:
        dataset = ArtDataset(Path(request.data).expanduser(), request.resolution)
        loader = make_dataloader(dataset, batch_size=min(request.batch_size, len(dataset)), shuffle=True,
                                 num_workers=0, device_type=accelerator.device.type, seed=request.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(request.seed)
            model = SuperResolution(scale=request.scale)
        optimizer = torch.optim.AdamW(model.parameters(), lr=request.learning_rate, weight_decay=0.0)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        total = len(loader) * request.epochs
        total = min(total, request.max_steps) if request.max_steps else total
        logs.main.info(
            "super-resolution %dx on %d images, %d px targets, %d steps",
            request.scale,
            len(dataset),
            request.resolution,
            total,
        )
        # 2. the epochs
        step, epoch_loss, epoch_bicubic = 0, math.nan, math.nan
        for epoch in range(request.epochs):
            losses, baselines = [], []
            for batch in loader:
                if cancel is not None and cancel.cancelled:
                    break
                low, high = sr_training_pairs(batch["image"], request.scale)
                output = model(low)
                loss = F.l1_loss(output, high)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    bicubic = F.l1_loss(F.interpolate(low, scale_factor=request.scale, mode="bicubic",
                                                      align_corners=False).clamp(-1, 1), high)
                step += 1
                losses.append(float(loss.detach()))
                baselines.append(float(bicubic))
                logs.metrics(
                    {"step": step, "epoch": epoch + 1, "l1": losses[-1], "bicubic_l1": baselines[-1]}
                )
                on_step(step, total, f"SR epoch {epoch + 1}/{request.epochs} L1 {losses[-1]:.4f}")
                if step >= total:
                    break
            epoch_loss = sum(losses) / max(1, len(losses))
            epoch_bicubic = sum(baselines) / max(1, len(baselines))
            logs.main.info("SR epoch %d: L1 %.4f (bicubic %.4f)", epoch + 1, epoch_loss, epoch_bicubic)
            if step >= total or (cancel is not None and cancel.cancelled):
                break
        # 3. save (also when stopped: what was learned so far is kept)
        path = out_dir / "sr.safetensors"
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save(path)
            logs.main.info("saved %s after %d steps", path, step)
        accelerator.wait_for_everyone()
        if cancel is not None:
            cancel.raise_if_cancelled()
        return SrResult(path, step, epoch_loss, epoch_bicubic, time.perf_counter() - started)
    finally:
        logs.close()
