"""One optimizer step around the arithmetic of ``forward_backward.py``: out-of-memory recovery, the
NaN/Inf guard, the update (optimizer, EMA, LR schedule and controller), and what the step
records (metrics.jsonl, TensorBoard, performance.log, diagnosis.log, error.log, sample images).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from engines.origin.training.diagnosis import grad_norms_by_group, nonfinite_parameters, report_lines, routing_health
from engines.origin.training.forward_backward import draw_inputs

MB = 2**20

log = logging.getLogger(__name__)


def _memory(device: Any) -> dict[str, float]:
    """Process RAM and, on CUDA, allocated and peak VRAM, in MB."""
    import psutil
    import torch

    out = {"ram_mb": psutil.Process().memory_info().rss / MB}
    if device.type == "cuda":
        out["vram_mb"] = torch.cuda.memory_allocated(device) / MB
        out["vram_peak_mb"] = torch.cuda.max_memory_allocated(device) / MB
    return out


class OptimizerStep:
    def __init__(self, trainer: Any) -> None:
        self.t = trainer
        self.acc = trainer.accelerator
        self.diagnose_every = max(1, trainer.log_every * 10)
        self._data_started = time.perf_counter()

    def mark_data_start(self) -> None:
        self._data_started = time.perf_counter()

    # -- the step ----------------------------------------------------------------------------
    def step(self, window: list[dict], position: int) -> None:
        t, p, cfg = self.t, self.t.progress, self.t.config
        started = time.perf_counter()
        data_seconds = started - self._data_started
        t.steer()  # Stop, Save now, Sample now, the safety checkpoint
        number = p.step + 1
        # 1. the step's randomness, fixed before any attempt so a retry redraws nothing
        inputs = draw_inputs(window, seed=cfg.train.seed, step=number, process_index=self.acc.process_index,
                             caption_dropout=cfg.train.caption_dropout,
                             num_timesteps=cfg.train.num_train_timesteps, device=self.acc.device,
                             offset_noise=cfg.train.offset_noise)
        for batch in window:
            t.cache_tally.add(batch.get("cache", []))

        # 2. forward + backward, halving the micro-batch on out-of-memory (HardwareManager's rule)
        def attempt(micro_batch: int):
            self.t.optimizer.zero_grad(set_to_none=True)
            return t.step_runner.forward_backward(inputs, micro_batch, seed=cfg.train.seed, step=number,
                                                  poison=t.faults.nan_at_step == number,
                                                  fail=self._injected_oom(number))

        stats, micro = t.hardware.run_with_oom_recovery(
            attempt, p.micro_batch, on_oom=lambda size, error: self._on_oom(number, size, error)
        )
        p.micro_batch = micro
        stats = self._averaged(stats)

        # 3. the guard: gradients and loss must be finite, on every process
        diagnose = number == 1 or number % self.diagnose_every == 0
        group_norms = grad_norms_by_group(t.unwrapped) if diagnose else {}
        clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
        grad_norm = float(self.acc.clip_grad_norm_(t.model.parameters(), clip))
        skipped = self._any_process(not (math.isfinite(grad_norm) and math.isfinite(stats.total)))

        # 4. the update
        if skipped:
            if self.acc.scaler is not None:
                t.optimizer.step()  # lets fp16's GradScaler see the overflow and lower its scale
            t.optimizer.zero_grad(set_to_none=True)
            t.logs.error.error(
                "step %d (epoch %d): loss %s, gradient norm %s are not finite; the step is skipped "
                "and the weights are unchanged (batch %s)",
                number, p.epoch + 1, stats.total, grad_norm, [b.get("path", "?") for b in window][:1])
            t.note_skip()
        else:
            t.optimizer.step()
            t.optimizer.zero_grad(set_to_none=True)
            t.ema.step(t.unwrapped.parameters())
            t.note_good_step()
        t.scheduler.step()
        change = t.controller.observe(number, stats.total, skipped=skipped, clipped=grad_norm > clip)
        lr = t.controller.apply(t.optimizer, t.scheduler)
        if change:
            t.logs.main.info(
                "step %d: the LR controller %s the learning rate (scale %.3g, now %.3g): %s",
                number, change, t.controller.scale, lr,
                "loss stalled" if change == "lowered" else "steady healthy progress")
        p.step = number
        p.batch_in_epoch = position
        p.samples_seen += stats.samples * self.acc.num_processes
        t.losses.append(stats.total if not skipped else float("nan"))
        t.epoch_losses.append(stats.total if not skipped else float("nan"))

        # 5. what the step records
        seconds = time.perf_counter() - started
        memory = _memory(self.acc.device)
        samples_per_s = stats.samples * self.acc.num_processes / max(seconds + data_seconds, 1e-9)
        t.logs.performance.info(
            "step %d: batch %.3f s (data %.3f s), %.2f samples/s, micro-batch %d, %s",
            number, seconds, data_seconds, samples_per_s, micro,
            ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
        # performance.log is the main process's only; this names what every process trained on (with
        # --verbose), to find the image behind one GPU's bad step and to see how the epoch is shared out.
        log.debug("process %d, step %d (epoch %d): %s", self.acc.process_index, number, p.epoch + 1,
                  ", ".join(path for batch in window for path in batch.get("path", [])))
        if number % t.log_every == 0 or number == 1 or skipped or number == t.total_steps:
            t.logs.metrics({
                "step": number, "epoch": p.epoch + position / max(1, t.batches_per_epoch),
                "loss": stats.total if not skipped else float("nan"), "losses": stats.terms,
                "experts": {name: {"aux_loss": stats.aux.get(name, float("nan")),
                                   "routing": stats.routing.get(name, float("nan"))}
                            for name in cfg.model.expert_names},
                "lr": lr, "lr_scale": t.controller.scale, "grad_norm": grad_norm, "skipped": skipped,
                "samples_per_s": samples_per_s, "seconds": seconds, "micro_batch": micro, "memory": memory,
            })
        if diagnose or skipped:
            health = routing_health([stats.routing.get(n, 0.0) for n in cfg.model.expert_names],
                                    cfg.model.expert_names)
            for line in report_lines(
                number,
                grad_norms=group_norms,
                nonfinite=nonfinite_parameters(t.unwrapped),
                routing=health,
                aux=stats.aux,
            ):
                t.logs.diagnosis.info(line)
        validate = cfg.train.validate_every_steps
        if validate and t.main and (number == 1 or number % validate == 0 or number == t.total_steps):
            t.validate(number)
        every = cfg.train.sample_every_steps
        if ((every and number % every == 0) or t.sample_requested) and t.main:
            self._samples(number)
        t.sample_requested = False
        t.on_step(number, t.total_steps, f"epoch {p.epoch + 1}/{cfg.train.epochs} loss {stats.total:.4f}")

    # -- helpers ---------------------------------------------------------------------------------
    def _any_process(self, flag: bool) -> bool:
        if self.acc.num_processes == 1:
            return flag
        import torch

        return bool(self.acc.reduce(torch.tensor(float(flag), device=self.acc.device), "sum").item() > 0)

    def _averaged(self, stats: Any) -> Any:
        """The step's numbers averaged over all processes (what metrics.jsonl reports)."""
        if self.acc.num_processes == 1:
            return stats
        import torch

        keys = [("total", "")] + [("terms", k) for k in stats.terms] + [("aux", k) for k in stats.aux] + \
               [("routing", k) for k in stats.routing]
        values = (
            [stats.total]
            + list(stats.terms.values())
            + list(stats.aux.values())
            + list(stats.routing.values())
        )
        mean = self.acc.reduce(
            torch.tensor(values, dtype=torch.float32, device=self.acc.device), "mean"
        ).tolist()
        stats.total = mean[0]
        for (group, name), value in zip(keys[1:], mean[1:]):
            getattr(stats, group)[name] = value
        return stats

    def _injected_oom(self, number: int) -> Any:
        t = self.t
        if t.faults.oom_at_step != number or t._oom_injected:
            return None
        import torch

        t._oom_injected = True
        return torch.OutOfMemoryError("CUDA out of memory. (injected by a test)")

    def _on_oom(self, number: int, new_size: int, error: BaseException) -> None:
        t = self.t
        t.optimizer.zero_grad(set_to_none=True)
        t.progress.oom_recoveries += 1
        t.progress.micro_batch = new_size
        t.logs.error.error(
            "step %d (epoch %d, batch %d): out of memory (%s); recovery: emergency checkpoint, "
            "then the same step again with micro-batch %d (the batch itself is unchanged)",
            number,
            t.progress.epoch + 1,
            t.progress.batch_in_epoch,
            str(error).splitlines()[0],
            new_size,
        )
        if not t.request.write_checkpoints:
            return
        if self.acc.num_processes == 1:
            t.save("emergency")
        else:
            # A checkpoint needs every process; the others are not out of memory and would never join.
            t.logs.error.error(
                "no emergency checkpoint on several processes; the last regular one stays the newest"
            )

    def _samples(self, number: int) -> None:
        from engines.origin.training.samples import write_samples

        t = self.t
        started = time.perf_counter()
        try:
            paths = write_samples(run_dir=t.run_dir, step=number, model=t.unwrapped, ema=t.ema,
                                  text_encoder=t.text_encoder, config=t.config, device=self.acc.device,
                                  decode=t.decode if t.vae_name is not None else None)
        except Exception as error:  # noqa: BLE001 - a failed preview must never stop a days-long run
            t.logs.error.exception("step %d: sample images failed (%s); training continues", number, error)
            return
        for i, path in enumerate(paths):
            from PIL import Image

            with Image.open(path) as image:
                t.logs.image(f"samples/{i}", image.convert("RGB"), number)
        t.logs.main.info(
            "step %d: %d sample images in %.1f s", number, len(paths), time.perf_counter() - started
        )
