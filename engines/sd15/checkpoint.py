"""One SD 1.5 checkpoint in the HardwareManager's pool, with the LoRAs and embeddings a job asks for.

    models = Sd15Models(hardware, store)
    name = models.ensure(CheckpointRef("anything-v5.safetensors", vae="stabilityai/sd-vae-ft-mse"))
    with hardware.use(name) as base:                 # the pooled StableDiffusionPipeline
        models.apply_networks(base, loras, embeddings)
        img2img = derive_pipeline(StableDiffusionImg2ImgPipeline, base)   # same UNet, VAE, CLIP

Why only the base pipeline is pooled: a derived pipeline kept in the pool would hold on to the
base's components after the base is evicted and reloaded, and the checkpoint would then live in
memory twice. ``from_pipe`` copies no weights (bench/bench_from_pipe.py), so each job derives the
pipeline it needs from the pooled base, and Text-to-Manga, Live-Action and Animation share one copy.

LoRAs and embeddings change the pooled weights (PEFT adapters, new token rows), so what a pipeline
carries is recorded on it: a LoRA stays loaded as an adapter and is switched on, weighted or off
per job; a file replaced on disk is loaded again; a reloaded base starts clean. Each job runs under
the GPU lock, so two jobs never see each other's adapters.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from engines.errors import CorruptModelError, InvalidRequestError
from engines.files import FileStamp
from engines.hardware import HardwareManager, MemoryPolicy
from engines.models import ModelStore
from engines.progress import CancelToken, OnStep, no_progress
from engines.sd15.library import NetworkFile

log = logging.getLogger(__name__)

# Activations of a 512x768 SD 1.5 UNet step with classifier-free guidance, in half precision.
POLICY = MemoryPolicy(working_bytes=1024 * 2**20)
MAX_LOADED_LORAS = 8  # adapters kept loaded between jobs; the least recently used go first


@dataclass(frozen=True)
class CheckpointRef:
    """Which checkpoint: an HF id, a diffusers folder or a single file, and an optional VAE override."""

    model: str
    vae: Optional[str] = None

    @property
    def pool_name(self) -> str:
        return f"sd15:{self.model}" + (f"+vae:{self.vae}" if self.vae else "")


@dataclass(frozen=True)
class LoraUse:
    """A LoRA in a job: A1111's ``<lora:name:w>`` or ``<lora:name:te:unet>``."""

    file: NetworkFile
    weight: float = 1.0
    unet_weight: Optional[float] = None

    @property
    def text_encoder_weight(self) -> float:
        return self.weight


def _adapter_name(file: NetworkFile) -> str:
    # PEFT keeps adapters in ModuleDicts: no dots; the path's hash keeps two files named alike apart.
    slug = re.sub(r"\W+", "_", file.name.lower()).strip("_")[:40] or "lora"
    return f"{slug}_{hashlib.sha1(str(file.path).encode()).hexdigest()[:6]}"


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:160]


