"""`python app.py generate` with an Origin model: a manga panel with a progress bar.

The command's flags live in engines/manga/cli.py, which reads the backend from --model and hands
Origin runs and checkpoints here with Origin's defaults filled in:

    python app.py generate --model runs/my-style --prompt "manga girl, forest background" --output girl.png
        [--negative TEXT] [--seed S] [--steps N] [--cfg X] [--guidance-rescale R] [--sampler {ddpm,ddim,dpm++,euler_a}]
        [--reference IMAGE] [--upscale {1,2,4}] [--size WxH]
        [--detail X] [--vibrancy X] [--saturation X] [--contrast X] [--brightness X] [--no-enhance]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engines.settings import MachineSettings


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
    bar = TqdmProgress(desc="Generating", lazy=True)  # appears with the first step

    try:
        result = generate(request, ctx.hardware, on_step=bar, store=ctx.models)
    finally:
        bar.close()
    p = result.parameters
    print(f"Saved {result.path} ({p['width']}x{p['height']}, seed {p['seed']}, {p['upscaler']} upscale) "
          f"in {result.seconds:.1f} s")
    return 0
