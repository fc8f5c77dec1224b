"""A character animated with AnimateDiff: text-to-video, or a still brought to life keeping who it is.

    result = make_animation(AnimationRequest(prompt="1girl, wind", image=Path("hero.png")), hardware, store,
                            on_step=bar, cancel=token)
    result.path, result.report.summary()

The steps:
1. check the request: numbers, the still, the prompt travel, every model found (request.py);
2. bring every model onto this computer before any of them loads, then register them in the pool:
   the SD 1.5 checkpoint (shared with Text-to-Manga and Live-Action), the motion adapter, SparseCtrl;
3. build the job's pipeline: the motion UNet made of the pooled UNet's and adapter's layers
   (motion.py: nothing copied), run under the pool's placement of the checkpoint; FreeNoise windows for
   long videos and prompt travel; split inference and the decode's chunk size from the memory left;
4. encode the prompts A1111's way (weights, 75-token chunks, clip skip), one per keyframe;
5. denoise: from noise (text), from the still repeated (video2video), with SparseCtrl holding frame 0
   to the still, or with the still as the IP-Adapter reference; a preview strip and cancel every step;
6. decode in chunks of frames (the tiled retry when one runs out of memory);
7. score the frames (consistency.py) and save the video, its sidecar JSON, and the frames on request.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engines.animation.request import AnimationPlan, AnimationRequest, check
from engines.errors import Cancelled, InvalidRequestError
from engines.models import ModelStore, derive_pipeline
from engines.progress import CancelToken, OnStep, no_progress

log = logging.getLogger(__name__)

# Activation memory per frame, measured as bytes at a 64-pixel side and scaled with the pixels
# (HardwareManager.batch_size_for): a UNet pass of one frame (with its CFG twin) and one VAE decode, fp16.
UNET_FRAME_BYTES_AT_64 = 3 * 2**20
DECODE_FRAME_BYTES_AT_64 = 16 * 2**20
PREVIEW_FRAMES = 4
# AnimateDiff's motion modules were trained on SD's betas spaced linearly (not "scaled_linear"), as its
# own inference configs and diffusers' examples set them; the other samplers read the same config.
MOTION_SCHEDULE = {"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "linspace", "steps_offset": 1}


@dataclass(frozen=True)
class AnimationResult:
    path: Path  # the video
    sidecar_path: Path  # OUT.json: the parameters and the consistency report
    seed: int
    frames: int  # frames in the file (ping-pong adds the way back)
    fps: int
    report: Any  # engines.animation.consistency.ConsistencyReport
    frame_paths: tuple[Path, ...]  # the PNGs, when the request asked for them
    first_frame: Path  # OUT.first.png: frame 0, for galleries and for animating on
    seconds: float
    notes: tuple[str, ...] = ()


def output_path(request: AnimationRequest, outputs: Path, seed: int) -> Path:
    from engines.animation.output import new_video_path

    if request.output is not None:
        return Path(request.output).expanduser()
    return new_video_path(outputs, ".mp4", seed)


def denoising_steps(request: AnimationRequest, has_still: bool) -> int:
    """The steps the sampler really takes: video2video starts part of the way in; FreeInit repeats them."""
    steps = request.steps
    if has_still and request.still_mode == "video2video":
        steps = max(1, int(request.steps * request.strength))
    return steps * (request.free_init_iters if request.free_init else 1)


def total_steps(request: AnimationRequest) -> int:
    """What the progress bar counts: the denoising steps, then one for decoding and saving."""
    has_still = request.image is not None and bool(str(request.image).strip())
    return denoising_steps(request, has_still) + 1


def make_animation(request: AnimationRequest, hardware: Any, store: ModelStore, *, on_step: OnStep = no_progress,
                   cancel: Optional[CancelToken] = None, outputs: Optional[Path] = None,
                   plan: Optional[AnimationPlan] = None) -> AnimationResult:
    """Make one video; saved as soon as it is made."""
    started = time.perf_counter()
    # 1. everything that can be checked before loading
    plan = plan or check(request, store)
    r = plan.request
    seed = r.seed if r.seed is not None else int.from_bytes(os.urandom(4), "little")
    path = output_path(r, Path(outputs or store.models_dir.parent / "outputs"), seed)
    # 2. every model on this computer, then in the pool
    names = ensure_models(plan, hardware, store, on_step, cancel)
    total = denoising_steps(r, plan.still is not None) + 1
    with hardware.gpu_job("animation", out_of_memory=(
            f"Out of memory making {r.frames} frames at {r.width}x{r.height}; lower the size or the context "
            "window, or set a lower --vram-limit so the studio offloads more.")):
        frames, notes = diffuse(plan, seed, hardware, store, names, on_step, cancel, total)
    # 7. score and save
    from engines.animation.consistency import consistency_report
    from engines.animation.output import save_animation

    on_step(total - 1, total, "Scoring and saving")
    report = consistency_report(frames, plan.still)
    notes = tuple(n for n in (plan.still_note, *notes) if n)
    saved = save_animation(frames, path, plan, seed, report, store, notes)
    on_step(total, total, "Saved")
    seconds = time.perf_counter() - started
    log.info("animation %d frames -> %s in %.1f s (%s)", len(frames), path, seconds, report.summary())
    return AnimationResult(path, saved.sidecar_path, seed, saved.frames, r.fps, report, saved.frame_paths,
                           saved.first_frame, seconds, notes)


def _raise_if_cancelled(cancel: Optional[CancelToken]) -> None:
    if cancel is not None and cancel.cancelled:
        raise Cancelled("Stopped; nothing was saved for this animation.")


# -- 2. models -------------------------------------------------------------------------------------------


def uses_reference(plan: AnimationPlan) -> bool:
    """Whether the still goes to the IP-Adapter: the "reference" mode, or identity in any mode."""
    return plan.still is not None and (plan.request.identity or plan.request.still_mode == "reference")


def ensure_models(plan: AnimationPlan, hardware: Any, store: ModelStore, on_step: OnStep = no_progress,
                  cancel: Optional[CancelToken] = None) -> dict[str, str]:
    """Download what is missing, then register every model in the pool; returns kind -> pool name."""
    from engines.animation.motion import frame_limit, register_motion_adapter, register_sparsectrl
    from engines.animation.motion import pool_name as motion_pool_name
    from engines.sd15.checkpoint import Sd15Models

    r, sd = plan.request, plan.sd
    sparse = plan.mode == "sparsectrl"
    for model in (sd.checkpoint.model, sd.checkpoint.vae, r.motion_adapter, r.motion_lora,
                  r.sparsectrl_model if sparse else None):
        if model and str(model).strip():
            store.ensure_local(str(model).strip(), on_step=on_step, cancel=cancel)
    if uses_reference(plan):
        from engines.sd15.reference import adapter_files

        adapter_files(store, "plain")
    # The adapter's frame limit is in its config: a window it was not trained for is a sentence, before loading.
    limit = frame_limit(store, r.motion_adapter.strip())
    if limit and r.context > limit:
        raise InvalidRequestError(f"This motion adapter sees at most {limit} frames at once; set the context "
                                  f"window to {limit} or less (now {r.context}).")
    if limit and not plan.windowed and r.frames > limit:
        raise InvalidRequestError(f"This motion adapter makes at most {limit} frames in one window; "
                                  f"use a context window below {r.frames} so FreeNoise joins several.")
    names = {"base": Sd15Models(hardware, store).ensure(sd.checkpoint, on_step, cancel)}
    adapter, groups = r.motion_adapter.strip(), 32  # SD 1.5's norm groups, which a folder's config states
    if not hardware.is_registered(motion_pool_name(adapter)) and store.resolve(adapter).kind == "single_file":
        # A single file does not record them: they are the checkpoint UNet's. Read only then, so the
        # checkpoint is not activated ahead of the adapter (the job places the smaller models first).
        with hardware.use(names["base"]) as base:
            groups = int(base.unet.config.norm_num_groups)
    on_step(0, 1, "Loading the motion adapter")
    names["motion"] = register_motion_adapter(hardware, store, adapter, groups)
    if sparse:
        on_step(0, 1, "Loading SparseCtrl")
        names["sparsectrl"] = register_sparsectrl(hardware, store, r.sparsectrl_model.strip())
    return names


# -- 3 to 6. the pipeline, the prompts, denoising, decoding -----------------------------------------------


def diffuse(plan: AnimationPlan, seed: int, hardware: Any, store: ModelStore, names: dict[str, str],
            on_step: OnStep, cancel: Optional[CancelToken], total: int) -> tuple[list[Any], tuple[str, ...]]:
    """Denoise and decode the frames (PIL RGB); returns them with notes on what memory settings were used."""
    import torch

    from engines.animation.motion import check_fits, motion_lora, motion_unet, use_free_noise
    from engines.hardware.placement import follow_offload_hooks
    from engines.sd15.checkpoint import Sd15Models
    from engines.sd15.reference import fit_reference, reference_kwargs
    from engines.sd15.samplers import build_scheduler

    r, sd = plan.request, plan.sd
    with ExitStack() as stack:
        # The small models first: the checkpoint, the largest, is then placed knowing what they hold.
        adapter = stack.enter_context(hardware.use(names["motion"]))
        control = stack.enter_context(hardware.use(names["sparsectrl"])) if "sparsectrl" in names else None
        base = stack.enter_context(hardware.use(names["base"]))
        Sd15Models(hardware, store).apply_networks(base, sd.loras, sd.embeddings)
        fit_reference(base, store, "plain" if uses_reference(plan) else None, hardware.dtype("inference"))
        # 3. the job's pipeline
        check_fits(base.unet, adapter, r.motion_adapter)
        unet = motion_unet(base.unet, adapter)
        handles = follow_offload_hooks([(base.unet, unet), *zip(base.unet.down_blocks, unet.down_blocks),
                                        (base.unet.mid_block, unet.mid_block), *zip(base.unet.up_blocks, unet.up_blocks)])
        stack.callback(lambda: [handle.remove() for handle in handles])
        if plan.windowed:
            use_free_noise(unet, r.context, r.stride)
        pipe = _pipeline(plan, base, unet, adapter, control, build_scheduler(sd.sampler, {**base.scheduler.config,
                                                                                             **MOTION_SCHEDULE}))
        pipe.set_progress_bar_config(disable=True)
        if r.motion_lora.strip():
            stack.enter_context(motion_lora(pipe, store, r.motion_lora.strip(), r.motion_scale))
        if plan.windowed:
            pipe.enable_free_noise(context_length=r.context, context_stride=r.stride)
        notes = _fit_memory(pipe, plan, hardware)
        if r.free_init:
            pipe.enable_free_init(num_iters=r.free_init_iters, use_fast_sampling=False)
        # 4. the prompts
        prompt_kwargs = _prompts(pipe, plan)
        extra: dict[str, Any] = {}
        if uses_reference(plan):
            extra = reference_kwargs(pipe, plan.still, None, r.identity_scale, "left-right", r.width, r.height)
        # 5. denoise
        latents = pipe(**_mode_kwargs(plan), **prompt_kwargs, **extra, height=r.height, width=r.width,
                       num_inference_steps=r.steps, guidance_scale=r.cfg, output_type="latent",
                       generator=torch.Generator("cpu").manual_seed(seed),
                       callback_on_step_end=_step_callback(plan, on_step, cancel, total)).frames
        _raise_if_cancelled(cancel)
        # 6. decode, a chunk of frames at a time
        on_step(total - 1, total, "Decoding the frames")
        frames = decode_frames(pipe, latents, hardware, notes.decode_chunk)
        return frames, notes.sentences


def _pipeline(plan: AnimationPlan, base: Any, unet: Any, adapter: Any, control: Any, scheduler: Any) -> Any:
    from diffusers import AnimateDiffPipeline, AnimateDiffSparseControlNetPipeline, AnimateDiffVideoToVideoPipeline

    if plan.mode == "video2video":
        return derive_pipeline(AnimateDiffVideoToVideoPipeline, base, unet=unet, motion_adapter=adapter,
                               scheduler=scheduler)
    if plan.mode == "sparsectrl":
        return derive_pipeline(AnimateDiffSparseControlNetPipeline, base, unet=unet, motion_adapter=adapter,
                               controlnet=control, scheduler=scheduler)
    return derive_pipeline(AnimateDiffPipeline, base, unet=unet, motion_adapter=adapter, scheduler=scheduler)


def _mode_kwargs(plan: AnimationPlan) -> dict[str, Any]:
    r = plan.request
    if plan.mode == "video2video":
        return {"video": [plan.still] * r.frames, "strength": r.strength}
    if plan.mode == "sparsectrl":
        return {"num_frames": r.frames, "conditioning_frames": [plan.still], "controlnet_frame_indices": [0],
                "controlnet_conditioning_scale": r.sparsectrl_scale}
    return {"num_frames": r.frames}


@dataclass(frozen=True)
class _Memory:
    decode_chunk: int
    sentences: tuple[str, ...]


def _fit_memory(pipe: Any, plan: AnimationPlan, hardware: Any) -> _Memory:
    """Split inference and the decode's chunk from the memory the budget leaves beside the placed models.

    FreeNoise's split inference runs the spatial layers on ``temporal_split`` frames at a time and the
    motion layers on ``spatial_split`` pixel columns at a time: the same result in less memory."""
    r = plan.request
    side = max(r.width, r.height)
    batch = r.frames * (2 if r.cfg > 1 else 1)
    fits = hardware.batch_size_for(side, UNET_FRAME_BYTES_AT_64, max_batch=batch)
    decode_chunk = hardware.batch_size_for(side, DECODE_FRAME_BYTES_AT_64, max_batch=r.frames)
    sentences = []
    if fits < batch and plan.windowed:
        pipe.enable_free_noise_split_inference(spatial_split_size=256, temporal_split_size=max(1, fits))
        sentences.append(f"Split inference on: {max(1, fits)} frames at a time fit the memory left.")
    if decode_chunk < r.frames:
        sentences.append(f"Decoded {decode_chunk} frames at a time to fit the memory left.")
    return _Memory(max(1, decode_chunk), tuple(sentences))


def _prompts(pipe: Any, plan: AnimationPlan) -> dict[str, Any]:
    """The pipeline's prompt arguments, every keyframe encoded A1111's way to one common length.

    Without FreeNoise the embeddings go in directly. With it, diffusers encodes the frame-indexed prompts
    itself through ``encode_prompt`` (it refuses ready embeddings): this job's pipeline answers that call
    from the embeddings made here, so prompt travel keeps A1111's weights, chunks, embeddings and clip skip,
    and FreeNoise blends the keyframes' embeddings over the frames between them."""
    import torch

    from engines.sd15.conditioning import encode
    from engines.sd15.prompt_syntax import parse_prompt

    r = plan.request
    device = pipe._execution_device
    texts = [*plan.travel.prompts, r.negative or ""]
    encoded = {text: encode(pipe, parse_prompt(text), r.clip_skip, device) for text in dict.fromkeys(texts)}
    longest = max(e.shape[1] for e in encoded.values())
    empty = encode(pipe, parse_prompt(""), r.clip_skip, device)
    for text, embeds in encoded.items():
        while embeds.shape[1] < longest:  # classifier-free guidance batches them: one length for all
            embeds = torch.cat([embeds, empty], dim=1)
        encoded[text] = embeds
    if not plan.windowed:
        return {"prompt_embeds": encoded[plan.travel.prompts[0]], "negative_prompt_embeds": encoded[r.negative or ""]}

    def encode_prompt(prompt: Any, device: Any, num_images_per_prompt: int, do_classifier_free_guidance: bool,
                      negative_prompt: Any = None, **_: Any) -> tuple[Any, Any]:
        positive = torch.cat([encoded[text] for text in prompt]) if prompt and prompt[0] in encoded else None
        negative = torch.cat([encoded[text] for text in negative_prompt]) if (
            do_classifier_free_guidance and negative_prompt) else None
        return positive, negative

    pipe.encode_prompt = encode_prompt  # this job's pipeline only: it is built per job
    return {"prompt": plan.travel.as_dict(), "negative_prompt": r.negative or ""}