class Sd15Models:
    """Loads SD 1.5 checkpoints into the pool and fits them with LoRAs and embeddings per job."""

    def __init__(self, hardware: HardwareManager, store: ModelStore) -> None:
        self.hardware = hardware
        self.store = store

    # -- the checkpoint ---------------------------------------------------------------------
    def check(self, ref: CheckpointRef) -> None:
        """Resolve the model and VAE references (no network, nothing loaded): one sentence if wrong."""
        self.store.resolve(ref.model)
        if ref.vae:
            self.store.resolve(ref.vae)

    def ensure(self, ref: CheckpointRef, on_step: OnStep = no_progress, cancel: CancelToken | None = None) -> str:
        """Register the checkpoint in the pool (downloading it first if needed); returns its pool name."""
        name = ref.pool_name
        if self.hardware.is_registered(name):
            return name
        # Download before loading, so the artist sees the download's progress and it can be cancelled.
        for model in (ref.model, ref.vae):
            if model:
                self.store.ensure_local(model, on_step=on_step, cancel=cancel)

        def loader() -> Any:
            return self._load(ref)

        files = [*self.store.files_for(ref.model), *(self.store.files_for(ref.vae) if ref.vae else [])]
        on_step(0, 1, f"Loading {Path(ref.model).name}")
        self.hardware.register(name, loader(), loader=loader, policy=POLICY, activate=False, files=files)
        return name

    def _load(self, ref: CheckpointRef) -> Any:
        from diffusers import AutoencoderKL, StableDiffusionPipeline

        dtype = self.hardware.dtype("inference")
        kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
        if ref.vae:
            kwargs["vae"] = self.store.load_model(ref.vae, AutoencoderKL, torch_dtype=dtype)
        pipe = self.store.load_pipeline(ref.model, StableDiffusionPipeline, torch_dtype=dtype, **kwargs)
        if not isinstance(pipe, StableDiffusionPipeline) or pipe.unet.config.cross_attention_dim != (
            pipe.text_encoder.config.hidden_size
        ):
            raise InvalidRequestError(f"'{ref.model}' is not a Stable Diffusion 1.5 checkpoint.")
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- LoRAs and embeddings -----------------------------------------------------------------
    def apply_networks(self, pipe: Any, loras: Sequence[LoraUse], embeddings: Sequence[NetworkFile]) -> None:
        """Fit the pooled pipeline with exactly these LoRAs (at these weights) and these embeddings."""
        for item in embeddings:
            self._load_embedding(pipe, item)
        loaded: dict[str, FileStamp] = pipe.__dict__.setdefault("_inkframe_loras", {})
        wanted = [(_adapter_name(u.file), u) for u in loras]
        for adapter, use in wanted:
            stamp = loaded.get(adapter)
            if stamp is not None and not stamp.changed():
                loaded[adapter] = loaded.pop(adapter)  # most recently used last
                continue
            if stamp is not None:
                pipe.delete_adapters(adapter)
                del loaded[adapter]
            self._load_lora(pipe, use.file, adapter)
            loaded[adapter] = FileStamp.of([use.file.path])
        keep = {a for a, _ in wanted}
        for adapter in [a for a in loaded if a not in keep][: max(0, len(loaded) - MAX_LOADED_LORAS)]:
            pipe.delete_adapters(adapter)
            del loaded[adapter]
        if not loaded:
            return
        if not wanted:
            pipe.disable_lora()
            return
        pipe.enable_lora()
        weights = [{"unet": u.unet_weight if u.unet_weight is not None else u.weight,
                    "text_encoder": u.text_encoder_weight} for _, u in wanted]
        pipe.set_adapters([a for a, _ in wanted], adapter_weights=weights)

    def _load_lora(self, pipe: Any, file: NetworkFile, adapter: str) -> None:
        state = self.store.load_state_dict(file.path)
        try:
            pipe.load_lora_weights(state, adapter_name=adapter)
        except (ValueError, RuntimeError, KeyError, TypeError) as error:
            raise InvalidRequestError(
                f"LoRA '{file.name}' does not fit this SD 1.5 checkpoint ({_short(error)}); "
                "it may be made for another model family such as SDXL."
            ) from error
        log.info("loaded LoRA %s as adapter %s", file.path, adapter)

    def _load_embedding(self, pipe: Any, file: NetworkFile) -> None:
        loaded: dict[str, tuple[FileStamp, list[str]]] = pipe.__dict__.setdefault("_inkframe_embeddings", {})
        current = loaded.get(file.name)
        if current is not None and not current[0].changed():
            return
        if current is not None:
            pipe.unload_textual_inversion(current[1])
        state = _read_embedding(self.store, file)
        before = set(pipe.tokenizer.get_vocab())
        try:
            pipe.load_textual_inversion(state, token=file.name, tokenizer=pipe.tokenizer,
                                        text_encoder=pipe.text_encoder)
        except (ValueError, RuntimeError, KeyError, TypeError) as error:
            raise InvalidRequestError(
                f"Embedding '{file.name}' does not fit this SD 1.5 checkpoint ({_short(error)}); "
                "it may be made for another model family such as SDXL."
            ) from error
        tokens = sorted(set(pipe.tokenizer.get_vocab()) - before)
        loaded[file.name] = (FileStamp.of([file.path]), tokens)
        log.info("loaded embedding %s (%d vectors)", file.path, len(tokens))


def _read_embedding(store: ModelStore, file: NetworkFile) -> Any:
    """An embedding's vectors, ``[vectors, width]``, from A1111's or diffusers' layouts.

    A1111's ``.safetensors`` holds ``emb_params``; its ``.pt`` nests the vectors in ``string_to_param``
    (read with ``weights_only``: a pickle from the internet never runs code); diffusers' holds one key.
    """
    import pickle

    import torch

    path = file.path
    if path.suffix.lower() == ".safetensors":
        data: Any = store.load_state_dict(path)
    else:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
            raise CorruptModelError(
                f"Embedding '{file.name}' cannot be read safely ({_short(error)}): use its .safetensors version."
            ) from error
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        data = data["string_to_param"]
    if isinstance(data, dict) and ("clip_l" in data or "clip_g" in data):
        raise InvalidRequestError(f"Embedding '{file.name}' is made for SDXL, not SD 1.5.")
    tensors = [v for k, v in (data.items() if isinstance(data, dict) else []) if isinstance(v, torch.Tensor)]
    if isinstance(data, dict) and isinstance(data.get("emb_params"), torch.Tensor):
        tensors = [data["emb_params"]]
    if len(tensors) != 1:
        raise CorruptModelError(f"'{path.name}' is not a textual-inversion embedding (no single set of vectors).")
    vectors = tensors[0]
    return vectors if vectors.dim() > 1 else vectors[None]
