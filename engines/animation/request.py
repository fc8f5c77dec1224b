"""What an Animation job asks for, and the checks that run before any model loads.

    request = AnimationRequest(prompt="1girl, wind in hair", image=Path("hero.png"), frames=24)
    plan = check(request, store)     # every bad value, picture or model as one sentence; nothing loaded

Starting values: AnimateDiff's v1-5-3 motion adapter on an anime SD 1.5 checkpoint, 16 frames at
8 fps (the length the motion modules were trained on), 512x512, 25 steps, CFG 7.5, DDIM with the
linear beta schedule AnimateDiff was trained with, clip skip 2. A still is animated through
video-to-video from the still repeated (the mode the consistency score rates best for keeping the
character, docs/animation.md says why) at strength 0.6. More frames than the context window (16)
run through FreeNoise's overlapping windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engines.animation.video_io import LOOPS
from engines.errors import InvalidRequestError
from engines.sd15.request import check_number, check_whole

DEFAULT_BASE_MODEL = "Lykon/AnyLoRA"
DEFAULT_MOTION_ADAPTER = "guoyww/animatediff-motion-adapter-v1-5-3"
DEFAULT_SPARSECTRL = "guoyww/animatediff-sparsectrl-rgb"
DEFAULT_NEGATIVE = "(worst quality, low quality:1.3), lowres, bad anatomy, blurry, watermark, text, jpeg artifacts"
DEFAULT_SAMPLER = "DDIM"
# How a still conditions the frames (docs/animation.md compares them):
#   video2video  the still repeated as every frame, re-noised to ``strength`` and denoised with motion;
#   sparsectrl   text-to-video with an RGB SparseCtrl holding frame 0 to the still;
#   reference    text-to-video with the still only as the IP-Adapter reference.
STILL_MODES = ("video2video", "sparsectrl", "reference")
MAX_FRAMES = 256
MAX_SIDE = 1024
MAX_STEPS = 100
MAX_FPS = 60


@dataclass(frozen=True)
class AnimationRequest:
    output: Optional[Path] = None  # .mp4, .gif, .webp or .webm; None: <data>/outputs/animation/<date>/<time>-<seed>.mp4
    image: Optional[Path] = None  # a still to animate (a Live-Action or Text-to-Manga result); None: text-to-video
    prompt: str = ""  # A1111 syntax; or prompt travel: a head line, "0: ...", "16: ...", a tail line
    negative: str = DEFAULT_NEGATIVE
    base_model: str = DEFAULT_BASE_MODEL  # an HF id, a diffusers folder, a single .safetensors or a name in models/
    vae: Optional[str] = None  # None or "": the checkpoint's own
    motion_adapter: str = DEFAULT_MOTION_ADAPTER  # an HF id, a folder or a single file (mm_sd_v15_v2.ckpt...)
    motion_lora: str = ""  # a motion LoRA (zoom, pan, roll...): "" = none
    motion_scale: float = 1.0  # the motion LoRA's strength (0 = none of its motion, 1 = as trained)
    still_mode: str = "video2video"  # how the still conditions the frames, one of STILL_MODES
    strength: float = 0.6  # video2video: how far each frame may move from the still (0..1)
    identity: bool = False  # the still as the IP-Adapter reference too (keeps face and outfit)
    identity_scale: float = 0.5
    sparsectrl_model: str = DEFAULT_SPARSECTRL
    sparsectrl_scale: float = 1.0
    frames: int = 16
    fps: int = 8
    steps: int = 25
    cfg: float = 7.5
    sampler: str = DEFAULT_SAMPLER
    seed: Optional[int] = None  # None: random
    width: int = 512
    height: int = 512
    clip_skip: int = 2
    context: int = 16  # FreeNoise window: frames the motion modules see at once (at most the adapter's 32)
    stride: int = 4  # frames between the starts of two overlapping windows
    free_init: bool = False  # FreeInit: re-noise the low frequencies and denoise again (x iterations the time)
    free_init_iters: int = 2
    loop: str = "loop"  # "loop" (plays from the start again) or "ping-pong" (forwards, then backwards)
    frames_dir: Optional[Path] = None  # also save every frame as a PNG there
    preview_every: int = 0  # a live preview every N steps (0: none)


@dataclass(frozen=True)
class AnimationPlan:
    """A checked request: the still read and fitted, the parsed prompt travel, the SD 1.5 plan."""

    request: AnimationRequest
    sd: Any  # engines.sd15.request.Sd15Plan: checkpoint, sampler, parsed prompts, LoRAs, embeddings
    travel: Any  # engines.animation.prompt_travel.PromptTravel: frame -> prompt
    still: Any = None  # PIL RGB at (width, height), or None for text-to-video
    still_note: str = ""  # what was converted when the still was read

    @property
    def mode(self) -> str:
        return self.request.still_mode if self.still is not None else "text"

    @property
    def windowed(self) -> bool:
        return windowed(self.request, self.travel)

    @property
    def output_suffix(self) -> str:
        return Path(self.request.output).suffix.lower() if self.request.output else ".mp4"


def windowed(request: AnimationRequest, travel: Any) -> bool:
    """FreeNoise runs: more frames than one window, or prompts that travel over the frames."""
    return request.frames > request.context or len(travel.keyframes) > 1


def _check_numbers(r: AnimationRequest) -> None:
    check_whole("The number of frames", r.frames, 2, MAX_FRAMES)
    check_whole("The frame rate", r.fps, 1, MAX_FPS)
    check_whole("Steps", r.steps, 1, MAX_STEPS)
    check_number("The CFG scale", r.cfg, 0.0, 30.0)
    check_whole("Clip skip", r.clip_skip, 1, 12)
    for name, value in (("width", r.width), ("height", r.height)):
        check_whole(f"The {name}", value, 64, MAX_SIDE)
        if value % 8:
            raise InvalidRequestError(f"The {name} must be a multiple of 8 (SD draws in 8-pixel cells), not {value}.")
    if r.seed is not None:
        check_whole("The seed", r.seed, 0, 2**32 - 1)
    check_number("The motion LoRA's scale", r.motion_scale, 0.0, 2.0)
    check_number("The strength", r.strength, 0.05, 1.0)
    check_number("The identity scale", r.identity_scale, 0.0, 1.5)
    check_number("The SparseCtrl scale", r.sparsectrl_scale, 0.0, 2.0)
    check_whole("The context window", r.context, 2, 32)
    check_whole("The window stride", r.stride, 1, 32)
    if r.stride >= r.context:
        raise InvalidRequestError(f"The window stride ({r.stride}) must be smaller than the context window "
                                  f"({r.context}), or the windows would not overlap and the motion would jump.")
    check_whole("FreeInit's iterations", r.free_init_iters, 1, 5)
    if r.still_mode not in STILL_MODES:
        raise InvalidRequestError(f"The still mode must be one of {', '.join(STILL_MODES)}, not '{r.still_mode}'.")
    if r.loop not in LOOPS:
        raise InvalidRequestError(f"The loop must be {' or '.join(LOOPS)}, not '{r.loop}'.")
    if r.preview_every < 0:
        raise InvalidRequestError(f"Preview every N steps needs N of 0 or more, not {r.preview_every}.")
    if r.output is not None:  # the format, its frame rate (GIF tops out at 50 fps) and ffmpeg for MP4/WebM
        from engines.animation.video_io import check_video_path

        check_video_path(Path(r.output), r.fps)
    if not str(r.motion_adapter or "").strip():
        raise InvalidRequestError("Choose a motion adapter: a Hugging Face id, a folder or a file.")


def _check_windows(r: AnimationRequest, travel: Any, has_still: bool) -> None:
    """What FreeNoise and SparseCtrl allow, said before anything loads."""
    long = windowed(r, travel)
    if has_still and r.still_mode == "sparsectrl" and long:
        why = "prompt travel" if len(travel.keyframes) > 1 else f"{r.frames} frames"
        raise InvalidRequestError(
            f"SparseCtrl runs one window of at most {r.context} frames and one prompt, so {why} cannot use it; "
            "choose the video2video still mode, or fewer frames.")
    if r.free_init and long:
        raise InvalidRequestError("FreeInit re-draws the noise that FreeNoise's overlapping windows share, so the "
                                  "two do not combine: turn FreeInit off for long videos and prompt travel, or "
                                  "lower the frames to the context window.")
    last = travel.keyframes[-1] if travel.keyframes else 0
    if last >= r.frames:
        raise InvalidRequestError(f"The prompt travel names frame {last}, but the video has {r.frames} frames "
                                  f"(0 to {r.frames - 1}); add frames or move the keyframe.")


def check_settings(request: AnimationRequest, store: Any) -> tuple[Any, Any]:
    """Everything but the still: the SD 1.5 plan and the prompt travel; every model resolved; loads nothing."""
    from engines.animation.prompt_travel import parse_prompt_travel
    from engines.sd15.library import Sd15Library
    from engines.sd15.request import Sd15Request, check as sd15_check

    r = request
    _check_numbers(r)
    travel = parse_prompt_travel(r.prompt or "")
    # The SD 1.5 layer checks the sampler, the checkpoint name, every keyframe's syntax, LoRAs and embeddings:
    # the keyframes joined with BREAK parse exactly like each of them alone.
    sd = sd15_check(Sd15Request(
        model=str(r.base_model or "").strip(), prompt=" BREAK ".join(travel.prompts) or "", negative=r.negative or "",
        vae=(r.vae or "").strip() or None, sampler=r.sampler, steps=r.steps, cfg=r.cfg, seed=r.seed,
        width=r.width, height=r.height, clip_skip=r.clip_skip), Sd15Library(store.models_dir))
    store.resolve(sd.checkpoint.model)
    if sd.checkpoint.vae:
        store.resolve(sd.checkpoint.vae)
    store.resolve(str(r.motion_adapter).strip())
    if (r.motion_lora or "").strip():
        store.resolve(r.motion_lora.strip())
    return sd, travel


def check(request: AnimationRequest, store: Any) -> AnimationPlan:
    """Every bad value, unreadable still or missing model as one sentence; loads no model."""
    r = request
    sd, travel = check_settings(r, store)
    still, note = None, ""
    if r.image is not None and str(r.image).strip():
        from engines.live_action.source import fit_to, read_source

        source = read_source(Path(r.image), "The still")
        image = source.image
        if image.mode == "RGBA":  # transparency onto neutral grey, as Live-Action diffuses it
            from PIL import Image

            flat = Image.new("RGB", image.size, (128, 128, 128))
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        still, note = fit_to(image.convert("RGB"), (r.width, r.height)), source.note
        if r.still_mode == "sparsectrl":
            store.resolve(str(r.sparsectrl_model or "").strip() or DEFAULT_SPARSECTRL)
    elif r.identity:
        raise InvalidRequestError("Identity keeps the character of a still: give the still, or turn identity off.")
    _check_windows(r, travel, still is not None)
    return AnimationPlan(r, sd, travel, still, note)
