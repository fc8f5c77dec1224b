"""`python app.py live-action`: a drawn character made photoreal, keeping its pose, shape and colours.

    python app.py live-action --image hero.png --output hero-real.png
    python app.py live-action --image hero.png --output hero-real.png --strength 0.55 --seed 7 \\
        --prompt "RAW photo, young woman, red jacket, city street" --pose-map hero-pose.png
    python app.py live-action --input-dir drawings/ --output-dir real/

Writes the PNG (A1111's parameters inside), its realism report as JSON beside it, and the control maps
(``.depth.png``, ``.pose.png``). A bad picture or a missing model is one sentence and a non-zero exit,
before any model loads; in a batch a bad picture is reported and skipped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engines.errors import InvalidRequestError
from engines.settings import MachineSettings, size_argument

# The request's defaults, as text: importing the engine would load torch, and --help must stay instant.
DEFAULTS = "defaults: Realistic Vision 5.1 + ft-MSE VAE, depth 0.75, pose 0.4, strength 0.65, 30 steps, CFG 7"


def _window(text: str) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give the window as START:END, e.g. 0:0.8, not '{text}'") from None
    return start, end


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = DEFAULTS
    io = parser.add_argument_group("pictures")
    io.add_argument("--image", type=Path, default=None, metavar="IN", help="the drawn character (PNG, JPEG, WebP...)")
    io.add_argument("--output", type=Path, default=None, metavar="OUT.png",
                    help="the photoreal picture (its report goes to OUT.json, the maps to OUT.depth.png, ...)")
    io.add_argument("--input-dir", type=Path, default=None, metavar="DIR", help="a batch: every picture in DIR")
    io.add_argument("--output-dir", type=Path, default=None, metavar="DIR", help="where the batch's pictures go")
    models = parser.add_argument_group("models (an HF id, a folder, a .safetensors file or a name in models/)")
    models.add_argument("--base-model", default=None, metavar="M", help="the SD 1.5 checkpoint")
    models.add_argument("--vae", default=None, metavar="M", help="a VAE instead of the checkpoint's ('' for its own)")
    models.add_argument("--controlnet-depth", default=None, metavar="M")
    models.add_argument("--controlnet-pose", default=None, metavar="M")
    models.add_argument("--controlnet-canny", default=None, metavar="M",
                        help="an optional third ControlNet on the drawing's edges (off by default)")
    models.add_argument("--depth-model", default=None, metavar="M", help="the depth estimator (transformers)")
    models.add_argument("--pose-model", default=None, metavar="M", help="the pose estimator (transformers ViTPose)")
    models.add_argument("--depth-map", type=Path, default=None, metavar="F", help="a ready depth map (near = white)")
    models.add_argument("--pose-map", type=Path, default=None, metavar="F", help="a ready OpenPose skeleton picture")
    how = parser.add_argument_group("how")
    how.add_argument("--prompt", default=None, help="A1111 syntax; describe the person for a better likeness")
    how.add_argument("--negative", default=None)
    how.add_argument("--strength", type=float, default=None, help="how much may change, 0..1 (default 0.65)")
    how.add_argument("--steps", type=int, default=None)
    how.add_argument("--cfg", type=float, default=None)
    how.add_argument("--sampler", default=None, help="default DPM++ 2M Karras")
    how.add_argument("--seed", type=int, default=None, help="same seed + same settings = same picture")
    how.add_argument("--size", type=size_argument, default=None, metavar="WxH",
                     help="the diffused size, multiples of 8 (default: long side 640, multiples of 64)")
    how.add_argument("--long-side", type=int, default=None, metavar="PX")
    how.add_argument("--clip-skip", type=int, default=None)
    for kind, default in (("depth", "0.75"), ("pose", "0.4"), ("canny", "0.5")):
        how.add_argument(f"--{kind}-scale", type=float, default=None, help=f"default {default}")
        how.add_argument(f"--{kind}-window", type=_window, default=None, metavar="START:END",
                         help="the part of the denoising it steers (default 0:1)")
    how.add_argument("--colour-transfer", choices=("off", "mean-std", "histogram"), default=None,
                     help="bring the drawing's colours back in CIELAB (default mean-std)")
    how.add_argument("--colour-strength", type=float, default=None)
    how.add_argument("--identity", action="store_true", help="the picture as an IP-Adapter reference too")
    how.add_argument("--identity-scale", type=float, default=None)


def request_from_args(args: argparse.Namespace, image: Path | None) -> object:
    from engines.live_action.request import LiveActionRequest

    values: dict[str, object] = {"image": image, "output": args.output, "identity": bool(args.identity)}
    simple = ("prompt", "negative", "base_model", "vae", "controlnet_depth", "controlnet_pose", "controlnet_canny",
              "depth_model", "pose_model", "depth_map", "pose_map", "strength", "steps", "cfg", "sampler", "seed",
              "long_side", "clip_skip", "depth_scale", "pose_scale", "canny_scale", "colour_transfer",
              "colour_strength", "identity_scale")
    values.update({k: getattr(args, k) for k in simple if getattr(args, k) is not None})
    if args.size is not None:
        values["width"], values["height"] = args.size
    for kind in ("depth", "pose", "canny"):
        window = getattr(args, f"{kind}_window")
        if window is not None:
            values[f"{kind}_start"], values[f"{kind}_end"] = window
    return LiveActionRequest(**values)


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    batch = args.input_dir is not None or args.output_dir is not None
    if batch and (args.input_dir is None or args.output_dir is None):
        raise InvalidRequestError("A batch needs both --input-dir and --output-dir.")
    if batch and (args.image is not None or args.output is not None):
        raise InvalidRequestError("Give either --image and --output, or --input-dir and --output-dir, not both.")
    if not batch and args.image is None:
        raise InvalidRequestError("Give the drawn character with --image (or a folder with --input-dir).")
    from engines.context import build_engine_context
    from engines.live_action.request import check, check_settings
    from engines.progress import TqdmProgress

    ctx = build_engine_context(settings)
    request = request_from_args(args, args.image)
    # Everything is checked before the bar appears and before torch loads: a bad flag, picture or
    # model is the one line printed.
    if batch:
        from engines.live_action.source import images_in

        images_in(args.input_dir)
        check_settings(request, ctx.models)
    else:
        plan = check(request, ctx.models)
    bar = TqdmProgress(desc="Live-Action", lazy=True)  # appears with the first step

    started = time.perf_counter()
    try:
        if batch:
            from engines.live_action.batch import run_batch

            result = run_batch(request, args.input_dir, args.output_dir, ctx.hardware, ctx.models, on_step=bar)
        else:
            from engines.live_action.photoreal import make_live_action

            one = make_live_action(request, ctx.hardware, ctx.models, on_step=bar,
                                   outputs=settings.paths.outputs, plan=plan)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    if not batch:
        print(f"Saved {one.path} (seed {one.seed}) and its report {one.report_path.name}")
        print(one.report.summary())
        return 0
    for item in result.done:
        print(f"Saved {item.path} (seed {item.seed}): {item.report.summary()}")
    for file, reason in result.failed:
        print(f"Skipped {file.name}: {reason}")
    print(f"{result.summary()} {seconds:.1f} s")
    return 0 if result.done or not result.failed else 1
