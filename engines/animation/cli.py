"""`python app.py animate`: a character animated with AnimateDiff, from a prompt or from a still.

    python app.py animate --output walk.mp4 --prompt "1girl, walking, wind in hair" --frames 16
    python app.py animate --output hero.gif --image hero-real.png --prompt "1woman, smiling, hair moving"
    python app.py animate --output long.webm --frames 48 --context 16 --stride 4 \\
        --prompt $'1girl, rooftop\\n0: closed eyes\\n24: open eyes, smile\\nnight sky'

Writes the video, its sidecar JSON (OUT.json: the settings and the consistency score), frame 0 as
OUT.first.png, and every frame as a PNG with --frames-dir. A bad value, still or missing model is one
sentence and a non-zero exit, before any model loads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engines.settings import MachineSettings, size_argument

# The request's defaults, as text: importing the engine would load torch, and --help must stay instant.
DEFAULTS = ("defaults: motion adapter v1-5-3, 16 frames at 8 fps, 512x512, 25 steps, CFG 7.5, DDIM, clip skip 2; "
            "a still is animated by video2video at strength 0.6")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = DEFAULTS
    io = parser.add_argument_group("files")
    io.add_argument("--output", type=Path, required=True, metavar="OUT.{mp4,gif,webp,webm}",
                    help="the video (its settings and score go to OUT.json)")
    io.add_argument("--image", type=Path, default=None, metavar="STILL", help="a still to animate (image-to-video)")
    io.add_argument("--frames-dir", type=Path, default=None, metavar="DIR", help="also save every frame as a PNG")
    models = parser.add_argument_group("models (an HF id, a folder, a .safetensors file or a name in models/)")
    models.add_argument("--base-model", default=None, metavar="M", help="the SD 1.5 checkpoint")
    models.add_argument("--vae", default=None, metavar="M")
    models.add_argument("--motion-adapter", default=None, metavar="M", help="the AnimateDiff motion module")
    models.add_argument("--motion-lora", default=None, metavar="M", help="a motion LoRA (zoom, pan...)")
    models.add_argument("--sparsectrl-model", default=None, metavar="M", help="the RGB SparseCtrl (sparsectrl mode)")
    how = parser.add_argument_group("how")
    how.add_argument("--prompt", default=None, help="A1111 syntax; prompt travel with lines '0: ...', '16: ...'")
    how.add_argument("--negative", default=None)
    how.add_argument("--frames", type=int, default=None, help="default 16; more than --context uses FreeNoise")
    how.add_argument("--fps", type=int, default=None, help="default 8")
    how.add_argument("--steps", type=int, default=None)
    how.add_argument("--cfg", type=float, default=None)
    how.add_argument("--sampler", default=None, help="default DDIM")
    how.add_argument("--seed", type=int, default=None, help="same seed + same settings = same video")
    how.add_argument("--size", type=size_argument, default=None, metavar="WxH", help="multiples of 8 (default 512x512)")
    how.add_argument("--clip-skip", type=int, default=None)
    how.add_argument("--context", type=int, default=None, help="FreeNoise window in frames (default 16)")
    how.add_argument("--stride", type=int, default=None, help="frames between window starts (default 4)")
    how.add_argument("--free-init", action="store_true", help="FreeInit: steadier motion, x iterations the time")
    how.add_argument("--free-init-iters", type=int, default=None)
    how.add_argument("--motion-scale", type=float, default=None, help="the motion LoRA's strength (default 1)")
    still = parser.add_argument_group("the still")
    still.add_argument("--still-mode", choices=("video2video", "sparsectrl", "reference"), default=None,
                       help="how the still conditions the frames (default video2video)")
    still.add_argument("--strength", type=float, default=None, help="video2video: how far frames move (default 0.6)")
    still.add_argument("--identity", action="store_true", help="the still as the IP-Adapter reference too")
    still.add_argument("--identity-scale", type=float, default=None)
    still.add_argument("--sparsectrl-scale", type=float, default=None)
    out = parser.add_argument_group("the file")
    out.add_argument("--loop", choices=("loop", "ping-pong"), default=None, help="ping-pong plays back and forth")


def request_from_args(args: argparse.Namespace) -> object:
    from engines.animation.request import AnimationRequest

    values: dict[str, object] = {"output": args.output, "image": args.image, "identity": bool(args.identity),
                                 "free_init": bool(args.free_init)}
    simple = ("prompt", "negative", "base_model", "vae", "motion_adapter", "motion_lora", "sparsectrl_model",
              "frames", "fps", "steps", "cfg", "sampler", "seed", "clip_skip", "context", "stride",
              "free_init_iters", "motion_scale", "still_mode", "strength", "identity_scale", "sparsectrl_scale",
              "loop", "frames_dir")
    values.update({k: getattr(args, k) for k in simple if getattr(args, k) is not None})
    if args.size is not None:
        values["width"], values["height"] = args.size
    return AnimationRequest(**values)


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    from engines.animation.request import check
    from engines.context import build_engine_context
    from engines.progress import TqdmProgress

    ctx = build_engine_context(settings)
    request = request_from_args(args)
    # Everything is checked before the bar appears and before torch loads: a bad flag, still or model is
    # the one line printed.
    plan = check(request, ctx.models)
    bar = TqdmProgress(desc="Animation", lazy=True)  # appears with the first step

    from engines.animation.animate import make_animation

    started = time.perf_counter()
    try:
        result = make_animation(request, ctx.hardware, ctx.models, on_step=bar, outputs=settings.paths.outputs,
                                plan=plan)
    finally:
        bar.close()
    print(f"Saved {result.path} ({result.frames} frames at {result.fps} fps, seed {result.seed}) "
          f"and {result.sidecar_path.name} in {time.perf_counter() - started:.1f} s")
    print(result.report.summary())
    for note in result.notes:
        print(note)
    return 0
