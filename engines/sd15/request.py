"""What an SD 1.5 generation job asks for, and the checks that run before anything loads.

    request = Sd15Request(model="anything-v5.safetensors", prompt="1girl, (ink:1.2) <lora:lineart:0.8>")
    plan = check(request, library)    # every bad value as one sentence; LoRA and embedding files found

The defaults are what anime SD 1.5 checkpoints are made for: DPM++ 2M Karras, 25 steps, CFG 7,
clip skip 2, a 512x768 portrait panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.sd15.checkpoint import CheckpointRef, LoraUse
from engines.sd15.library import NetworkFile, Sd15Library
from engines.sd15.prompt_syntax import ParsedPrompt, parse_prompt
from engines.sd15.samplers import DEFAULT_SAMPLER, sampler_name

MAX_STEPS = 150
MAX_CFG = 30.0
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_HIRES_SIDE = 4096
MAX_IMAGES = 64  # batch count x batch size in one job
MAX_CLIP_SKIP = 12
HIRES_UPSCALERS = ("lanczos", "latent")
# Panel shapes for the tab's size presets (width, height), all multiples of 64 near 512x512 pixels.
SIZE_PRESETS = {
    "square 1:1": (512, 512),
    "tall 2:3": (512, 768),
    "wide 16:9": (768, 432),
    "4-koma strip": (768, 256),
}


@dataclass(frozen=True)
class Sd15Request:
    model: str  # an HF id, a diffusers folder or a single .safetensors (a name in models/ will do)
    prompt: str = ""  # A1111 syntax: (word:1.2), [word], BREAK, <lora:name:0.8>, embedding names
    negative: str = ""
    vae: Optional[str] = None  # a VAE to use instead of the checkpoint's own
    sampler: str = DEFAULT_SAMPLER
    steps: int = 25
    cfg: float = 7.0
    width: int = 512
    height: int = 768
    seed: Optional[int] = None  # None: random; image i of the job gets seed + i, as in A1111
    batch_count: int = 1  # pipeline runs, one after the other
    batch_size: int = 1  # pictures per run (more VRAM)
    clip_skip: int = 2  # 1 = the text encoder's last layer; 2 is what anime checkpoints are trained with
    loras: tuple[tuple[str, float], ...] = ()  # from a picker, besides <lora:...> tags in the prompt
    embeddings: tuple[str, ...] = ()  # embedding files outside models/embeddings (their name goes in the prompt)
    hires_scale: float = 1.0  # hires fix: 1 = off; else upscale by this and denoise again
    hires_strength: float = 0.5  # how much the second pass may change (A1111's denoising strength)
    hires_steps: int = 0  # 0: the same number of steps as the first pass
    hires_upscaler: str = "lanczos"  # "lanczos" (the picture) or "latent" (the latents)
    reference: Optional[Path] = None  # a picture of the character to keep across panels (IP-Adapter)
    reference_scale: float = 0.6  # how strongly the panel follows it (0 = not at all, 1 = closely)
    reference_variant: str = "plain"  # "plain" (the whole picture) or "face" (a cropped face)
    # Two characters in one panel: the first reference drawn in the left (or top) half, this one in the
    # right (or bottom) half (diffusers' IP-Adapter attention masks).
    second_reference: Optional[Path] = None
    reference_split: str = "left-right"  # "left-right" or "top-bottom"
    output_dir: Optional[Path] = None  # None: <data>/outputs/panels/<date>
    output: Optional[Path] = None  # an exact file for the first picture (the CLI's --output)
    preview_every: int = 0  # a live preview every N steps (0: none)


@dataclass(frozen=True)
class Sd15Plan:
    """A checked request with everything it refers to found on disk."""

    request: Sd15Request
    checkpoint: CheckpointRef
    sampler: str
    prompt: ParsedPrompt
    negative: ParsedPrompt
    loras: tuple[LoraUse, ...]
    embeddings: tuple[NetworkFile, ...]
    reference_image: Any = None  # the reference, read and checked (PIL, RGB)
    second_image: Any = None  # the second character's, when there is one

    @property
    def hires(self) -> bool:
        return self.request.hires_scale > 1.0

    @property
    def hires_size(self) -> tuple[int, int]:
        r = self.request
        return _multiple_of_8(r.width * r.hires_scale), _multiple_of_8(r.height * r.hires_scale)


def _multiple_of_8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


def check_whole(name: str, value: object, low: int, high: int) -> None:
    """One sentence unless ``value`` is an int (not a bool) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(f"{name} must be a whole number from {low} to {high}, not {value}.")


