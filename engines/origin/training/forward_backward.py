"""One optimizer step's arithmetic: the randomness it draws, and its forward and backward passes.

Two properties the rest of the trainer relies on:

* **A step's randomness is a function of (seed, step, process)**, drawn before any model work.
  Noise, timesteps, caption dropout and the reference choice come from a generator seeded with
  that triple, and dropout inside the network runs under a forked global RNG seeded the same
  way. So a resumed run draws exactly what the uninterrupted run drew, whatever else used the
  global RNG in between (sample images, DataLoader workers, an out-of-memory retry).
* **The batch can be cut into micro-batches** without changing the result beyond float
  rounding: every term is a per-sample mean, each micro-batch's loss is weighted by its share
  of the step's samples and the gradients accumulate. This is how the trainer survives an
  out-of-memory error: the same step again with half the micro-batch.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

# How often a step shows the model a style reference (another image of the same batch, so of
# the same artist); the rest of the time it learns to draw without one, as most prompts come.
REFERENCE_RATE = 0.25


class TrainingForward(torch.nn.Module):
    """The model's forward and its experts' auxiliary losses as one forward pass.

    DDP (several GPUs) only tracks weights used inside ``forward``; the auxiliary heads run on
    the model's output, so outside it they would be reported ready twice and training would stop.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t, timesteps, tokens, mask, reference, clean):
        out = self.model(x_t, timesteps, tokens, mask, reference)
        return out, self.model.expert_aux_losses(out, clean)


def step_seed(seed: int, step: int, process_index: int) -> int:
    """A distinct 63-bit seed per (run seed, optimizer step, process)."""
    return (int(seed) * 1_000_003 + int(step) * 7_919 + int(process_index) * 104_729) % (2**63 - 1)


@dataclass
class StepInputs:
    """One loaded batch with the randomness of its step, all on the training device."""

    clean: torch.Tensor  # [B, 3, R, R] pixels in [-1, 1], or [B, C, R/f, R/f] latents in latent space
    captions: list[str]  # after caption dropout
    noise: torch.Tensor
    timesteps: torch.Tensor  # [B] long
    reference: Optional[torch.Tensor]  # [B, 3, R, R] or None


@dataclass
class StepStats:
    """What one step measured, averaged over its samples (floats, ready to log)."""

    total: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)  # diffusion, line_art, ..., expert_aux
    aux: dict[str, float] = field(default_factory=dict)  # per expert
    routing: dict[str, float] = field(default_factory=dict)  # mean routing weight per expert
    samples: int = 0


