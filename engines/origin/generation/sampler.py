"""Generate a manga panel with a trained Origin model: text (and an optional reference) in, PNG out.

    request = GenerateRequest(model="runs/my-style", prompt="manga girl, forest background", output=Path("a.png"))
    check(request)                       # every bad value as one sentence, before anything loads
    result = generate(request, hardware, on_step=bar, cancel=token)

The steps, as in a diffusers pipeline: 1. check, 2. load the checkpoint and the text encoder into
the HardwareManager's pool (once per process), 3. prepare the reference and the scheduler, 4. encode
the prompt and the unconditional (negative) prompt, 5. denoise from seeded noise with the chosen
diffusers scheduler and classifier-free guidance, 6. enhance and upscale, 7. write the PNG with
every parameter in its metadata.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from engines import __version__
from engines.errors import CorruptModelError, InvalidRequestError, StudioError
from engines.files import atomic_write
from engines.origin.generation.enhance import (UPSCALES, EnhanceSettings, SuperResolution, describe_upscaler, enhance,
                                    find_sr_model)
from engines.origin.model import checkpoints
from engines.origin.model.config import OriginConfig
from engines.origin.model.schedule import training_scheduler
from engines.origin.model.pixels import DECODE_ERRORS, load_image_uint8, tensor_to_pil, to_model_range
from engines.progress import CancelToken, OnStep, no_progress

log = logging.getLogger(__name__)

# The artist's name for a sampler -> the diffusers scheduler class that implements it.
SAMPLERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
}
MAX_STEPS = 1000
MAX_CFG = 30.0
MAX_SIDE = 2048
DEFAULT_GUIDANCE_RESCALE = 0.7  # the paper's value


@dataclass(frozen=True)
class GenerateRequest:
    model: Union[str, Path]  # a run folder (its newest checkpoint) or one checkpoint folder
    prompt: str
    output: Path
    negative: str = ""  # what to steer away from; replaces the empty unconditional caption
    seed: Optional[int] = None  # None: a random seed, recorded in the metadata
    steps: int = 30
    cfg: float = 5.0  # classifier-free guidance scale; 1 = no guidance
    # Guidance rescale (Lin et al. 2023, section 3.4): pulls the guided prediction's spread back to
    # the conditional one's, so strong guidance does not burn a zero_snr model's colours into
    # noise. None: 0.7 for zero_snr models, 0 (off) for the others.
    guidance_rescale: Optional[float] = None
    sampler: str = "ddim"  # ddpm | ddim | dpm++ | euler_a
    reference: Optional[Path] = None  # style reference / previous panel
    # Latent-space models: where their VAE is now (an id, folder or file), when it is no longer where
    # the checkpoint says; its weights must be the recorded ones. None: the recorded place.
    vae: Optional[str] = None
    upscale: int = 1  # 1, 2 or 4
    width: Optional[int] = None  # None: the model's training resolution
    height: Optional[int] = None
    enhance: EnhanceSettings = field(default_factory=EnhanceSettings)
    preview_every: int = 0  # send a preview image to on_step every N steps (0: never)


@dataclass(frozen=True)
class GenerateResult:
    path: Path
    image: Any  # PIL.Image, the saved picture
    parameters: dict[str, Any]  # exactly what went into the PNG metadata
    seconds: float


def check(request: GenerateRequest) -> None:
    """Reject bad values with one sentence each, before any model is loaded."""
    if not str(request.model).strip():
        raise InvalidRequestError("Choose an Origin model: a run folder or one of its checkpoints.")
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise InvalidRequestError("Write a prompt describing the panel to generate.")
    if not isinstance(request.steps, int) or not 1 <= request.steps <= MAX_STEPS:
        raise InvalidRequestError(f"Steps must be a whole number from 1 to {MAX_STEPS}, not {request.steps}.")
    if not isinstance(request.cfg, (int, float)) or not math.isfinite(request.cfg) or not 0 <= request.cfg <= MAX_CFG:
        raise InvalidRequestError(f"The guidance scale (cfg) must be between 0 and {MAX_CFG:g}, not {request.cfg}.")
    rescale = request.guidance_rescale
    if rescale is not None and (not isinstance(rescale, (int, float)) or not 0 <= rescale <= 1):
        raise InvalidRequestError(f"The guidance rescale must be between 0 and 1, not {rescale}.")
    if request.sampler not in SAMPLERS:
        raise InvalidRequestError(f"Sampler '{request.sampler}' is not one of {', '.join(SAMPLERS)}.")
    if request.upscale not in UPSCALES:
        raise InvalidRequestError(f"Upscale must be one of {', '.join(map(str, UPSCALES))}, not {request.upscale}.")
    if request.seed is not None and (not isinstance(request.seed, int) or not 0 <= request.seed < 2**63):
        raise InvalidRequestError(f"The seed must be a whole number from 0 to 2^63-1, not {request.seed}.")
    for name in ("width", "height"):
        value = getattr(request, name)
        if value is not None and (not isinstance(value, int) or not 16 <= value <= MAX_SIDE):
            raise InvalidRequestError(f"The {name} must be from 16 to {MAX_SIDE} pixels, not {value}.")
    if Path(request.output).suffix.lower() != ".png":
        raise InvalidRequestError(f"The output {request.output} must be a .png file (it carries the settings).")
    if request.reference is not None and not Path(request.reference).is_file():
        raise InvalidRequestError(f"The reference image {request.reference} does not exist.")
    if request.preview_every < 0:
        raise InvalidRequestError(f"Preview every N steps needs N of 0 or more, not {request.preview_every}.")
    request.enhance.check()


# -- 2. loading ---------------------------------------------------------------------------------
def _resolve(ref: Union[str, Path]) -> tuple[checkpoints.CheckpointInfo, OriginConfig]:
    try:
        info = checkpoints.resolve_checkpoint(ref)
        return info, OriginConfig.from_dict(info.meta["config"])
    except StudioError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as error:
        raise CorruptModelError(f"The checkpoint {ref} has a damaged meta.json ({error}); "
                                "use an earlier checkpoint of the run.") from error


def load_model(checkpoint: Path) -> Any:
    """An OriginModel with the checkpoint's weights (EMA when saved), in eval mode, on the CPU."""
    from engines.origin.model.build import build_model

    config, state, info = checkpoints.load_for_inference(checkpoint)
    try:
        model = build_model(config.model)
    except ValueError as error:  # the model's own check of its sizes
        raise CorruptModelError(f"The config saved with {info.path} does not describe a valid model ({error}).") from error
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing/unexpected keys or wrong shapes
        first = str(error).strip().splitlines()[0]
        raise CorruptModelError(f"The weights in {info.path} do not fit the model its config describes "
                                f"({first}); use an earlier checkpoint.") from error
    return model.eval().requires_grad_(False)