def check_number(name: str, value: object, low: float, high: float) -> None:
    """One sentence unless ``value`` is a finite number (not a bool) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
        low <= value <= high
    ):
        raise InvalidRequestError(f"{name} must be from {low:g} to {high:g}, not {value}.")


def check(request: Sd15Request, library: Sd15Library) -> Sd15Plan:
    """Reject bad values with one sentence each and find the LoRA and embedding files; loads nothing."""
    r = request
    if not str(r.model or "").strip():
        raise InvalidRequestError("Choose a checkpoint: a Hugging Face id, a diffusers folder or a .safetensors file.")
    sampler = sampler_name(r.sampler)
    check_whole("Steps", r.steps, 1, MAX_STEPS)
    check_number("The CFG scale", r.cfg, 0.0, MAX_CFG)
    for name, value in (("width", r.width), ("height", r.height)):
        check_whole(f"The {name}", value, MIN_SIDE, MAX_SIDE)
        if value % 8:
            raise InvalidRequestError(f"The {name} must be a multiple of 8 (SD draws in 8-pixel cells), not {value}.")
    if r.seed is not None:
        check_whole("The seed", r.seed, 0, 2**32 - 1)
    check_whole("The batch count", r.batch_count, 1, MAX_IMAGES)
    check_whole("The batch size", r.batch_size, 1, 16)
    if r.batch_count * r.batch_size > MAX_IMAGES:
        raise InvalidRequestError(f"One job makes at most {MAX_IMAGES} pictures, not "
                                  f"{r.batch_count} x {r.batch_size}; lower the batch count.")
    check_whole("Clip skip", r.clip_skip, 1, MAX_CLIP_SKIP)
    check_number("The hires fix scale", r.hires_scale, 1.0, 4.0)
    check_number("The hires fix strength", r.hires_strength, 0.0, 1.0)
    check_whole("The hires fix steps", r.hires_steps, 0, MAX_STEPS)
    if r.hires_upscaler not in HIRES_UPSCALERS:
        raise InvalidRequestError(f"The hires fix upscaler must be one of {', '.join(HIRES_UPSCALERS)}, "
                                  f"not '{r.hires_upscaler}'.")
    if r.preview_every < 0:
        raise InvalidRequestError(f"Preview every N steps needs N of 0 or more, not {r.preview_every}.")
    if r.output is not None and Path(r.output).suffix.lower() != ".png":
        raise InvalidRequestError(f"The output {r.output} must be a .png file (it carries the settings).")
    try:
        prompt = parse_prompt(r.prompt or "")
    except InvalidRequestError as error:
        raise InvalidRequestError(f"In the prompt: {error}") from None
    try:
        negative = parse_prompt(r.negative or "")
    except InvalidRequestError as error:
        raise InvalidRequestError(f"In the negative prompt: {error}") from None
    loras: dict[str, LoraUse] = {}
    for name, weight in r.loras:
        check_number(f"The weight of LoRA '{name}'", weight, -5.0, 5.0)
        file = library.lora(name)
        loras[file.name.lower()] = LoraUse(file, float(weight))
    for tag in (*prompt.loras, *negative.loras):
        file = library.lora(tag.name)
        loras[file.name.lower()] = LoraUse(file, tag.weight, tag.unet_weight)
    extra = [library.embedding(e) for e in r.embeddings]
    embeddings = library.embeddings_in(r.prompt or "", r.negative or "", extra=extra)
    reference_image = None
    if r.reference is not None and str(r.reference).strip():
        from engines.sd15.reference import check_variant, load_reference_image

        check_variant(r.reference_variant)
        check_number("The reference scale", r.reference_scale, 0.0, 2.0)
        if not Path(r.reference).expanduser().is_file():
            raise InvalidRequestError(f"The reference image {r.reference} does not exist.")
        reference_image = load_reference_image(Path(r.reference).expanduser())
    second_image = None
    if r.second_reference is not None and str(r.second_reference).strip():
        from engines.sd15.reference import SPLITS, load_reference_image

        if reference_image is None:
            raise InvalidRequestError("Give the first character's reference before a second one.")
        if r.reference_split not in SPLITS:
            raise InvalidRequestError(f"The two references split the panel {' or '.join(SPLITS)}, "
                                      f"not '{r.reference_split}'.")
        if not Path(r.second_reference).expanduser().is_file():
            raise InvalidRequestError(f"The second reference image {r.second_reference} does not exist.")
        second_image = load_reference_image(Path(r.second_reference).expanduser())
    plan = Sd15Plan(r, CheckpointRef(str(r.model).strip(), (r.vae or "").strip() or None), sampler,
                    prompt, negative, tuple(loras.values()), tuple(embeddings), reference_image, second_image)
    w, h = plan.hires_size
    if plan.hires and max(w, h) > MAX_HIRES_SIDE:
        raise InvalidRequestError(f"The hires fix would make {w}x{h} pictures; keep each side at most "
                                  f"{MAX_HIRES_SIDE} pixels by lowering the scale.")
    return plan
