"""Text to picture with an SD 1.5 checkpoint, A1111-style: the SD backend of Text-to-Manga.

    result = generate(Sd15Request(model="anything-v5.safetensors", prompt="1girl, rooftop, night"),
                      hardware, store, on_step=bar, cancel=token)

The steps: 1. check the request and find its LoRAs and embeddings (engines/sd15/request.py),
2. load the checkpoint into the pool once per process (engines/sd15/checkpoint.py), 3. fit it with
this job's LoRAs and embeddings and build the sampler's scheduler, 4. encode the prompt and the
negative prompt A1111's way (engines/sd15/conditioning.py), 5. denoise each batch from per-picture
seeded noise, 6. the hires fix: upscale and denoise again at a strength, 7. decode and write each PNG
with A1111's ``parameters`` and Inkframe's JSON (engines/sd15/png_params.py).

Seeds: picture i of a job gets ``seed + i`` and its own noise generator on the CPU, so any picture
of a batch is made again alone from its seed, and a seed gives the same noise on every device.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from engines import __version__
from engines.errors import Cancelled
from engines.files import picture_paths
from engines.models import ModelStore, derive_pipeline
from engines.progress import CancelToken, OnStep, no_progress
from engines.sd15.checkpoint import Sd15Models
from engines.sd15.conditioning import encode_pair
from engines.sd15.file_hashes import job_hashes
from engines.sd15.library import Sd15Library
from engines.sd15.png_params import GenerationParameters, save_png
from engines.sd15.preview import latent_preview
from engines.sd15.reference import adapter_files, fit_reference, reference_kwargs
from engines.sd15.request import Sd15Plan, Sd15Request, check
from engines.sd15.samplers import build_scheduler

log = logging.getLogger(__name__)

PANELS_FOLDER = "panels"


@dataclass(frozen=True)
class Picture:
    path: Path
    seed: int
    parameters: GenerationParameters  # what A1111 reads
    inkframe: dict[str, Any]  # everything needed to make it again


@dataclass(frozen=True)
class Sd15Result:
    pictures: tuple[Picture, ...]
    seconds: float


class _Progress:
    """One bar over the whole job: every denoising step of every batch and hires pass."""

    def __init__(self, plan: Sd15Plan, on_step: OnStep, cancel: Optional[CancelToken]) -> None:
        r = plan.request
        hires = int((r.hires_steps or r.steps) * r.hires_strength) if plan.hires else 0
        self.total = r.batch_count * (r.steps + hires)
        self.done = 0
        self.on_step, self.cancel, self.every = on_step, cancel, r.preview_every

    def callback(self, message: str):
        start = self.done

        def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            self.done = min(self.total, start + step + 1)
            preview = None
            if self.every and (step + 1) % self.every == 0 and "latents" in kwargs:
                preview = latent_preview(pipe, kwargs["latents"])
            self.on_step(self.done, self.total, message, preview)
            if self.cancel is not None and self.cancel.cancelled:
                pipe._interrupt = True  # diffusers' own way out of the denoising loop
            return {}

        return on_step_end

    def raise_if_cancelled(self, saved: int) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            raise Cancelled(f"Stopped; {saved} picture{'s' if saved != 1 else ''} saved before it.")


def _generators(seeds: list[int]) -> list[Any]:
    import torch

    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def _output_paths(request: Sd15Request, outputs: Path, seeds: list[int]) -> list[Path]:
    if request.output is not None:
        first = Path(request.output).expanduser()
        return [first] + [first.with_name(f"{first.stem}-{i + 1}{first.suffix}") for i in range(1, len(seeds))]
    now = datetime.now()
    folder = Path(request.output_dir).expanduser() if request.output_dir else outputs / PANELS_FOLDER / (
        now.strftime("%Y-%m-%d"))
    return picture_paths(folder, seeds, now.strftime("%H%M%S"))


def generate(request: Sd15Request, hardware: Any, store: ModelStore, *, on_step: OnStep = no_progress,
             cancel: Optional[CancelToken] = None, outputs: Optional[Path] = None) -> Sd15Result:
    """Make ``batch_count x batch_size`` pictures; each is saved as soon as it is decoded."""
    started = time.perf_counter()
    # 1. everything that can be checked before loading
    library = Sd15Library(store.models_dir)
    plan = check(request, library)
    models = Sd15Models(hardware, store)
    models.check(plan.checkpoint)
    if plan.reference_image is not None:
        adapter_files(store, request.reference_variant)  # there (or downloaded) before the checkpoint loads
    first = request.seed if request.seed is not None else int.from_bytes(os.urandom(4), "little")
    count = request.batch_count * request.batch_size
    seeds = [(first + i) % 2**32 for i in range(count)]
    paths = _output_paths(request, Path(outputs or store.models_dir.parent / "outputs"), seeds)
    progress = _Progress(plan, on_step, cancel)
    pictures: list[Picture] = []

    # 2. the checkpoint, once per process
    name = models.ensure(plan.checkpoint, on_step, cancel)
    out_of_memory = (f"Out of memory at {request.width}x{request.height}"
                     f"{' with the hires fix' if plan.hires else ''}; lower the size, the batch size or the hires "
                     "scale, or set a lower --vram-limit so the studio offloads more.")
    with hardware.gpu_job("generate", out_of_memory=out_of_memory), hardware.use(name) as base:
        # 3. this job's LoRAs and embeddings, and the sampler
        on_step(0, progress.total, "Preparing LoRAs and embeddings" if plan.loras or plan.embeddings else "")
        models.apply_networks(base, plan.loras, plan.embeddings)
        referenced = plan.reference_image is not None
        fit_reference(base, store, request.reference_variant if referenced else None, hardware.dtype("inference"))
        pipe = derive_pipeline(type(base), base, scheduler=build_scheduler(plan.sampler, base.scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        ip_kwargs = reference_kwargs(pipe, plan.reference_image, plan.second_image, request.reference_scale,
                                     request.reference_split, request.width, request.height) if referenced else {}
        # 4. the prompts
        positive, negative = encode_pair(pipe, plan.prompt, plan.negative, request.clip_skip)
        size = request.batch_size
        for batch in range(request.batch_count):
            batch_seeds = seeds[batch * size:(batch + 1) * size]
            # 5. denoise
            latents = pipe(
                prompt_embeds=positive, negative_prompt_embeds=negative, height=request.height,
                width=request.width, num_inference_steps=request.steps, guidance_scale=request.cfg,
                num_images_per_prompt=size, generator=_generators(batch_seeds), output_type="latent",
                callback_on_step_end=progress.callback(f"picture {batch * size + 1}/{count}"), **ip_kwargs,
            ).images
            progress.raise_if_cancelled(len(pictures))
            # 6. the hires fix
            if plan.hires:
                latents = _hires_pass(pipe, plan, latents, positive, negative, batch_seeds, hardware, progress,
                                      ip_kwargs)
                progress.raise_if_cancelled(len(pictures))
            # 7. decode and save
            images = _decode(pipe, latents, hardware)
            for offset, image in enumerate(images):
                index = batch * size + offset
                pictures.append(_save(image, paths[index], plan, seeds[index], store))
    seconds = time.perf_counter() - started
    log.info("generated %d picture(s) with %s in %.1f s", len(pictures), plan.checkpoint.model, seconds)
    return Sd15Result(tuple(pictures), seconds)


def _hires_pass(pipe: Any, plan: Sd15Plan, latents: Any, positive: Any, negative: Any, seeds: list[int],
                hardware: Any, progress: _Progress, extra: dict[str, Any]) -> Any:
    """A1111's hires fix: the first pass upscaled, then denoised again from ``hires_strength``."""
    from diffusers import StableDiffusionImg2ImgPipeline

    r = plan.request
    width, height = plan.hires_size
    if plan.second_image is not None:  # the halves' masks at the new size
        extra = reference_kwargs(pipe, plan.reference_image, plan.second_image, r.reference_scale,
                                 r.reference_split, width, height)
    img2img = derive_pipeline(StableDiffusionImg2ImgPipeline, pipe,
                              scheduler=build_scheduler(plan.sampler, pipe.scheduler.config))
    img2img.set_progress_bar_config(disable=True)
    if r.hires_upscaler == "latent":
        import torch.nn.functional as F

        factor = pipe.vae_scale_factor
        image: Any = F.interpolate(latents, size=(height // factor, width // factor), mode="bilinear")
    else:
        from PIL import Image

        image = [picture.resize((width, height), Image.Resampling.LANCZOS)
                 for picture in _decode(pipe, latents, hardware)]
    return img2img(
        prompt_embeds=positive, negative_prompt_embeds=negative, image=image, strength=r.hires_strength,
        num_inference_steps=r.hires_steps or r.steps, guidance_scale=r.cfg, generator=_generators(seeds),
        output_type="latent", callback_on_step_end=progress.callback("hires fix"), **extra,
    ).images


def _decode(pipe: Any, latents: Any, hardware: Any) -> list[Any]:
    pixels = hardware.decode_latents(pipe.vae, latents / pipe.vae.config.scaling_factor)
    return pipe.image_processor.postprocess(pixels.detach(), output_type="pil")


def _save(image: Any, path: Path, plan: Sd15Plan, seed: int, store: ModelStore) -> Picture:
    r = plan.request
    hashed = job_hashes(store, plan.checkpoint.model, plan.loras)
    single, model_hash, loras = hashed.single_file, hashed.model, hashed.loras
    extra: list[tuple[str, str]] = []
    if plan.hires:
        extra.append(("Hires upscaler", "Latent" if r.hires_upscaler == "latent" else "Lanczos"))
    if plan.reference_image is not None:
        extra += [("IP-Adapter", f"ip-adapter {r.reference_variant}"), ("IP-Adapter scale", f"{r.reference_scale:g}")]
        if plan.second_image is not None:
            extra.append(("IP-Adapter regions", r.reference_split))
    if plan.checkpoint.vae:
        vae = plan.checkpoint.vae
        extra.append(("VAE", Path(vae).stem if vae.lower().endswith((".safetensors", ".pt", ".ckpt")) else vae))
    extra.append(("Version", f"Inkframe {__version__}"))
    parameters = GenerationParameters(
        prompt=r.prompt, negative=r.negative, steps=r.steps, sampler=plan.sampler, cfg=float(r.cfg), seed=seed,
        width=r.width, height=r.height, model=Path(plan.checkpoint.model).stem if single else plan.checkpoint.model,
        model_hash=model_hash, clip_skip=r.clip_skip, loras=loras,
        hires_scale=r.hires_scale if plan.hires else None,
        hires_steps=(r.hires_steps or None) if plan.hires else None,
        hires_strength=r.hires_strength if plan.hires else None, extra=tuple(extra),
    )
    again = dataclasses.replace(r, seed=seed, batch_count=1, batch_size=1, output=None, output_dir=None,
                                preview_every=0)
    request_fields = {k: (list(map(list, v)) if k == "loras" else list(v) if isinstance(v, tuple)
                          else str(v) if isinstance(v, Path) else v)
                      for k, v in dataclasses.asdict(again).items()}
    inkframe = {
        "backend": "sd15", "studio_version": __version__, "request": request_fields, "sampler": plan.sampler,
        "size": [image.width, image.height], "model_hash": model_hash,
        "loras": [{"name": u.file.name, "path": str(u.file.path), "weight": u.weight,
                   "unet_weight": u.unet_weight, "hash": h} for u, (_, h) in zip(plan.loras, loras)],
        "embeddings": [{"name": e.name, "path": str(e.path)} for e in plan.embeddings],
    }
    saved = save_png(image, path, parameters, inkframe)
    return Picture(Path(saved), seed, parameters, inkframe)
