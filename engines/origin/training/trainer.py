"""Train an Origin model on the artist's dataset: ``train(TrainRequest(data, run), ctx)``.

Built on accelerate, so one code path runs on a CPU, one GPU (fp16/bf16 mixed precision) or
several GPUs and machines (``accelerate launch app.py train ...``). The run folder holds
everything (config.json, checkpoints/, samples/, metrics.jsonl, tensorboard/, logs/); see
docs/training.md for the artist's side. The steps of ``Trainer.run``:

0. in latent space, the frozen VAE (its latent geometry completes the config)
1. the accelerator and the run folder (config.json, logs)
2. the data: ArtDataset through the two-tier TensorCache (in latent space, the VAE's latents of
   the images, encoded once before the first epoch), a seeded DataLoader
3. the network, the frozen text encoder, the noise schedule and the art losses
4. AdamW, warm-up + cosine schedule, the adaptive LR controller, EMA weights
5. resume from the newest good checkpoint (``--resume``)
6. the epochs: steps with out-of-memory recovery and the NaN/Inf guard; metrics, the validation
   loss, logs, samples, checkpoints (every N epochs, milestones, kept to the newest 20, and a
   safety checkpoint every 30 minutes); at the top of each step, what the run folder's control
   flags ask for (stop, save now, sample now: ``run_control.py``)
7. the final checkpoint and the result

The main process keeps ``<run>/status.json`` current (state, step, its pid), which is how the
studio tells a running run from a crashed one.

Gradient accumulation is done here rather than with ``accelerator.accumulate``: the trainer
gathers a step's batches first, so an out-of-memory retry can redo the whole step with smaller
micro-batches (a retry halfway through accelerate's per-batch accumulation would count part of
the step twice).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

from engines.errors import Cancelled, StudioError
from engines.files import atomic_write
from engines.origin.model import checkpoints
from engines.origin.model.config import OriginConfig
from engines.origin.training.request import TrainRequest, TrainResult, check
from engines.origin.training.run_control import ControlFlags, StatusFile, write_run_record
from engines.progress import CancelToken, OnStep, no_progress

MAX_SKIPS_IN_A_ROW = 25
# Rough activation memory of one 64 px sample per unit of UNet width (fp32, saved for backward):
# only sizes the first micro-batch; an out-of-memory error corrects it.
ACTIVATION_BYTES_PER_CHANNEL_AT_64 = 64 * 64 * 4 * 60


class TrainingDivergedError(StudioError):
    exit_code = 6


def train(request: TrainRequest, ctx: Any, *, on_step: OnStep = no_progress,
          cancel: Optional[CancelToken] = None) -> TrainResult:
    """Check the request, then run the whole training; see the module docstring."""
    config = check(request)
    return Trainer(request, config, ctx, on_step=on_step, cancel=cancel).run()


def mixed_precision_for(requested: str, hardware: Any, device_type: str) -> str:
    """accelerate's mixed_precision from the config and the HardwareManager's rules (fp32 on CPU)."""
    if device_type != "cuda":
        return "no"  # CPU autocast is slower than fp32 on most CPUs; MPS trains in fp32 (devices.py)
    if requested != "auto":
        return requested
    return {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[hardware.precision.training]


def estimate_memory(config: OriginConfig, num_parameters: int, micro_batch: int) -> int:
    """Bytes a run holds: weights, gradients, two Adam moments and EMA (5 fp32 copies) + activations."""
    per_sample = (
        ACTIVATION_BYTES_PER_CHANNEL_AT_64 * config.model.base_channels * (config.model.sample_size / 64) ** 2
    )
    return int(num_parameters * 4 * 5 + per_sample * micro_batch)


def _log_every(total_steps: int) -> int:
    # Every step on short runs (tests, trials), every 10th on days-long ones (metrics.jsonl stays small).
    return max(1, min(10, total_steps // 200))


class Trainer:
    def __init__(self, request: TrainRequest, config: OriginConfig, ctx: Any, *, on_step: OnStep,
                 cancel: Optional[CancelToken]) -> None:
        self.request = request
        self.config = config
        self.ctx = ctx
        self.hardware = ctx.hardware
        self.on_step = on_step
        self.cancel = cancel
        self.run_dir = Path(request.run).expanduser()
        self.faults = request.faults
        self.losses: list[float] = []
        self.last_checkpoint: Optional[Path] = None
        self._checkpoints_written = 0
        self._oom_injected = False
        self._skips_in_a_row = 0
        self._saved_at_step: Optional[int] = None
        self._early_notes: list[str] = []  # said in main.log once the logs are open
        self._held = ExitStack()  # pool models this run keeps in use until it ends
        self.vae_name: Optional[str] = None  # latent space: the VAE's pool name
        self.vae_identity: Optional[dict] = None
        self.rgb_map: Any = None  # latent space: the VAE's latent -> RGB approximation (latent.py)
        self.control = ControlFlags(self.run_dir)
        # accelerate's RANK is set before the accelerator exists: the status covers the set-up too.
        self.status = StatusFile(self.run_dir) if os.environ.get("RANK", "0") == "0" else None
        self.sample_requested = False  # "Sample now": drawn at the end of the current step
        self._saved_at_time = time.monotonic()  # the safety checkpoint's timer
        self.validation_choice: Any = None
        self._validator: Any = None
        self._validator_built = False

    # -- the whole run ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        started = time.perf_counter()
        self._report("starting")
        try:
            self._setup_space()  # 0.
            self._setup_accelerator()  # 1.
            self._setup_data()  # 2.
            self._setup_model()  # 3.
            self._setup_optimization()  # 4.
            resumed_from = self._resume()  # 5.
            self._open_logs(resumed_from)
            self._fill_latent_cache()
            memory = estimate_memory(self.config, self.num_parameters, self.progress.micro_batch)
            with self.hardware.reserve_for_training(memory, name=f"training {self.run_dir.name}"):
                self._log_start(resumed_from, memory)
                self._report("running")
                try:
                    self._train()  # 6.
                except Cancelled:
                    raise
                except BaseException as error:
                    self._log_crash(error)
                    raise
            self._finish()  # 7.
            self._report("finished")
        except Cancelled:
            self._report("stopped")
            raise
        except BaseException as error:
            self._report("crashed", error=one_line(error))
            raise
        finally:
            self._held.close()
            if hasattr(self, "logs"):
                self.logs.close()
        p = self.progress
        return TrainResult(self.run_dir, self.config, p.step, p.epoch, self.last_checkpoint, self.losses,
                           p.skipped_steps, p.oom_recoveries, p.micro_batch, time.perf_counter() - started)

    def _report(self, state: str, **fields: Any) -> None:
        """status.json (main process): the state and where the run is."""
        if self.status is None:
            return
        if hasattr(self, "progress"):
            fields = {**self._where(), **fields}
        self.status.write(state, **fields)

    def _where(self) -> dict[str, Any]:
        p = self.progress
        return {"step": p.step, "total_steps": self.total_steps, "epochs": self.config.train.epochs,
                "epoch": round(p.epoch + p.batch_in_epoch / max(1, self.batches_per_epoch), 4),
                "processes": self.accelerator.num_processes}

    def _log_crash(self, error: BaseException) -> None:
        p = self.progress
        latest = checkpoints.find_latest(self.run_dir)
        self.logs.error.error(
            "training stopped at step %d (epoch %d, batch %d, micro-batch %d): %s: %s; recovery: %s",
            p.step, p.epoch + 1, p.batch_in_epoch, p.micro_batch, type(error).__name__, error,
            f"`train --run {self.run_dir} --resume` continues from {latest.path.name}" if latest
            else "no checkpoint yet; start the run again", exc_info=error)

    # 0. the space -----------------------------------------------------------------------------------
    def _setup_space(self) -> None:
        """In latent space: the VAE (exactly the checkpoint's when resuming) and the config's latent geometry."""
        if self.config.model.space != "latent":
            return
        from engines.errors import InvalidRequestError
        from engines.origin.model.config import with_latent_geometry
        from engines.origin.model.latent import register_vae

        latest = checkpoints.find_latest(self.run_dir) if self.request.resume else None
        required = latest.meta.get("vae") if latest is not None else None
        self.vae_name = register_vae(self.hardware, self.config.model.vae, store=getattr(self.ctx, "models", None),
                                     require=required)
        with self.hardware.use(self.vae_name) as codec:
            self.vae_identity = codec.identity
            self.rgb_map = codec.rgb_map.clone()
            channels, factor = codec.latent_channels, codec.factor
        config = with_latent_geometry(self.config, channels, factor)
        m = config.model
        step = factor * 2 ** (len(m.channel_mult) - 1)
        if m.resolution % step:
            raise InvalidRequestError(f"In latent space the resolution must be a multiple of {step} (the VAE's "
                                      f"{factor}x times the UNet's levels), not {m.resolution}.")
        self.config = config

    def _encode(self, pixels: Any) -> Any:
        """Pixels -> latents with the run's VAE (on the training device)."""
        with self.hardware.use(self.vae_name) as codec:
            return codec.encode(pixels)

    def decode(self, latents: Any) -> Any:
        """Latents -> pixels in [-1, 1] with the run's VAE (the training samples)."""
        with self.hardware.use(self.vae_name) as codec:
            return codec.decode(latents, self.hardware)

    def _fill_latent_cache(self) -> None:
        """Latent space: run every image not cached yet through the VAE, in batches, before epoch 1."""
        from engines.origin.model.latent import ENCODE_BATCH

        if self.vae_name is None:
            return
        started = time.perf_counter()
        encoded = self.dataset.fill(ENCODE_BATCH, on_step=self.on_step)
        self.logs.main.info("latent cache: %d of %d images encoded with the VAE in %.1f s, the rest read from "
                            "the cache", encoded, len(self.dataset), time.perf_counter() - started)

    # 1. the accelerator and the run folder ---------------------------------------------------------
    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

        cpu = self.hardware.device.type == "cpu"
        precision = mixed_precision_for(self.config.train.mixed_precision, self.hardware,
                                        "cpu" if cpu else self.hardware.device.type)
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=precision,
            gradient_accumulation_steps=1,
            # The seedable sampler makes epoch e's order a function of (seed, e) alone, which is
            # what lets a resumed run see the same batches in the same order.
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True, data_seed=self.config.train.seed
            ),
            # The reference (vision) path is used on only some steps: DDP must expect unused weights.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            step_scheduler_with_optimizer=False,
        )
        self.main = self.accelerator.is_main_process
        self.precision = precision
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for note in checkpoints.recover_interrupted(self.run_dir):
                self._early_notes.append(note)
            self._write_config()
            # What `train --run R --resume` restarts from when no checkpoint was written yet.
            write_run_record(self.run_dir, data=str(Path(self.request.data).expanduser().resolve()),
                             space=self.config.model.space)
        self.accelerator.wait_for_everyone()

    def _write_config(self) -> None:
        atomic_write(self.run_dir / "config.json", self.config.save)

    # 2. the data -----------------------------------------------------------------------------------
    def _setup_data(self) -> None:
        from engines.origin.training.cache import CacheTally, TensorCache
        from engines.origin.training.data import ArtDataset, make_dataloader

        t = self.config.train
        disk = self.ctx.settings.paths.cache / "origin" if t.disk_cache else None
        self.cache = TensorCache(disk, t.ram_cache_mb * 2**20)
        self.cache_tally = CacheTally()
        root = Path(self.request.data).expanduser()
        workers = t.num_workers
        images = ArtDataset(root, self.config.model.resolution, cache=self.cache if self.vae_name is None else None)
        self._hold_out_validation(images, root)
        if self.vae_name is None:
            self.dataset = images
        else:
            from engines.origin.training.data import LatentDataset

            # Only the latents are cached (the pixels are decoded once, to encode them), and they are
            # read in this process: nothing is left for DataLoader workers to do.
            self.dataset = LatentDataset(images, self._encode, self.vae_identity, self.cache)
            workers = 0
        self.loader = make_dataloader(self.dataset, batch_size=t.batch_size, shuffle=True,
                                      num_workers=workers, device_type=self.accelerator.device.type,
                                      seed=t.seed)

    def _hold_out_validation(self, images: Any, root: Path) -> None:
        from engines.origin.training.validation import load_or_choose

        if not self.config.train.validate_every_steps:
            return
        self.validation_choice = load_or_choose(self.run_dir, images.paths, images.root, resuming=self.request.resume,
                                                write=self.main)
        if self.validation_choice.held_out:
            images.hold_out(self.validation_choice.paths)

    # 3. the network, text encoder, noise schedule and losses ---------------------------------------
    def _setup_model(self) -> None:
        import torch

        from engines.origin.model.build import build_model
        from engines.origin.model.schedule import training_scheduler
        from engines.origin.model.text_encoder import register_text_encoder
        from engines.origin.training.forward_backward import TextCache
        from engines.origin.training.losses import ArtLosses

        # The same initial weights on every process and every run with this seed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed)
            self.model = build_model(self.config.model)
        self.model.train()
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        m = self.config.model
        # The process's one text encoder, from the pool (the training samples draw with it too),
        # held for the whole run so that memory pressure never evicts it between two steps. A resumed
        # run reads captions with exactly the encoder its checkpoints recorded (None: an older
        # checkpoint that recorded none, which keeps the config's encoder and is warned about).
        latest = checkpoints.find_latest(self.run_dir) if self.request.resume else None
        self.required_text_encoder = latest.meta.get("text_encoder") if latest is not None else None
        name = register_text_encoder(self.hardware, m, store=getattr(self.ctx, "models", None),
                                     require=self.required_text_encoder)
        self.text_encoder = self._held.enter_context(self.hardware.use(name))
        self.text = TextCache(self.text_encoder)
        self.noise_scheduler = training_scheduler(self.config)
        self.art_losses = ArtLosses().to(self.accelerator.device)

    # 4. optimizer, LR schedule and controller, EMA; accelerate's prepare --------------------------
    def _setup_optimization(self) -> None:
        import torch
        from diffusers.training_utils import EMAModel

        from engines.origin.training.lr_control import AdaptiveLRController, make_scheduler, window_for
        from engines.origin.training.forward_backward import LossComputer, TrainingForward
        from engines.origin.training.checkpointing import TrainProgress, install_state_hooks

        t = self.config.train
        # No weight decay on biases and norm scales: decaying them only fights the normalisation.
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=t.learning_rate, betas=tuple(t.betas))
        self.unwrapped = self.model  # the OriginModel itself: EMA, diagnosis, checkpoints
        self.model, self.optimizer, self.loader = self.accelerator.prepare(
            TrainingForward(self.model), optimizer, self.loader
        )
        install_state_hooks(self.accelerator, self.unwrapped)
        self.batches_per_epoch = len(self.loader)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / t.gradient_accumulation)
        total = self.steps_per_epoch * t.epochs
        self.total_steps = min(total, self.request.max_steps) if self.request.max_steps else total
        self.scheduler = make_scheduler(self.optimizer, warmup_steps=t.warmup_steps, total_steps=total)
        self.controller = AdaptiveLRController(
            window=window_for(self.steps_per_epoch), warmup_steps=t.warmup_steps
        )
        self.ema = EMAModel(self.unwrapped.parameters(), decay=t.ema_decay)
        self.ema.to(self.accelerator.device)
        self.progress = TrainProgress()
        budget = self.hardware.batch_size_for(
            self.config.model.sample_size,
            ACTIVATION_BYTES_PER_CHANNEL_AT_64 * self.config.model.base_channels,
            max_batch=t.batch_size,
        )
        self.progress.micro_batch = max(1, min(t.batch_size, budget))
        self.accelerator.register_for_checkpointing(self.progress, self.scheduler, self.controller, self.ema)
        to_rgb = None
        if self.rgb_map is not None:
            from functools import partial

            from engines.origin.model.latent import latents_to_rgb

            to_rgb = partial(latents_to_rgb, rgb_map=self.rgb_map.to(self.accelerator.device))
        self.step_runner = LossComputer(self.accelerator, self.model, self.text, self.noise_scheduler,
                                        self.art_losses, self.config, to_rgb=to_rgb)
        self.log_every = _log_every(self.total_steps)

    # 5. resume ----------------------------------------------------------------------------------
    def _resume(self) -> Optional[checkpoints.CheckpointInfo]:
        from engines.origin.training.checkpointing import load_checkpoint

        if not self.request.resume:
            return None
        info = checkpoints.find_latest(self.run_dir)
        load_checkpoint(self.accelerator, info, self.ema)
        self.last_checkpoint, self._saved_at_step = info.path, info.step
        saved = int(info.meta.get("processes") or 1)
        if saved != self.accelerator.num_processes:
            self._continue_on_other_processes(saved)
        return info

    def _continue_on_other_processes(self, saved: int) -> None:
        """A run saved by ``saved`` processes resumes on another number (2 GPUs -> 1, or more).

        ``batch_in_epoch`` and the step count are in the old run's units. accelerate deals each
        epoch's batches out in turn (process i gets batches i, i+N, ...) in an order fixed by the
        seed and the epoch, so the first ``batch_in_epoch x saved`` batches of the epoch are done;
        the LR schedule continues at the same point of the data, not of the step count.
        """
        p, t = self.progress, self.config.train
        now = self.accelerator.num_processes
        before = p.batch_in_epoch
        p.batch_in_epoch = before * saved // now  # rounded down: a few images twice rather than some never
        done = p.epoch * self.steps_per_epoch + math.ceil(p.batch_in_epoch / t.gradient_accumulation)
        self.scheduler.last_epoch = done - 1
        self.scheduler.step()
        self.controller.apply(self.optimizer, self.scheduler)
        self.total_steps = p.step + max(0, self.steps_per_epoch * t.epochs - done)
        if self.request.max_steps:
            self.total_steps = min(self.total_steps, self.request.max_steps)
        self._process_change = (f"saved by {saved} process(es), continuing on {now}: batch {before} of the epoch "
                                f"becomes {p.batch_in_epoch}, the learning-rate schedule continues at step {done} "
                                f"of {self.steps_per_epoch * t.epochs}")

    def _open_logs(self, resumed_from: Optional[checkpoints.CheckpointInfo]) -> None:
        from engines.origin.training.run_logs import RunLogs

        from engines.origin.training.samples import drop_samples_after

        # A fresh start in a folder a killed run left (no checkpoint to resume) starts at step 0: the
        # old session's metrics and samples go, as a resumed run drops those past its checkpoint.
        start = self.progress.step if resumed_from is not None else 0
        self.logs = RunLogs(self.run_dir, main_process=self.main, rank=self.accelerator.process_index,
                            resume_step=start)
        if self.main:
            drop_samples_after(self.run_dir, start)
        for note in self._early_notes:
            self.logs.main.info("checkpoints: %s (left by an interrupted run)", note)
        self._early_notes = []

    def _log_start(self, resumed_from: Optional[checkpoints.CheckpointInfo], memory: int) -> None:
        from engines.origin.model.text_encoder import describe_identity

        a, t, m = self.accelerator, self.config.train, self.config.model
        if resumed_from is not None:
            p = self.progress
            self.logs.main.info("resumed from %s: epoch %d, step %d, batch %d of the epoch",
                                resumed_from.path.name, p.epoch, p.step, p.batch_in_epoch)
            if getattr(self, "_process_change", None):
                self.logs.main.info("resumed %s", self._process_change)
        self.logs.main.info(
            "training %s on %d images at %d px: %d epochs x %d steps (batch %d x %d accumulation x %d "
            "processes, micro-batch %d), %s, mixed precision %s, %.1fM parameters, ~%.2f GB reserved",
            self.run_dir.name, len(self.dataset), m.resolution, t.epochs, self.steps_per_epoch, t.batch_size,
            t.gradient_accumulation, a.num_processes, self.progress.micro_batch, a.device, self.precision,
            self.num_parameters / 1e6, memory / 2**30)
        self.logs.main.info("text encoder: %s", describe_identity(self.text_encoder.identity))
        if self.vae_identity is not None:
            from engines.origin.model.latent import describe_vae

            self.logs.main.info("latent space: VAE %s; the UNet draws %dx%dx%d latents for %d px pictures",
                                describe_vae(self.vae_identity), m.sample_size, m.sample_size, m.in_channels,
                                m.resolution)
        if resumed_from is not None and self.required_text_encoder is None:
            self.logs.main.warning("%s records no text encoder (made by an older studio): resuming with the "
                                   "config's, which must be the one it was trained with", resumed_from.path.name)
        if getattr(self.text_encoder, "is_fallback", False):
            self.logs.main.warning(
                "captions use the SHA-256 fallback embedding (%s), which knows words but not their meaning; "
                "checkpoints record it and always generate with it. For a real text model, put it in the "
                "models folder (docs/models.md) and start a new run", self.text_encoder.fallback_reason)

    # 6. the epochs ----------------------------------------------------------------------------------
    def _train(self) -> None:
        from engines.origin.training.optimizer_step import OptimizerStep

        optimizer_step = OptimizerStep(self)
        p, t = self.progress, self.config.train
        accumulation = t.gradient_accumulation
        while p.epoch < t.epochs and not self._should_stop():
            self.epoch_started = time.perf_counter()
            self.epoch_losses: list[float] = []
            loader = self._epoch_loader(p.epoch, p.batch_in_epoch)
            position = p.batch_in_epoch
            window: list[dict] = []
            optimizer_step.mark_data_start()
            for batch in loader:
                window.append(batch)
                position += 1
                if len(window) < accumulation and position < self.batches_per_epoch:
                    continue
                optimizer_step.step(window, position)
                window = []
                if self._should_stop() and position < self.batches_per_epoch:
                    return  # mid-epoch; at the epoch's end the epoch is closed (and checkpointed) first
                optimizer_step.mark_data_start()
            p.epoch += 1
            p.batch_in_epoch = 0
            self._end_of_epoch()

    def _epoch_loader(self, epoch: int, skip: int) -> Any:
        self.loader.set_epoch(epoch)
        if not skip:
            return self.loader
        loader = self.accelerator.skip_first_batches(self.loader, skip)
        loader.set_epoch(epoch)
        return loader

    def _should_stop(self) -> bool:
        p = self.progress
        return bool(self.request.max_steps and p.step >= self.request.max_steps)

    def steer(self) -> None:
        """At the top of each step: Stop, Save now, Sample now (the cancel token or the run folder's
        control flags) and the safety checkpoint's timer. On several processes the main one reads
        the flags and the clock and one collective tells all: every process must save or stop at
        the same step, or the others wait forever in the next one."""
        import torch

        p, t = self.progress, self.config.train
        cancelled = float(bool(self.cancel is not None and self.cancel.cancelled))
        flags = [cancelled, 0.0, 0.0, 0.0]  # stop, save now, sample now, safety checkpoint due
        if self.main:
            pending = self.control.pending()
            due = t.safety_checkpoint_minutes > 0 and \
                time.monotonic() - self._saved_at_time >= t.safety_checkpoint_minutes * 60
            flags = [max(cancelled, float("stop" in pending)), float("save" in pending),
                     float("sample" in pending), float(due)]
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(torch.tensor(flags, device=self.accelerator.device), "sum").tolist()
        stop, save_now, sample_now, safety_due = (flag > 0 for flag in flags)
        if self.status is not None:
            self.status.tick(**self._where())
        can_save = self.request.write_checkpoints and p.step > 0 and self._saved_at_step != p.step
        if stop:
            if can_save:
                self.save("step")
            if self.main:
                self.control.clear("stop")
            self.logs.main.info("stopped by the artist at step %d; the checkpoint is saved", p.step)
            raise Cancelled("Training stopped; resume it later with --resume, nothing is lost.")
        if save_now:
            if can_save:
                self.save("step")
            if self.main:
                self.control.clear("save")
                self.logs.main.info("step %d: checkpoint saved on request", p.step)
        elif safety_due and can_save:
            self.save("safety")
        if sample_now:
            self.sample_requested = True
            if self.main:
                self.control.clear("sample")

    def _end_of_epoch(self) -> None:
        p, t = self.progress, self.config.train
        seconds = time.perf_counter() - self.epoch_started
        finite = [x for x in self.epoch_losses if math.isfinite(x)]
        mean = sum(finite) / len(finite) if finite else float("nan")
        self.logs.main.info("epoch %d/%d done in %.1f s: mean loss %.4f, data cache %s", p.epoch, t.epochs,
                            seconds, mean, _cache_line(self.cache_tally.end_epoch()))
        if self.status is not None:
            self.status.tick(**self._where(), epoch_seconds=round(seconds, 3))
        milestone = p.epoch in t.milestones
        due = p.epoch % t.checkpoint_every_epochs == 0 or p.epoch == t.epochs
        if self.request.write_checkpoints and (milestone or due):
            self.save("milestone" if milestone else "epoch", loss=mean)

    def save(self, kind: str, **meta: Any) -> Path:
        """A checkpoint of the current state (every process calls this together)."""
        from engines.origin.training.checkpointing import checkpoint_name, save_checkpoint

        p = self.progress
        name = checkpoint_name(kind, epoch=p.epoch, step=p.step)
        self._checkpoints_written += 1
        pause = (self.faults.pause_in_checkpoint_s
                 if self._checkpoints_written >= self.faults.pause_from_checkpoint else 0.0)
        started = time.perf_counter()
        path = save_checkpoint(
            self.accelerator,
            self.run_dir,
            name,
            model=self.unwrapped,
            ema=self.ema,
            config=self.config,
            progress=p,
            pause_s=pause,
            meta={
                "kind": kind,
                "lr": self.optimizer.param_groups[0]["lr"],
                "lr_scale": self.controller.scale,
                "processes": self.accelerator.num_processes,
                "data": str(self.request.data),
                "text_encoder": self.text_encoder.identity,  # generation and --resume require exactly it
                "space": self.config.model.space,
                "vae": self.vae_identity,  # latent space: generation and --resume require exactly it
                **meta,
            },
        )
        self.last_checkpoint, self._saved_at_step = path, p.step
        self._saved_at_time = time.monotonic()
        if self.status is not None:
            self._report(self.status.fields.get("state", "running"), last_checkpoint=name)
        if self.main:
            removed = checkpoints.prune(self.run_dir, self.config.train.keep_checkpoints)
            self.logs.main.info("checkpoint %s written in %.1f s%s", name, time.perf_counter() - started,
                                f"; removed {', '.join(r.name for r in removed)}" if removed else "")
        self.accelerator.wait_for_everyone()
        return path

    def validate(self, number: int) -> None:
        """The validation loss into metrics.jsonl (main process; see validation.py)."""
        from engines.errors import is_torch_oom

        validator = self._build_validator()
        if validator is None:
            return
        try:
            result = validator.measure(self.unwrapped, self.text, self.noise_scheduler, self.config,
                                       self.accelerator.device, batch=self.progress.micro_batch,
                                       autocast=self.accelerator.autocast)
        except Exception as error:  # noqa: BLE001 - a measurement must never stop a days-long run
            if is_torch_oom(error):
                self.hardware.free_cached_memory()
            self.logs.error.exception("step %d: the validation loss failed (%s); training continues", number, error)
            return
        self.logs.metrics({"step": number, "epoch": self._where()["epoch"], "validation": result})

    def _build_validator(self) -> Any:
        from engines.origin.model.pixels import load_image_uint8, to_model_range
        from engines.origin.training.data import read_caption
        from engines.origin.training.validation import build_validator

        if self._validator_built or self.validation_choice is None:
            return self._validator
        self._validator_built = True
        resolution = self.config.model.resolution

        def load(path: Path) -> tuple[Any, str]:
            pixels = to_model_range(load_image_uint8(path, resolution))
            if self.vae_name is not None:
                pixels = self._encode(pixels.unsqueeze(0))[0].float().cpu()
            return pixels, read_caption(path)

        self._validator = build_validator(self.validation_choice, Path(self.request.data).expanduser(), load,
                                          num_timesteps=self.config.train.num_train_timesteps)
        if self._validator is not None:
            self.logs.main.info(
                "validation loss: %d %s at timesteps %s with fixed noise, every %d steps", len(self._validator),
                "held-out images" if self._validator.held_out else
                "training images (the dataset is too small to hold any out)",
                self._validator.timesteps, self.config.train.validate_every_steps)
        return self._validator

    def note_skip(self) -> None:
        self.progress.skipped_steps += 1
        self._skips_in_a_row += 1
        if self._skips_in_a_row >= MAX_SKIPS_IN_A_ROW:
            raise TrainingDivergedError(
                f"Training diverged: {MAX_SKIPS_IN_A_ROW} steps in a row had NaN/Inf losses; resume from the "
                "last checkpoint with a lower learning_rate in the config (see logs/error.log).")

    def note_good_step(self) -> None:
        self._skips_in_a_row = 0

    # 7. the end ----------------------------------------------------------------------------------
    def _finish(self) -> None:
        p = self.progress
        if self.request.write_checkpoints and p.step > 0 and self._saved_at_step != p.step:
            self.save("step")  # stopped by max_steps between two scheduled checkpoints
        self.logs.main.info("training finished: %d steps, %d epochs, %d skipped steps, %d out-of-memory "
                            "recoveries", p.step, p.epoch, p.skipped_steps, p.oom_recoveries)
        self.logs.flush()


def one_line(error: BaseException) -> str:
    """An exception as the one line the Training tab shows for a crashed run."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _cache_line(stats: dict[str, float]) -> str:
    if not stats.get("lookups"):
        return "not used"
    return (f"{stats['hit_rate'] * 100:.0f} % hits (RAM {stats['ram_hit_rate'] * 100:.0f} %, "
            f"disk {stats['disk_hit_rate'] * 100:.0f} %)")