class TextCache:
    """Caption -> encoded tokens, LRU: captions repeat every epoch and the encoder is frozen."""

    def __init__(self, encoder: Any, max_entries: int = 4096) -> None:
        self.encoder = encoder
        self.max_entries = max_entries
        self._entries: "OrderedDict[str, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()

    def encode(self, captions: list[str], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [c for c in dict.fromkeys(captions) if c not in self._entries]
        if missing:
            with torch.no_grad():
                tokens, mask = self.encoder.encode(missing)
            for i, caption in enumerate(missing):
                self._entries[caption] = (tokens[i].detach().cpu(), mask[i].detach().cpu())
        for caption in captions:
            self._entries.move_to_end(caption)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        tokens = torch.stack([self._entries[c][0] for c in captions]).to(device)
        mask = torch.stack([self._entries[c][1] for c in captions]).to(device)
        return tokens, mask


def draw_inputs(window: list[dict], *, seed: int, step: int, process_index: int, caption_dropout: float,
                num_timesteps: int, device: Any, offset_noise: float = 0.0) -> list[StepInputs]:
    """The step's randomness, drawn on the CPU (same numbers on any device) before any model work.

    ``offset_noise`` adds a per-image, per-channel constant to the noise (Guttenberg 2023), another
    way to let the model move an image's mean colour; drawn last, so 0 leaves the stream unchanged.
    """
    from engines.origin.training.data import drop_captions

    generator = torch.Generator("cpu").manual_seed(step_seed(seed, step, process_index))
    out = []
    for batch in window:
        clean = batch["image"]
        size = clean.shape[0]
        noise = torch.randn(tuple(clean.shape), generator=generator, dtype=torch.float32)
        timesteps = torch.randint(0, num_timesteps, (size,), generator=generator, dtype=torch.long)
        captions = drop_captions(list(batch["caption"]), caption_dropout, generator)
        with_reference = bool(torch.rand((), generator=generator) < REFERENCE_RATE) and size > 1
        clean = clean.to(device, torch.float32)
        # Another picture of the same batch as the reference, never the picture itself (the
        # model would learn to copy it).
        reference = torch.roll(clean, shifts=1, dims=0) if with_reference else None
        if offset_noise:
            noise = noise + offset_noise * torch.randn((size, noise.shape[1], 1, 1), generator=generator)
        out.append(StepInputs(clean, captions, noise.to(device), timesteps.to(device), reference))
    return out


class LossComputer:
    """Forward + backward of one step over its micro-batches; see the module docstring."""

    def __init__(self, accelerator: Any, model: Any, text: TextCache, noise_scheduler: Any, art_losses: Any,
                 config: Any, to_rgb: Optional[Any] = None) -> None:
        """``to_rgb``: in latent space, latents -> their approximate picture (``latent.latents_to_rgb``),
        which the art losses and the experts' targets read; None in pixel space."""
        self.accelerator = accelerator
        self.model = model  # a TrainingForward as prepared by accelerate (DDP-wrapped on several GPUs)
        self.text = text
        self.scheduler = noise_scheduler
        self.art_losses = art_losses
        self.config = config
        self.expert_names = tuple(config.model.expert_names)
        self.to_rgb = to_rgb

    def forward_backward(self, inputs: list[StepInputs], micro_batch: int, *, seed: int, step: int,
                         poison: bool = False, fail: Optional[BaseException] = None) -> StepStats:
        """Accumulate gradients of the whole step; ``micro_batch`` samples per forward pass.

        ``poison`` (tests) makes the loss NaN; ``fail`` (tests) is raised before the first forward.
        """
        chunks = [(item, start, min(start + micro_batch, item.clean.shape[0]))
                  for item in inputs for start in range(0, item.clean.shape[0], micro_batch)]
        total_samples = sum(item.clean.shape[0] for item in inputs)
        sums: dict[str, Any] = {}
        device = self.accelerator.device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(step_seed(seed, step, self.accelerator.process_index))
            if fail is not None:
                raise fail
            for index, (item, start, end) in enumerate(chunks):
                last = index == len(chunks) - 1
                # Gradients are averaged across GPUs once, after the step's last micro-batch.
                sync = nullcontext() if last else self.accelerator.no_sync(self.model)
                with sync:
                    loss, parts = self._loss(item, start, end)
                    if poison:
                        loss = loss * float("nan")
                    self.accelerator.backward(loss * ((end - start) / total_samples))
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value * (end - start)
        return self._stats(sums, total_samples)

    def _loss(self, item: StepInputs, start: int, end: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from engines.origin.training.losses import add_noise_target, art_loss_weights, diffusion_loss, predicted_clean

        cfg = self.config
        prediction = cfg.model.prediction_type
        clean, noise, timesteps = item.clean[start:end], item.noise[start:end], item.timesteps[start:end]
        reference = item.reference[start:end] if item.reference is not None else None
        tokens, mask = self.text.encode(item.captions[start:end], clean.device)
        x_t = self.scheduler.add_noise(clean, noise, timesteps)
        # What the art losses and the experts' targets see: the pixels, or in latent space the
        # latents' approximate picture at latent resolution (a linear map, no decoder: latent.py).
        clean_rgb = self.to_rgb(clean) if self.to_rgb is not None else clean
        out, aux = self.model(x_t, timesteps, tokens, mask, reference, clean_rgb)
        sample = out.sample.float()
        target = add_noise_target(self.scheduler, clean, noise, timesteps, prediction)
        terms = {
            "diffusion": diffusion_loss(
                sample, target, timesteps, self.scheduler, cfg.loss.min_snr_gamma, prediction_type=prediction
            )
        }
        pred_clean = predicted_clean(self.scheduler, x_t, sample, timesteps, prediction)
        # Weighted by the signal fraction: the prediction is a blur at high noise (losses.py).
        pred_rgb = self.to_rgb(pred_clean) if self.to_rgb is not None else pred_clean
        art = self.art_losses(pred_rgb, clean_rgb, art_loss_weights(self.scheduler, timesteps))
        terms.update(art)
        terms["expert_aux"] = (
            torch.stack([v.float() for v in aux.values()]).mean() if aux else sample.new_zeros(())
        )
        total = terms["diffusion"]
        for name in art:
            total = total + float(getattr(cfg.loss, name, 0.0)) * terms[name]
        total = total + cfg.loss.expert_aux * terms["expert_aux"]
        parts = {"total": total.detach()}
        parts.update({f"term/{k}": v.detach() for k, v in terms.items()})
        parts.update({f"aux/{k}": v.detach() for k, v in aux.items()})
        routing = out.routing.detach().float().mean(dim=0)
        parts.update({f"routing/{k}": routing[i] for i, k in enumerate(self.expert_names[:routing.shape[0]])})
        return total, parts

    @staticmethod
    def _stats(sums: dict[str, Any], samples: int) -> StepStats:
        # One device->host copy for the whole step instead of one per number.
        keys = list(sums)
        values = (
            torch.stack([torch.as_tensor(sums[k]).float().reshape(()) for k in keys]).cpu().tolist()
            if keys
            else []
        )
        means = {k: v / max(1, samples) for k, v in zip(keys, values)}
        stats = StepStats(total=means.get("total", float("nan")), samples=samples)
        for key, value in means.items():
            group, _, name = key.partition("/")
            if group == "term":
                stats.terms[name] = value
            elif group == "aux":
                stats.aux[name] = value
            elif group == "routing":
                stats.routing[name] = value
        return stats
