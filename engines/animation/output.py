"""What an Animation job leaves on disk: the video, its sidecar, frame 0, and the frames on request.

    hero.mp4          the video (MP4, GIF, WebP or WebM), the parameters inside where the format has room
    hero.json         the sidecar: the request that makes it again, the consistency report, the notes
    hero.first.png    frame 0 with A1111's parameters: the gallery's picture, and a still to animate on
    frames/hero-0000.png ...   every frame, when the request names a frames folder

A1111's parameters are written as sd-webui-animatediff writes them (an ``AnimateDiff`` entry with the
motion module, length, fps and windows), so the settings read back in A1111 and in the studio.
Each file is written atomically: a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from engines import __version__
from engines.files import atomic_write_bytes

OUTPUT_FOLDER = "animation"
FIRST_FRAME = ".first.png"  # frame 0 beside each video: <name>.first.png


@dataclass(frozen=True)
class SavedAnimation:
    sidecar_path: Path
    frames: int  # frames in the video file
    frame_paths: tuple[Path, ...]
    first_frame: Path


def new_video_path(outputs: Path, suffix: str, seed: Optional[int], now: Optional[datetime] = None) -> Path:
    """Where a new video goes: outputs/animation/<date>/<time>-<seed><suffix> (<time><suffix> without a seed),
    never the name of a video, sidecar or first frame that exists: ``-2``, ``-3``... are added."""
    from engines.animation.video_io import VIDEO_FORMATS as FORMATS

    now = now or datetime.now()
    folder = Path(outputs) / OUTPUT_FOLDER / now.strftime("%Y-%m-%d")
    stem = now.strftime("%H%M%S") + ("" if seed is None else f"-{seed}")
    candidate, n = stem, 1
    while any((folder / f"{candidate}{s}").exists() for s in (*FORMATS, ".json", FIRST_FRAME)):
        n += 1
        candidate = f"{stem}-{n}"
    return folder / f"{candidate}{suffix}"


def sidecar_path_for(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def first_frame_path_for(path: Path) -> Path:
    return Path(path).with_name(f"{Path(path).stem}{FIRST_FRAME}")


def parameters_for(plan: Any, seed: int, store: Any) -> Any:
    """A1111's parameters of the video, with sd-webui-animatediff's ``AnimateDiff`` entry."""
    from engines.sd15.file_hashes import job_hashes
    from engines.sd15.a1111_text import model_label
    from engines.sd15.png_params import GenerationParameters

    r, sd = plan.request, plan.sd
    hashed = job_hashes(store, sd.checkpoint.model, sd.loras)
    animatediff = (f"model: {model_label(r.motion_adapter)}, video_length: {r.frames}, fps: {r.fps}, "
                   f"closed_loop: {'R-P' if r.loop == 'ping-pong' else 'N'}, context_batch_size: {r.context}, "
                   f"stride: {r.stride}, overlap: {max(0, r.context - r.stride)}, format: {plan.output_suffix[1:].upper()}")
    extra: list[tuple[str, str]] = [("AnimateDiff", animatediff)]
    if plan.still is not None:
        extra.append(("Still mode", r.still_mode))
    if r.motion_lora.strip():
        extra.append(("Motion LoRA", f"{model_label(r.motion_lora.strip())}: {r.motion_scale:g}"))
    if plan.mode == "sparsectrl":
        extra.append(("SparseCtrl", f"{model_label(r.sparsectrl_model)}: {r.sparsectrl_scale:g}"))
    if r.identity or plan.mode == "reference":
        extra += [("IP-Adapter", "ip-adapter plain (the still)"), ("IP-Adapter scale", f"{r.identity_scale:g}")]
    if r.free_init:
        extra.append(("FreeInit", f"{r.free_init_iters} iterations"))
    if sd.checkpoint.vae:
        extra.append(("VAE", model_label(sd.checkpoint.vae)))
    extra.append(("Version", f"Inkframe {__version__}"))
    return GenerationParameters(
        prompt=r.prompt, negative=r.negative, steps=r.steps, sampler=sd.sampler, cfg=float(r.cfg), seed=seed,
        width=r.width, height=r.height, model=model_label(sd.checkpoint.model), model_hash=hashed.model,
        clip_skip=r.clip_skip, loras=hashed.loras,
        hires_strength=float(r.strength) if plan.mode == "video2video" else None, extra=tuple(extra))


def request_fields(request: Any, seed: int) -> dict[str, Any]:
    """The request that makes the video again, as JSON-safe values."""
    again = dataclasses.replace(request, seed=seed, preview_every=0, output=None, frames_dir=None)
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(again).items()}


def save_animation(frames: list, path: Path, plan: Any, seed: int, report: Any, store: Any,
                   notes: tuple[str, ...]) -> SavedAnimation:
    """Write the video, frame 0, the frames on request and the sidecar; returns where they went."""
    from engines.animation.video_io import save_frames, save_video
    from engines.sd15.a1111_text import format_a1111
    from engines.sd15.png_params import save_png

    r = plan.request
    path = Path(path)
    parameters = parameters_for(plan, seed, store)
    text = format_a1111(parameters)
    inkframe = {"backend": "animation", "studio_version": __version__, "request": request_fields(r, seed),
                "sampler": plan.sd.sampler, "mode": plan.mode, "consistency": report.as_dict()}
    count = save_video(frames, path, r.fps, loop=r.loop, metadata={"parameters": text, "inkframe": inkframe})
    first = save_png(frames[0], first_frame_path_for(path), parameters, inkframe)
    frame_paths: tuple[Path, ...] = ()
    if r.frames_dir is not None and str(r.frames_dir).strip():
        frame_paths = tuple(save_frames(frames, Path(r.frames_dir).expanduser(), path.stem, text))
    document = {
        "video": path.name, "first_frame": first.name, "seed": seed, "size": [r.width, r.height],
        "frames": len(frames), "frames_in_file": count, "fps": r.fps, "loop": r.loop, "mode": plan.mode,
        "keyframes": plan.travel.as_dict(), "summary": report.summary(), "consistency": report.as_dict(),
        "notes": list(notes), "parameters": text, "request": request_fields(r, seed),
        "frames_dir": str(Path(r.frames_dir).expanduser()) if frame_paths else None,
        "studio_version": __version__,
    }
    sidecar = sidecar_path_for(path)
    atomic_write_bytes(sidecar, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return SavedAnimation(sidecar, count, frame_paths, first)
