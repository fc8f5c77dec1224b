"""Panels from a prompt with either backend: what the Text-to-Manga tab and its `/generate` endpoint call.

    request = PanelRequest(model="anything-v5.safetensors", prompt="1girl, rooftop", batch_count=2)
    result = generate_panels(request, ctx, on_step=bar, cancel=token)   # PanelResult(pictures, backend)

The backend is read from ``model``: an Origin run (its name in runs/ or a folder) or checkpoint
folder, else an SD 1.5 checkpoint. The request carries both backends' fields with A1111's names;
``check`` refuses, before anything loads, a setting the chosen backend does not have. Pictures go to
``outputs/panels/<date>/`` with their parameters in the PNG (A1111's text and Inkframe's JSON).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.progress import CancelToken, OnStep, no_progress

PANELS = "panels"
ORIGIN_SAMPLERS = {"ddim": "ddim", "ddpm": "ddpm", "dpm++": "dpm++", "dpm++ 2m": "dpm++", "euler a": "euler_a",
                   "euler_a": "euler_a"}


@dataclass(frozen=True)
class PanelRequest:
    model: str
    prompt: str = ""
    negative: str = ""
    sampler: str = ""  # "" = the backend's default (SD: DPM++ 2M Karras, Origin: ddim)
    steps: int = 0  # 0 = the backend's default (SD 25, Origin 30)
    cfg: float = 0.0  # 0 = the backend's default (SD 7, Origin 5)
    width: int = 0  # 0 = the backend's default (SD 512x768, Origin its training size)
    height: int = 0
    seed: Optional[int] = None
    batch_count: int = 1
    batch_size: int = 1  # SD only
    clip_skip: int = 2  # SD only
    vae: str = ""
    reference: str = ""  # a picture of the character: SD's IP-Adapter, Origin's reference conditioning
    reference_scale: float = 0.6  # SD only: how strongly the panel follows the reference
    reference_variant: str = "plain"  # SD only: "plain" or "face"
    second_reference: str = ""  # SD only: a second character, drawn in the other half of the panel
    reference_split: str = "left-right"  # SD only: "left-right" or "top-bottom"
    hires_scale: float = 1.0  # SD only
    hires_strength: float = 0.5
    hires_upscaler: str = "lanczos"
    upscale: int = 1  # Origin only: its super-resolution model
    detail: float = 0.3  # Origin only: the enhancement chain
    vibrancy: float = 0.15
    preview_every: int = 0


@dataclass(frozen=True)
class PanelResult:
    pictures: tuple[tuple[Path, int], ...]  # (file, seed)
    backend: str  # "sd15" | "origin"
    seconds: float


def is_origin_model(ref: str, runs_dir: Path) -> bool:
    """An Origin run or checkpoint folder (its meta.json or checkpoints/), as given or under runs/."""
    for path in (Path(ref).expanduser(), Path(runs_dir) / ref):
        if path.is_dir() and ((path / "meta.json").is_file() or (path / "checkpoints").is_dir()
                              or (path / "config.json").is_file() and (path / "run.json").is_file()):
            return True
    return False


def backend_of(request: PanelRequest, runs_dir: Path) -> str:
    if not str(request.model or "").strip():
        raise InvalidRequestError("Choose a model: an Origin run or an SD 1.5 checkpoint.")
    return "origin" if is_origin_model(request.model.strip(), runs_dir) else "sd15"


def _sd_request(request: PanelRequest, folder: Path) -> Any:
    from engines.sd15.request import Sd15Request

    r = request
    values: dict[str, Any] = dict(
        model=r.model.strip(), prompt=r.prompt, negative=r.negative, seed=r.seed, batch_count=r.batch_count,
        batch_size=r.batch_size, clip_skip=r.clip_skip, vae=r.vae.strip() or None, hires_scale=r.hires_scale,
        hires_strength=r.hires_strength, hires_upscaler=r.hires_upscaler, output_dir=folder,
        preview_every=r.preview_every, reference=Path(r.reference.strip()) if r.reference.strip() else None,
        reference_scale=r.reference_scale, reference_variant=r.reference_variant,
        second_reference=Path(r.second_reference.strip()) if r.second_reference.strip() else None,
        reference_split=r.reference_split)
    for name in ("sampler", "steps", "cfg", "width", "height"):
        if getattr(r, name):
            values[name] = getattr(r, name)
    return Sd15Request(**values)


def _origin_requests(request: PanelRequest, runs_dir: Path, folder: Path) -> list[Any]:
    from dataclasses import replace

    from engines.origin.generation.enhance import EnhanceSettings
    from engines.origin.generation.sampler import GenerateRequest, check

    r = request
    if r.batch_size != 1 or r.hires_scale != 1.0:
        raise InvalidRequestError("Batch size and the hires fix are for SD 1.5 checkpoints; with an Origin model "
                                  "use the batch count and Upscale.")
    if r.second_reference.strip():
        raise InvalidRequestError("A second character reference is for SD 1.5 checkpoints; an Origin model takes one.")
    model = r.model.strip()
    if not Path(model).expanduser().is_dir():
        model = str(Path(runs_dir) / model)
    sampler = ORIGIN_SAMPLERS.get((r.sampler or "ddim").strip().lower(), r.sampler)
    first = r.seed if r.seed is not None else int.from_bytes(os.urandom(4), "little")
    stamp = datetime.now().strftime("%H%M%S")
    requests = []
    for i in range(r.batch_count):
        seed = (first + i) % 2**32
        one = GenerateRequest(
            model=model, prompt=r.prompt, negative=r.negative, output=folder / f"{stamp}-{seed}.png", seed=seed,
            steps=r.steps or 30, cfg=r.cfg or 5.0, sampler=sampler, vae=r.vae.strip() or None, upscale=r.upscale,
            reference=Path(r.reference.strip()) if r.reference.strip() else None,
            width=r.width or None, height=r.height or None, preview_every=r.preview_every,
            enhance=replace(EnhanceSettings(), detail=r.detail, vibrancy=r.vibrancy))
        check(one)
        requests.append(one)
    return requests


def check(request: PanelRequest, paths: Any) -> str:
    """Everything that can be checked before loading; returns the backend."""
    backend = backend_of(request, paths.runs)
    folder = Path(paths.outputs) / PANELS
    if backend == "origin":
        _origin_requests(request, paths.runs, folder)
        return backend
    if request.upscale != 1:
        raise InvalidRequestError("Upscale is for Origin models; with an SD 1.5 checkpoint use the hires fix.")
    from engines.sd15.library import Sd15Library
    from engines.sd15.request import check as sd_check

    sd_check(_sd_request(request, folder), Sd15Library(paths.models))
    return backend


def generate_panels(request: PanelRequest, ctx: Any, *, on_step: OnStep = no_progress,
                    cancel: Optional[CancelToken] = None) -> PanelResult:
    """Make the panels with the backend ``request.model`` names; each PNG is saved as soon as it is made."""
    started = time.perf_counter()
    paths = ctx.settings.paths
    folder = Path(paths.outputs) / PANELS / datetime.now().strftime("%Y-%m-%d")
    backend = check(request, paths)
    if backend == "sd15":
        from engines.sd15.txt2img import generate

        result = generate(_sd_request(request, folder), ctx.hardware, ctx.models, on_step=on_step, cancel=cancel,
                          outputs=paths.outputs)
        pictures = tuple((p.path, p.seed) for p in result.pictures)
    else:
        from engines.origin.generation.sampler import generate as origin_generate

        made = []
        requests = _origin_requests(request, paths.runs, folder)
        for i, one in enumerate(requests):
            def step(s: int, total: int, message: str = "", preview: Any = None, i: int = i) -> None:
                on_step(i * total + s, len(requests) * total, message, preview)

            if cancel is not None:
                cancel.raise_if_cancelled()
            result = origin_generate(one, ctx.hardware, on_step=step, cancel=cancel, store=ctx.models)
            made.append((result.path, int(result.parameters["seed"])))
        pictures = tuple(made)
    return PanelResult(pictures, backend, time.perf_counter() - started)
