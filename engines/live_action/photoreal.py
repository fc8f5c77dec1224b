"""A drawn character made photoreal: SD 1.5 img2img steered by depth and pose ControlNets.

    result = make_live_action(LiveActionRequest(image=Path("hero.png")), hardware, store,
                              on_step=bar, cancel=token)
    result.path, result.report.summary()

The steps:
1. check the request: numbers, the picture, ready control maps, every model found (request.py);
2. bring every model onto this computer before any of them loads (downloads, with progress);
3. prepare the picture: transparency flattened onto grey, scaled to the working size (the image
   that is actually diffused, and the one every metric compares against);
4. the control maps: depth (estimated, or the artist's), the background read with its help, the pose
   of the character inside its mask (estimated and drawn as OpenPose, or the artist's), Canny edges;
5. diffuse: the pooled SD 1.5 checkpoint with this job's LoRAs, embeddings and optional IP-Adapter,
   a ControlNet img2img pipeline derived from it with the pooled ControlNets, the prompt encoded
   A1111's way (never cut at 77 tokens), per-picture seeded noise;
6. finish: the background put back (black stays black, transparency restored), the colours of the
   character brought back to the drawing's in CIELAB, the realism report;
7. save the PNG with A1111's parameters and Inkframe's JSON, the report as JSON beside it, and the
   control maps, so the artist sees what steered the picture.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from engines.errors import Cancelled
from engines.files import picture_paths
from engines.live_action.request import LiveActionPlan, LiveActionRequest, check
from engines.models import ModelStore, derive_pipeline
from engines.progress import CancelToken, OnStep, no_progress

log = logging.getLogger(__name__)

OUTPUT_FOLDER = "live-action"
PREP_STEPS = 1  # the progress bar's share of step 4 (the maps), before the denoising steps


@dataclass(frozen=True)
class ControlMaps:
    depth: Any  # PIL RGB at the working size
    pose: Any
    canny: Any = None
    pose_note: str = ""  # "13 of 18 body points found", or that the artist's map was used


@dataclass(frozen=True)
class LiveActionResult:
    path: Path  # the PNG
    report_path: Path  # its JSON report
    seed: int
    report: Any  # engines.live_action.metrics.RealismReport
    background: str  # "transparent", "black" or "scene"
    maps: dict[str, Path]  # kind -> the control map saved beside the PNG
    seconds: float
    notes: tuple[str, ...] = ()  # what was converted or adapted, in words


def output_path(request: LiveActionRequest, outputs: Path, seed: int) -> Path:
    if request.output is not None:
        return Path(request.output).expanduser()
    now = datetime.now()
    folder = Path(outputs) / OUTPUT_FOLDER / now.strftime("%Y-%m-%d")
    return picture_paths(folder, [seed], now.strftime("%H%M%S"))[0]


def total_steps(request: LiveActionRequest) -> int:
    """What the progress bar counts: the maps, then the denoising steps img2img really takes."""
    return PREP_STEPS + max(1, int(request.steps * request.strength))


def make_live_action(request: LiveActionRequest, hardware: Any, store: ModelStore, *, on_step: OnStep = no_progress,
                     cancel: Optional[CancelToken] = None, outputs: Optional[Path] = None,
                     plan: Optional[LiveActionPlan] = None) -> LiveActionResult:
    """Make one photoreal picture of the drawn character; saved as soon as it is made."""
    started = time.perf_counter()
    # 1. everything that can be checked before loading
    plan = plan or check(request, store)
    seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(4), "little")
    path = output_path(request, Path(outputs or store.models_dir.parent / "outputs"), seed)
    # 2. every model on this computer before any loads
    names = ensure_models(plan, hardware, store, on_step, cancel)
    total = total_steps(request)
    w, h = plan.size
    with hardware.gpu_job("live-action", out_of_memory=(
            f"Out of memory at {w}x{h} with {len(plan.controlnets)} ControlNets; lower the long side, "
            "or set a lower --vram-limit so the studio offloads more.")):
        # 3. the picture as it is diffused
        from engines.live_action.background import flatten
        from engines.live_action.source import fit_to

        on_step(0, total, "Reading the picture")
        rgb, alpha = flatten(plan.source.image)
        diffused = fit_to(rgb, plan.size)
        alpha = _fit_alpha(alpha, plan.size)
        # 4. the control maps and the background
        maps, background = control_maps(plan, diffused, alpha, hardware, names)
        _raise_if_cancelled(cancel)
        on_step(PREP_STEPS, total, background.description)
        # 5. diffuse
        raw = diffuse(plan, diffused, maps, seed, hardware, store, names, on_step, cancel, total)
        # 6. finish
        result, report, notes = finish(plan, raw, diffused, background)
    # 7. save
    from engines.live_action.output import save_result

    notes = tuple(n for n in (plan.source.note, maps.pose_note, background.description, *notes) if n)
    saved = save_result(result, path, plan, seed, report, background.kind, maps, store, notes)
    seconds = time.perf_counter() - started
    log.info("live-action %s -> %s in %.1f s (%s)", plan.source.path.name, path, seconds, report.summary())
    return LiveActionResult(path, saved.report_path, seed, report, background.kind, saved.maps, seconds, notes)


def _raise_if_cancelled(cancel: Optional[CancelToken]) -> None:
    if cancel is not None and cancel.cancelled:
        raise Cancelled("Stopped; nothing was saved for this picture.")


def _fit_alpha(alpha: Any, size: tuple[int, int]) -> Any:
    if alpha is None:
        return None
    import numpy as np
    from PIL import Image

    from engines.live_action.source import fit_to

    image = Image.fromarray(np.clip(np.asarray(alpha) * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return np.asarray(fit_to(image, size), dtype=np.float32) / 255.0


# -- 2. models -------------------------------------------------------------------------------------


def ensure_models(plan: LiveActionPlan, hardware: Any, store: ModelStore, on_step: OnStep = no_progress,
                  cancel: Optional[CancelToken] = None) -> dict[str, str]:
    """Download what is missing, then register every model in the pool; returns kind -> pool name."""
    from engines.sd15.checkpoint import Sd15Models

    r = plan.request
    wanted = [model for _, model, *_ in plan.controlnets]
    wanted += [r.depth_model] if plan.depth_map is None else []
    wanted += [r.pose_model] if plan.pose_map is None else []
    for model in (plan.sd.checkpoint.model, plan.sd.checkpoint.vae, *wanted):
        if model:
            store.ensure_local(model, on_step=on_step, cancel=cancel)
    if r.identity:
        from engines.sd15.reference import adapter_files

        adapter_files(store, "plain")
    names = {"base": Sd15Models(hardware, store).ensure(plan.sd.checkpoint, on_step, cancel)}
    from engines.live_action.controlnets import pool_name, register_controlnet

    missing = [(kind, model) for kind, model, *_ in plan.controlnets if not hardware.is_registered(pool_name(model))]
    if missing:
        with hardware.use(names["base"]) as base:  # the ControlNets' config comes from this UNet
            unet_config, factor = dict(base.unet.config), int(base.vae_scale_factor)
        for kind, model in missing:
            on_step(0, 1, f"Loading the {kind} ControlNet")
            register_controlnet(hardware, store, model, unet_config, factor)
    for kind, model, *_ in plan.controlnets:
        names[f"controlnet-{kind}"] = pool_name(model)
    if plan.depth_map is None:
        from engines.live_action.depth import register_depth_model

        on_step(0, 1, "Loading the depth estimator")
        names["depth"] = register_depth_model(hardware, store, r.depth_model)
    if plan.pose_map is None:
        from engines.live_action.pose import register_pose_model

        on_step(0, 1, "Loading the pose estimator")
        names["pose"] = register_pose_model(hardware, store, r.pose_model)
    return names


# -- 4. control maps ------------------------------------------------------------------------------------


def control_maps(plan: LiveActionPlan, diffused: Any, alpha: Any, hardware: Any,
                 names: dict[str, str]) -> tuple[ControlMaps, Any]:
    """The depth, pose (and Canny) maps at the working size, and the background read with the depth."""
    from engines.live_action.background import analyse_background

    if plan.depth_map is not None:
        depth = plan.depth_map
        near = depth.convert("L")
    else:
        from engines.live_action.depth import estimate_depth

        with hardware.use(names["depth"]) as estimator:
            near = estimate_depth(estimator, diffused)  # "L", near = white
        depth = near.convert("RGB")  # what the ControlNet reads
    background = analyse_background(diffused, alpha, near)
    if plan.pose_map is not None:
        pose, note = plan.pose_map, "Pose from the given map."
    else:
        from engines.live_action.pose import estimate_pose, pose_summary, render_openpose

        with hardware.use(names["pose"]) as estimator:
            found = estimate_pose(estimator, diffused, box=_mask_box(background.mask))
        pose, note = render_openpose(found, diffused.size), pose_summary(found)
    canny = None
    if len(plan.controlnets) > 2:
        from engines.live_action.edges import canny as canny_edges

        canny = canny_edges(diffused)
    return ControlMaps(depth, pose, canny, note), background


def _mask_box(mask: Any) -> Optional[tuple[int, int, int, int]]:
    """The character's bounding box (a little margin), or None for the whole picture."""
    import numpy as np

    rows, cols = np.nonzero(np.asarray(mask) > 0.5)
    if rows.size == 0:
        return None
    h, w = np.asarray(mask).shape
    margin = int(0.03 * max(h, w))
    return (max(0, int(cols.min()) - margin), max(0, int(rows.min()) - margin),
            min(w, int(cols.max()) + 1 + margin), min(h, int(rows.max()) + 1 + margin))