def _step_callback(plan: AnimationPlan, on_step: OnStep, cancel: Optional[CancelToken], total: int) -> Any:
    r = plan.request
    done = [0]

    def on_step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        done[0] += 1  # counted here, not from ``step``: FreeInit runs the steps again for each iteration
        preview = None
        if r.preview_every and done[0] % r.preview_every == 0 and "latents" in kwargs:
            preview = preview_strip(pipeline, kwargs["latents"])
        on_step(min(total - 1, done[0]), total, "Animating", preview)
        if cancel is not None and cancel.cancelled:
            pipeline._interrupt = True  # diffusers' own way out of the denoising loop
        return {}

    return on_step_end


def preview_strip(pipe: Any, latents: Any, count: int = PREVIEW_FRAMES) -> Any:
    """A few frames of the (scaled) video latents [batch, channels, frames, h, w] side by side, without the VAE."""
    from engines.sd15.preview import latent_strip

    frames = latents.shape[2]
    picks = sorted({round(i * (frames - 1) / max(1, count - 1)) for i in range(min(count, frames))})
    return latent_strip(pipe, latents[0, :, picks].permute(1, 0, 2, 3))


def decode_frames(pipe: Any, latents: Any, hardware: Any, chunk: int) -> list[Any]:
    """The video latents decoded ``chunk`` frames at a time into PIL pictures."""
    import torch

    batch, channels, count, height, width = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * count, channels, height, width)
    flat = 1 / pipe.vae.config.scaling_factor * flat  # as AnimateDiff's own decode writes it: the same rounding
    parts = [hardware.decode_latents(pipe.vae, flat[i:i + chunk].to(pipe.vae.dtype))
             for i in range(0, flat.shape[0], chunk)]
    pixels = torch.cat(parts).float()
    video = pixels.reshape(batch, count, *pixels.shape[1:]).permute(0, 2, 1, 3, 4)
    return pipe.video_processor.postprocess_video(video=video.detach().cpu(), output_type="pil")[0]
