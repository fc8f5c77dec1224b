"""What a Live-Action job asks for, and the checks that run before any model loads.

    request = LiveActionRequest(image=Path("hero.png"), strength=0.6)
    plan = check(request, store)     # every bad value, picture or model as one sentence; nothing loaded

The defaults are starting values that work for turning a drawn character into a photo: Realistic
Vision 5.1 with the ft-MSE VAE (the checkpoint ships without one), depth at 0.75 to hold the shape,
openpose at 0.4 to hold the pose without forcing a drawing's proportions, strength 0.65 (enough to
make skin and cloth real, not so much that colours and outfit drift), DPM++ 2M Karras, 30 steps,
CFG 7, clip skip 1 (photoreal checkpoints are trained on the text encoder's last layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.sd15.request import check_number, check_whole

DEFAULT_BASE_MODEL = "SG161222/Realistic_Vision_V5.1_noVAE"
DEFAULT_VAE = "stabilityai/sd-vae-ft-mse"
DEFAULT_CONTROLNET_DEPTH = "lllyasviel/control_v11f1p_sd15_depth"
DEFAULT_CONTROLNET_POSE = "lllyasviel/control_v11p_sd15_openpose"
DEFAULT_CONTROLNET_CANNY = "lllyasviel/control_v11p_sd15_canny"  # the optional third, off unless named
DEFAULT_PROMPT = ("RAW photo, photorealistic, real person, natural skin texture, detailed eyes, realistic hair, "
                  "realistic fabric, soft natural lighting, 35mm photograph, film grain, high quality")
DEFAULT_NEGATIVE = ("(anime, cartoon, drawing, illustration, painting, sketch, cgi, 3d render, semi-realistic:1.3), "
                    "lineart, flat colours, cel shading, deformed iris, deformed pupils, bad anatomy, extra fingers, "
                    "blurry, lowres, jpeg artifacts, watermark, text")
COLOUR_MODES = ("off", "mean-std", "histogram")
MAX_LONG_SIDE = 1536
MAX_STEPS = 150


@dataclass(frozen=True)
class LiveActionRequest:
    image: Path  # the drawn character (PNG, JPEG, WebP...; transparency, CMYK and 16-bit are handled)
    output: Optional[Path] = None  # an exact .png; None: <data>/outputs/live-action/<date>/<time>-<seed>.png
    prompt: str = DEFAULT_PROMPT  # A1111 syntax; describe the character to help: "1woman, red jacket, ..."
    negative: str = DEFAULT_NEGATIVE
    base_model: str = DEFAULT_BASE_MODEL  # an HF id, a diffusers folder or a single .safetensors
    vae: Optional[str] = DEFAULT_VAE  # None or "": the checkpoint's own
    controlnet_depth: str = DEFAULT_CONTROLNET_DEPTH
    controlnet_pose: str = DEFAULT_CONTROLNET_POSE
    controlnet_canny: str = ""  # "" = off; DEFAULT_CONTROLNET_CANNY to keep the line work too
    depth_model: str = "depth-anything/Depth-Anything-V2-Small-hf"  # transformers depth estimation
    pose_model: str = "usyd-community/vitpose-base-simple"  # transformers ViTPose
    depth_map: Optional[Path] = None  # a ready depth map (near = white): no depth estimator is loaded
    pose_map: Optional[Path] = None  # a ready OpenPose skeleton picture: no pose estimator is loaded
    strength: float = 0.65  # how much may change: 0 = the drawing as is, 1 = only the control maps remain
    steps: int = 30
    cfg: float = 7.0
    sampler: str = "DPM++ 2M Karras"
    seed: Optional[int] = None  # None: random
    width: int = 0  # 0 with height 0: the long side at long_side, multiples of 64, the picture's aspect
    height: int = 0
    long_side: int = 640
    depth_scale: float = 0.75
    pose_scale: float = 0.4
    canny_scale: float = 0.5
    depth_start: float = 0.0  # the part of the denoising each ControlNet steers (0..1 of the steps)
    depth_end: float = 1.0
    pose_start: float = 0.0
    pose_end: float = 1.0
    canny_start: float = 0.0
    canny_end: float = 1.0
    colour_transfer: str = "mean-std"  # "off", "mean-std" or "histogram": the source's colours, in CIELAB
    colour_strength: float = 1.0
    identity: bool = False  # the picture as an IP-Adapter reference, so face and outfit survive a high strength
    identity_scale: float = 0.5
    clip_skip: int = 1
    preview_every: int = 0  # a live preview every N steps (0: none)


@dataclass(frozen=True)
class LiveActionPlan:
    """A checked request: the picture read, the size, the control maps given, the SD 1.5 plan."""

    request: LiveActionRequest
    source: Any  # SourcePicture
    size: tuple[int, int]
    sd: Any  # engines.sd15.request.Sd15Plan: checkpoint, sampler, parsed prompts, LoRAs, embeddings
    depth_map: Any = None  # PIL RGB at ``size`` when given
    pose_map: Any = None

    @property
    def controlnets(self) -> tuple[tuple[str, str, float, float, float], ...]:
        """(kind, model, scale, start, end) of each ControlNet in the order they are applied."""
        r = self.request
        nets = [("depth", r.controlnet_depth, r.depth_scale, r.depth_start, r.depth_end),
                ("pose", r.controlnet_pose, r.pose_scale, r.pose_start, r.pose_end)]
        if (r.controlnet_canny or "").strip():
            nets.append(("canny", r.controlnet_canny.strip(), r.canny_scale, r.canny_start, r.canny_end))
        return tuple(nets)


def _check_numbers(r: LiveActionRequest) -> None:
    check_number("The strength", r.strength, 0.01, 1.0)
    check_whole("Steps", r.steps, 1, MAX_STEPS)
    if int(r.steps * r.strength) < 1:
        raise InvalidRequestError(f"{r.steps} steps at strength {r.strength:g} leave no step to take; "
                                  "raise the steps or the strength.")
    for kind in ("depth", "pose", "canny"):
        check_number(f"The {kind} ControlNet's scale", getattr(r, f"{kind}_scale"), 0.0, 2.0)
        start, end = getattr(r, f"{kind}_start"), getattr(r, f"{kind}_end")
        check_number(f"The {kind} ControlNet's start", start, 0.0, 1.0)
        check_number(f"The {kind} ControlNet's end", end, 0.0, 1.0)
        if start >= end:
            raise InvalidRequestError(f"The {kind} ControlNet must start before it ends, not {start:g} to {end:g}.")
    if r.colour_transfer not in COLOUR_MODES:
        raise InvalidRequestError(f"Colour transfer must be one of {', '.join(COLOUR_MODES)}, "
                                  f"not '{r.colour_transfer}'.")
    check_number("The colour transfer strength", r.colour_strength, 0.0, 1.0)
    check_number("The identity scale", r.identity_scale, 0.0, 1.5)
    check_whole("The long side", r.long_side, 64, MAX_LONG_SIDE)
    if bool(r.width) != bool(r.height):
        raise InvalidRequestError("Give both the width and the height, or neither (then the long side decides).")
    if r.width:
        for name, value in (("width", r.width), ("height", r.height)):
            check_whole(f"The {name}", value, 64, MAX_LONG_SIDE)
            if value % 8:
                raise InvalidRequestError(f"The {name} must be a multiple of 8 (SD draws in 8-pixel cells), "
                                          f"not {value}.")
    if r.output is not None and Path(r.output).suffix.lower() != ".png":
        raise InvalidRequestError(f"The output {r.output} must be a .png file (it carries the settings).")
    for kind, model in (("depth", r.controlnet_depth), ("pose", r.controlnet_pose)):
        if not str(model or "").strip():
            raise InvalidRequestError(f"Choose the {kind} ControlNet: a Hugging Face id, a folder or a file.")


def check_settings(request: LiveActionRequest, store: Any) -> Any:
    """Everything but the picture and the maps (a batch checks these once): the SD 1.5 plan; loads nothing."""
    from engines.sd15.library import Sd15Library
    from engines.sd15.request import Sd15Request, check as sd15_check

    r = request
    _check_numbers(r)
    sd = sd15_check(Sd15Request(
        model=str(r.base_model or "").strip(), prompt=r.prompt or "", negative=r.negative or "",
        vae=(r.vae or "").strip() or None, sampler=r.sampler, steps=r.steps, cfg=r.cfg, seed=r.seed,
        clip_skip=r.clip_skip), Sd15Library(store.models_dir))
    # Every model resolved now: a missing one is a sentence before the first one loads.
    store.resolve(sd.checkpoint.model)
    if sd.checkpoint.vae:
        store.resolve(sd.checkpoint.vae)
    for kind in ("depth", "pose", "canny"):
        model = str(getattr(r, f"controlnet_{kind}") or "").strip()
        if model:
            store.resolve(model)
    if not _given(r.depth_map):
        store.resolve(r.depth_model)
    if not _given(r.pose_map):
        store.resolve(r.pose_model)
    return sd


def check(request: LiveActionRequest, store: Any, sd: Any = None) -> LiveActionPlan:
    """Every bad value, unreadable picture or missing model as one sentence; loads no model.

    ``sd`` is ``check_settings``' result when the caller has it already (a batch, once per folder)."""
    from engines.live_action.source import read_control_map, read_source, working_size

    r = request
    if not str(r.image or "").strip():
        raise InvalidRequestError("Give the drawn character's picture.")
    sd = sd if sd is not None else check_settings(r, store)
    source = read_source(Path(r.image), "The picture")
    size = working_size(source.size, r.long_side, (r.width, r.height) if r.width else None)
    depth_map = read_control_map(r.depth_map, size, "The depth map") if _given(r.depth_map) else None
    pose_map = read_control_map(r.pose_map, size, "The pose map") if _given(r.pose_map) else None
    return LiveActionPlan(r, source, size, sd, depth_map, pose_map)


def _given(path: Optional[Path]) -> bool:
    return path is not None and bool(str(path).strip())