# -- 5. diffuse ---------------------------------------------------------------------------------------------


def diffuse(plan: LiveActionPlan, diffused: Any, maps: ControlMaps, seed: int, hardware: Any, store: ModelStore,
            names: dict[str, str], on_step: OnStep, cancel: Optional[CancelToken], total: int) -> Any:
    """The ControlNet img2img pass on the pooled checkpoint and ControlNets; the decoded picture (PIL RGB)."""
    from contextlib import ExitStack

    import torch
    from diffusers import StableDiffusionControlNetImg2ImgPipeline
    from diffusers.models.controlnets import MultiControlNetModel

    from engines.sd15.checkpoint import Sd15Models
    from engines.sd15.conditioning import encode_pair
    from engines.sd15.preview import latent_preview
    from engines.sd15.reference import fit_reference, reference_kwargs
    from engines.sd15.samplers import build_scheduler

    r, sd = plan.request, plan.sd
    images = {"depth": maps.depth, "pose": maps.pose, "canny": maps.canny}
    with ExitStack() as stack:
        # The ControlNets first: the checkpoint, the largest, is then placed knowing what they hold.
        nets = [stack.enter_context(hardware.use(names[f"controlnet-{kind}"])) for kind, *_ in plan.controlnets]
        base = stack.enter_context(hardware.use(names["base"]))
        Sd15Models(hardware, store).apply_networks(base, sd.loras, sd.embeddings)
        fit_reference(base, store, "plain" if r.identity else None, hardware.dtype("inference"))
        pipe = derive_pipeline(StableDiffusionControlNetImg2ImgPipeline, base, controlnet=MultiControlNetModel(nets),
                               scheduler=build_scheduler(sd.sampler, base.scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        extra = reference_kwargs(pipe, diffused, None, r.identity_scale, "left-right", *plan.size) if (
            r.identity) else {}
        positive, negative = encode_pair(pipe, sd.prompt, sd.negative, r.clip_skip)

        def on_step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            preview = None
            if r.preview_every and (step + 1) % r.preview_every == 0 and "latents" in kwargs:
                preview = latent_preview(pipeline, kwargs["latents"])
            on_step(min(total, PREP_STEPS + step + 1), total, "Making it real", preview)
            if cancel is not None and cancel.cancelled:
                pipeline._interrupt = True  # diffusers' own way out of the denoising loop
            return {}

        width, height = plan.size
        latents = pipe(
            image=diffused, control_image=[images[kind] for kind, *_ in plan.controlnets], height=height,
            width=width, strength=r.strength, num_inference_steps=r.steps, guidance_scale=r.cfg,
            prompt_embeds=positive, negative_prompt_embeds=negative,
            controlnet_conditioning_scale=[scale for _, _, scale, _, _ in plan.controlnets],
            control_guidance_start=[start for *_, start, _ in plan.controlnets],
            control_guidance_end=[end for *_, end in plan.controlnets],
            generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
            callback_on_step_end=on_step_end, **extra,
        ).images
        _raise_if_cancelled(cancel)
        pixels = hardware.decode_latents(pipe.vae, latents / pipe.vae.config.scaling_factor)
        return pipe.image_processor.postprocess(pixels.detach(), output_type="pil")[0]


# -- 6. finish -----------------------------------------------------------------------------------------------


def finish(plan: LiveActionPlan, raw: Any, diffused: Any, background: Any) -> tuple[Any, Any, tuple[str, ...]]:
    """The background put back, the colours corrected, the report; returns (picture, report, notes)."""
    from engines.live_action.background import restore
    from engines.live_action.colour import transfer_colour
    from engines.live_action.metrics import realism_report

    r = plan.request
    kept = restore(raw, background, diffused) if background.kind == "black" else raw  # black stays black
    corrected = kept
    if r.colour_transfer != "off":
        corrected = transfer_colour(kept, diffused, background.mask, r.colour_transfer, r.colour_strength)
    report = realism_report(diffused, corrected, background.mask,
                            before_correction=kept if r.colour_transfer != "off" else None)
    final = restore(corrected, background, diffused) if background.kind == "transparent" else corrected
    notes = ("Transparency restored.",) if background.kind == "transparent" else ()
    return final, report, notes
