"""`python app.py generate`: a manga panel from a trained Origin model, with a progress bar.

    python app.py generate --model runs/my-style --prompt "manga girl, forest background" --output girl.png
        [--negative TEXT] [--seed S] [--steps N] [--cfg X] [--guidance-rescale R] [--sampler {ddpm,ddim,dpm++,euler_a}]
        [--reference IMAGE] [--upscale {1,2,4}] [--width W] [--height H]
        [--detail X] [--vibrancy X] [--saturation X] [--contrast X] [--brightness X] [--no-enhance]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engines.settings import MachineSettings

# Kept here as well as in the sampler: importing the sampler loads torch, and --help must stay instant.
SAMPLER_NAMES = ("ddpm", "ddim", "dpm++", "euler_a")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT",
                        help="a training run folder (its newest checkpoint) or one checkpoint folder")
    parser.add_argument("--prompt", required=True, help="what to draw, in any language the text encoder knows")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE.png",
                        help="where to write the PNG (default: the outputs folder, named by time and seed)")
    parser.add_argument("--negative", default="", help="what to steer away from")
    parser.add_argument("--seed", type=int, default=None, help="same seed + same settings = same picture (default random)")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    parser.add_argument("--cfg", type=float, default=5.0, help="how closely to follow the prompt (default 5, 1 = off)")
    parser.add_argument("--guidance-rescale", type=float, default=None, metavar="R",
                        help="0..1: keeps strong guidance from burning colours into noise (default: 0.7 for "
                             "models on the zero_snr schedule, 0 for older ones)")
    parser.add_argument("--sampler", choices=SAMPLER_NAMES, default="ddim", help="the denoising method (default ddim)")
    parser.add_argument("--reference", type=Path, default=None, metavar="IMAGE",
                        help="a style reference or the previous panel")
    parser.add_argument("--vae", default=None, metavar="MODEL",
                        help="latent-space models: where their VAE is now, if it moved (it must be the same weights)")
    parser.add_argument("--upscale", type=int, choices=(1, 2, 4), default=1,
                        help="enlarge the result (trained super-resolution model when the run has one, else bicubic)")
    parser.add_argument("--width", type=int, default=None, help="width in pixels (default: the model's resolution)")
    parser.add_argument("--height", type=int, default=None, help="height in pixels (default: the model's resolution)")
    parser.add_argument("--detail", type=float, default=None, help="sharpening strength, 0 to 2 (default 0.3)")
    parser.add_argument("--vibrancy", type=float, default=None, help="boost of muted colours, -1 to 2 (default 0.15)")
    for name in ("saturation", "contrast", "brightness"):
        parser.add_argument(f"--{name}", type=float, default=None, help=f"{name}, 0 to 3 (default 1 = unchanged)")
    parser.add_argument("--no-enhance", action="store_true", help="skip sharpening, colour and clean-up passes")


def build_request(args: argparse.Namespace, outputs: Path):
    from dataclasses import replace

    from engines.origin.generation.enhance import EnhanceSettings
    from engines.origin.generation.sampler import GenerateRequest

    settings = EnhanceSettings.off() if args.no_enhance else EnhanceSettings()
    for name in ("detail", "vibrancy", "saturation", "contrast", "brightness"):
        if getattr(args, name) is not None:
            settings = replace(settings, **{name: getattr(args, name)})
    output = args.output
    if output is None:
        output = outputs / f"origin-{time.strftime('%Y%m%d-%H%M%S')}{'' if args.seed is None else f'-{args.seed}'}.png"
    return GenerateRequest(
        model=args.model, prompt=args.prompt, output=output, negative=args.negative, seed=args.seed,
        steps=args.steps, cfg=args.cfg, guidance_rescale=args.guidance_rescale, sampler=args.sampler,
        reference=args.reference, vae=args.vae, upscale=args.upscale,
        width=args.width, height=args.height, enhance=settings,
    )


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    from engines.origin.model.checkpoints import resolve_checkpoint

    # A mistyped --model is the commonest error: say so before torch loads (seconds on a laptop).
    resolve_checkpoint(args.model)

    from engines.context import build_engine_context
    from engines.origin.generation.sampler import check, generate
    from engines.progress import TqdmProgress

    ctx = build_engine_context(settings)
    request = build_request(args, ctx.settings.paths.outputs)
    check(request)
    bars: list[TqdmProgress] = []

    def on_step(step: int, total: int, message: str = "", preview: object = None) -> None:
        # The bar appears with the first step, so an error while loading stays one clean line.
        if not bars:
            bars.append(TqdmProgress(desc="Generating"))
        bars[0](step, total, message, preview)

    try:
        result = generate(request, ctx.hardware, on_step=on_step, store=ctx.models)
    finally:
        for bar in bars:
            bar.close()
    p = result.parameters
    print(f"Saved {result.path} ({p['width']}x{p['height']}, seed {p['seed']}, {p['upscaler']} upscale) "
          f"in {result.seconds:.1f} s")
    return 0