def _working_bytes(config: OriginConfig, height: int, width: int) -> int:
    # A rough activation estimate (two CFG branches, ~16 live full-resolution feature maps of
    # the UNet's base width in fp32); it only decides whether the model must be offloaded.
    return 2 * 16 * config.model.base_channels * height * width * 4


def make_scheduler(name: str, config: OriginConfig) -> Any:
    """The sampler ``name`` on the training noise schedule."""
    import diffusers

    cls = getattr(diffusers, SAMPLERS[name])
    options: dict[str, Any] = {
        # "trailing" starts sampling at the last training timestep: with few steps, "leading"
        # never reaches pure noise and images come out washed out (Lin et al. 2023).
        "timestep_spacing": "trailing",
    }
    if name == "dpm++" and config.model.space != "latent":
        # Pixel-space model: dynamic thresholding keeps DPM++'s x0 estimates inside [-1, 1]
        # under strong guidance (diffusers' advice for pixel-space DPM-Solver).
        options.update(thresholding=True, sample_max_value=1.0)
    return cls.from_config(training_scheduler(config).config, **options)


# -- 3.-5. conditioning and denoising ----------------------------------------------------------
def _load_reference(path: Path, resolution: int) -> Any:
    try:
        return to_model_range(load_image_uint8(Path(path), resolution)).unsqueeze(0)
    except DECODE_ERRORS as error:
        raise InvalidRequestError(f"The reference image {path} cannot be read ({error}).") from error


