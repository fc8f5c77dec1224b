"""Writing and reading the trainer's checkpoints (the layout is ``model/checkpoints.py``'s).

    <ckpt>/training_state/   accelerate's save_state: optimizer, GradScaler, RNG states of every
                             process (python, numpy, torch, CUDA), the DataLoader's sampler, and the
                             objects registered for checkpointing: TrainProgress, the LR scheduler,
                             the LR controller and the EMA weights
    <ckpt>/model.safetensors the raw weights, written and read by accelerate's state hooks (below)
    <ckpt>/ema.safetensors   the EMA weights under the model's parameter names
    <ckpt>/meta.json         written last: the completeness marker

On several GPUs every process writes its own RNG state into the same folder, so the main
process creates the temporary folder and tells the others its name.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from engines.origin.model import checkpoints
from engines.origin.model.config import OriginConfig

STATE_DIR = "training_state"


@dataclass
class TrainProgress:
    """Where the run is; checkpointed so ``--resume`` continues at the very next batch."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps done
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    micro_batch: int = 0  # samples per forward pass (smaller than the batch after an out-of-memory)
    samples_seen: int = 0
    skipped_steps: int = 0
    oom_recoveries: int = 0

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, int(state[f.name]))


def checkpoint_name(kind: str, *, epoch: int, step: int) -> str:
    """``epoch-000010`` / ``milestone-000050`` (by epoch), ``step-000500`` / ``emergency-000123``."""
    number = epoch if kind in ("epoch", "milestone") else step
    return f"{kind}-{number:06d}"


def ema_state_dict(model: Any, ema: Any) -> dict[str, Any]:
    """The model's state dict with each parameter replaced by its EMA shadow, ready for safetensors."""
    state = dict(model.state_dict())
    for (name, _), shadow in zip(model.named_parameters(), ema.shadow_params):
        state[name] = shadow
    return _safetensors_ready(state)


def _safetensors_ready(state: dict[str, Any]) -> dict[str, Any]:
    # safetensors refuses tensors that share memory; clone only those.
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:
            tensor = tensor.clone()
        seen.add(pointer)
        out[key] = tensor
    return out


def install_state_hooks(accelerator: Any, model: Any) -> None:
    """Let save_state/load_state keep the weights in ``<ckpt>/model.safetensors`` under the
    OriginModel's own names (diffusers' training scripts do the same with save_pretrained).

    Without them accelerate would store a second copy inside training_state/, under the names of
    whatever wraps the model (DDP's ``module.``, the trainer's ``TrainingForward``), which the
    sampler cannot load.
    """
    from safetensors.torch import load_file, save_file

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        if accelerator.is_main_process:
            save_file(
                _safetensors_ready(model.state_dict()),
                str(Path(output_dir).parent / "model.safetensors"),
                metadata={"format": "pt"},
            )
        weights.clear()

    def load_hook(models: list, input_dir: str) -> None:
        # safetensors takes "cuda:0" but refuses "cpu:0", what a CPU process of accelerate launch has.
        device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
        model.load_state_dict(load_file(str(Path(input_dir).parent / "model.safetensors"), device=device))
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _shared_folder(accelerator: Any, folder: Optional[Path]) -> Path:
    if accelerator.num_processes == 1:
        return Path(folder)  # type: ignore[arg-type]
    from accelerate.utils import broadcast_object_list

    names = [str(folder) if folder is not None else None]
    broadcast_object_list(names, from_process=0)
    return Path(names[0])  # type: ignore[arg-type]


def save_checkpoint(accelerator: Any, run_dir: Path, name: str, *, model: Any, ema: Any, config: OriginConfig,
                    progress: TrainProgress, meta: dict[str, Any], pause_s: float = 0.0) -> Path:
    """Write ``checkpoints/<name>`` atomically from every process; returns its final path.

    ``model`` is the OriginModel itself (unwrapped); ``install_state_hooks`` must have run.

    ``pause_s`` (tests only) sleeps just before meta.json, where a kill -9 must leave the
    previous checkpoint the newest complete one.
    """
    from safetensors.torch import save_file

    main = accelerator.is_main_process
    with checkpoints.atomic_checkpoint_dir(run_dir, name) if main else nullcontext(None) as tmp:
        folder = _shared_folder(accelerator, tmp)
        accelerator.save_state(str(folder / STATE_DIR), safe_serialization=True)
        accelerator.wait_for_everyone()
        if main:
            save_file(ema_state_dict(model, ema), str(folder / "ema.safetensors"), metadata={"format": "pt"})
            if pause_s:
                time.sleep(pause_s)
            checkpoints.write_meta(folder, epoch=progress.epoch, step=progress.step, config=config,
                                   progress=progress.state_dict(), **meta)
    accelerator.wait_for_everyone()
    return Path(run_dir) / "checkpoints" / name


def load_checkpoint(accelerator: Any, info: checkpoints.CheckpointInfo, ema: Any) -> None:
    """Restore everything ``save_checkpoint`` wrote (the registered objects included)."""
    accelerator.load_state(str(info.path / STATE_DIR))
    ema.to(accelerator.device)  # torch.load put the shadow weights on the CPU