def _preview(step_output: Any, x: Any, to_rgb: Any = None) -> Any:
    estimate = getattr(step_output, "pred_original_sample", None)
    estimate = estimate if estimate is not None else x
    return tensor_to_pil(to_rgb(estimate).clamp(-1, 1) if to_rgb is not None else estimate)


def guidance_rescale_for(request: GenerateRequest, config: OriginConfig) -> float:
    """The request's guidance rescale, or the model's default (0.7 on the zero_snr schedule, else 0)."""
    if request.guidance_rescale is not None:
        return float(request.guidance_rescale)
    return DEFAULT_GUIDANCE_RESCALE if config.model.noise_schedule == "zero_snr" else 0.0


def rescale_guidance(guided: Any, cond: Any, rescale: float) -> Any:
    """Lin et al. 2023 (3.4): scale the guided prediction to the conditional one's standard deviation
    per image, and blend ``rescale`` of that with the plain guided prediction."""
    if not rescale:
        return guided
    dims = tuple(range(1, guided.dim()))
    matched = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp(min=1e-8))
    return rescale * matched + (1 - rescale) * guided


def _denoise(model: Any, scheduler: Any, context: tuple[Any, Any], reference: Any, shape: tuple[int, ...],
             request: GenerateRequest, seed: int, dtype: Any, on_step: OnStep,
             cancel: Optional[CancelToken], rescale: float = 0.0, to_rgb: Any = None) -> Any:
    """Seeded noise of ``shape`` denoised into pixels, or latents in latent space (``to_rgb``: their
    approximate picture, for the previews)."""
    import torch

    param = next(model.parameters())
    device = param.device
    tokens, mask = (t.to(device) for t in context)
    guided = request.cfg != 1.0  # cfg 1 is the conditional prediction alone: skip the second branch
    if reference is not None:
        reference = reference.to(device).expand(tokens.shape[0], -1, -1, -1)
    # Noise drawn on the CPU from a seeded generator: the same seed gives the same picture on
    # any device (CUDA's generator would produce different numbers).
    generator = torch.Generator("cpu").manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device) * scheduler.init_noise_sigma
    scheduler.set_timesteps(request.steps, device=device)
    timesteps = scheduler.timesteps
    # Mixed precision as in training (autocast); the weights themselves stay fp32.
    autocast = (torch.autocast(device.type, dtype=dtype) if device.type == "cuda" and dtype != torch.float32
                else nullcontext())
    for i, t in enumerate(timesteps):
        if cancel is not None:
            cancel.raise_if_cancelled()
        x_in = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
        # Euler's timesteps are floats; the model embeds integer training timesteps.
        t_batch = t.round().long().expand(x_in.shape[0]).to(device)
        with torch.no_grad(), autocast:
            out = model(x_in, t_batch, tokens, mask, reference=reference).sample.float()
        if guided:
            uncond, cond = out.chunk(2)
            out = rescale_guidance(uncond + request.cfg * (cond - uncond), cond, rescale)
        step = scheduler.step(out, t, x, generator=generator)
        x = step.prev_sample
        every = request.preview_every
        preview = _preview(step, x, to_rgb) if every and ((i + 1) % every == 0 or i + 1 == len(timesteps)) else None
        on_step(i + 1, len(timesteps), f"denoising ({request.sampler})", preview)
    return x


# -- 7. the PNG -----------------------------------------------------------------------------------
def save_png(image: Any, path: Path, parameters: dict[str, Any]) -> None:
    """Write the PNG atomically: each parameter as a text chunk, all of them as Inkframe's JSON chunk,
    and A1111's ``parameters`` text, so A1111's PNG Info, Civitai and the studio's history read it."""
    from engines.sd15.png_params import GenerationParameters, png_info

    p = parameters  # a training sample or a benchmark writes only some of them
    model = Path(str(p["model"])) if p.get("model") else None
    extra = (("Model checkpoint", model.name if model else None), ("Upscale", p.get("upscale")),
             ("Version", p.get("software", f"Inkframe Studio {__version__}")))
    a1111 = GenerationParameters(
        prompt=str(p.get("prompt", "")), negative=str(p.get("negative", "")), steps=p.get("steps"),
        sampler=p.get("sampler"), cfg=p.get("cfg"), seed=p.get("seed"), width=p.get("base_width", p.get("width")),
        height=p.get("base_height", p.get("height")), model=model.parent.parent.name if model else None,
        extra=tuple((k, str(v)) for k, v in extra if v is not None))
    info = png_info(a1111, {"backend": "origin", **parameters})
    for key, value in parameters.items():
        # PIL writes iTXt (UTF-8) itself when the text is not Latin-1: Japanese prompts survive.
        info.add_text(key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def read_png_parameters(path: Path) -> dict[str, Any]:
    """The parameters a generated PNG was made with (Inkframe's JSON chunk; before it, "parameters")."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.text.get("inkframe") or image.text["parameters"]
    parameters = json.loads(text)
    parameters.pop("backend", None)
    return parameters


# -- the engine call ------------------------------------------------------------------------------
def _sr_model_in_pool(run_dir: Path, upscale: int, hardware: Any) -> Optional[str]:
    """Register the run's trained SR model (when there is one) and return its pool name."""
    path = find_sr_model(run_dir) if upscale > 1 else None
    if path is None:
        return None
    # Retraining the SR stage rewrites the file: a new name, so a damaged new file is caught here and
    # the generation falls back to bicubic instead of failing inside the job.
    name = f"origin-sr:{path}:{path.stat().st_mtime_ns}"
    if name not in hardware.pool:
        try:
            hardware.register(name, SuperResolution.load(path), loader=lambda: SuperResolution.load(path),
                              activate=False)
        except CorruptModelError as error:
            log.warning("%s Upscaling with bicubic instead.", error)
            return None
    return name


def _legacy_vae(model_config: Any) -> None:
    """A latent checkpoint always records its VAE; one that does not is damaged."""
    raise CorruptModelError("This latent-space checkpoint does not say which VAE it was trained with "
                            "(its meta.json has no 'vae'); use another checkpoint of the run.")


def generate(request: GenerateRequest, hardware: Any, *, on_step: OnStep = no_progress,
             cancel: Optional[CancelToken] = None, store: Any = None) -> GenerateResult:
    """Run the whole generation and write ``request.output``; see the module docstring."""
    from functools import partial

    from engines.origin.model.latent import latents_to_rgb, register_vae
    from engines.origin.model.text_encoder import register_text_encoder

    started = time.perf_counter()
    # 1. check
    check(request)
    # 2. the checkpoint and the text encoder, in the pool (a second generation skips both loads)
    info, config = _resolve(request.model)
    m = config.model
    height = request.height or m.resolution
    width = request.width or m.resolution
    latent = m.space == "latent"
    factor = 2 ** (len(m.channel_mult) - 1) * m.latent_factor
    if height % factor or width % factor:
        raise InvalidRequestError(f"This model needs a width and height divisible by {factor}, not {width}x{height}.")
    if request.steps > config.train.num_train_timesteps:
        raise InvalidRequestError(f"This model was trained with {config.train.num_train_timesteps} noise levels; "
                                  f"use at most that many steps, not {request.steps}.")
    # The text encoder first: a checkpoint names the exact encoder it was trained with, and a missing
    # or different one is refused before the (larger) model is read.
    text_name = register_text_encoder(hardware, config.model, store=store, require=info.meta.get("text_encoder"))
    # A latent model draws in the space of exactly the VAE it was trained with; refused before its weights load.
    vae_name = None
    if latent:
        required = dict(info.meta.get("vae") or _legacy_vae(m))
        if request.vae:
            required["id"] = request.vae
        vae_name = register_vae(hardware, m.vae, store=store, require=required)
    model_name = f"origin:{info.path}:{info.step}"
    if model_name not in hardware.pool:
        from engines.hardware import MemoryPolicy

        hardware.register(model_name, load_model(info.path), loader=lambda: load_model(info.path),
                          policy=MemoryPolicy(working_bytes=_working_bytes(config, height // m.latent_factor,
                                                                           width // m.latent_factor)),
                          activate=False,
                          files=[f for f in info.path.iterdir() if f.suffix in (".safetensors", ".json")])
    sr_name = _sr_model_in_pool(info.path.parent.parent, request.upscale, hardware)
    seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(4), "little")

    # 3. the reference image and the scheduler
    reference = (_load_reference(request.reference, m.resolution)
                 if request.reference is not None else None)
    vae_identity = None
    scheduler = make_scheduler(request.sampler, config)
    rescale = guidance_rescale_for(request, config)

    # 4.-6. encode, denoise and enhance, one GPU job
    out_of_memory = f"Out of memory at {width}x{height}; lower the size or the upscale, or close other programs using the GPU."
    with hardware.gpu_job("generate", out_of_memory=out_of_memory):
        # 4. the prompt and the unconditional branch: the empty caption the model learned from
        #    caption dropout, or the negative prompt in its place
        with hardware.use(text_name) as text:
            guided = request.cfg != 1.0
            prompts = [request.negative.strip(), request.prompt.strip()] if guided else [request.prompt.strip()]
            context = text.encode(prompts)
            text_identity = text.identity
            text_encoder = "sha256 fallback" if text.is_fallback else text_identity["id"]
        if latent:
            # The reference is read in the space the model draws in, by the same VAE.
            with hardware.use(vae_name) as codec:
                vae_identity = codec.identity
                to_rgb = partial(latents_to_rgb, rgb_map=codec.rgb_map)
                if reference is not None:
                    reference = codec.encode(reference)
            shape = (1, m.in_channels, height // m.latent_factor, width // m.latent_factor)
        else:
            to_rgb, shape = None, (1, 3, height, width)
        with hardware.use(model_name) as model:
            pixels = _denoise(model, scheduler, context, reference, shape, request, seed,
                              hardware.dtype("inference"), on_step, cancel, rescale, to_rgb=to_rgb)
        if latent:
            with hardware.use(vae_name) as codec:
                on_step(request.steps, request.steps, "decoding with the VAE", None)
                pixels = codec.decode(pixels, hardware)
        with hardware.use(sr_name) if sr_name else nullcontext(None) as sr_model:
            upscaler = describe_upscaler(request.upscale, sr_model)
            image = enhance(tensor_to_pil(pixels), upscale=request.upscale, sr_model=sr_model,
                            **request.enhance.as_dict())

    # 7. the PNG and its metadata
    parameters = {
        "prompt": request.prompt, "negative": request.negative, "seed": seed, "steps": request.steps,
        "cfg": request.cfg, "guidance_rescale": rescale, "sampler": request.sampler, "model": str(info.path), "model_step": info.step,
        "model_epoch": info.epoch,
        "weights": "ema" if (info.path / "ema.safetensors").is_file() else "model",
        "reference": str(request.reference) if request.reference is not None else "",
        "upscale": request.upscale, "upscaler": upscaler, "width": image.width, "height": image.height,
        "base_width": width, "base_height": height, "enhance": request.enhance.as_dict(),
        "text_encoder": text_encoder, "text_encoder_identity": text_identity,
        "prediction_type": m.prediction_type, "space": m.space, "vae": vae_identity,
        "studio_version": __version__,
        "software": f"Inkframe Studio {__version__}",
    }
    output = Path(request.output).expanduser()
    save_png(image, output, parameters)
    seconds = time.perf_counter() - started
    log.info("generated %s (%dx%d, %d %s steps, seed %d) in %.1f s", output, image.width, image.height,
             request.steps, request.sampler, seed, seconds)
    return GenerateResult(output, image, parameters, seconds)

