"""`python app.py generate`: manga panels from a prompt, with an Origin model or an SD 1.5 checkpoint.

    python app.py generate --model runs/my-style --prompt "manga girl, forest background"
    python app.py generate --model anything-v5.safetensors --prompt "1girl, (ink:1.2), <lora:lineart:0.8>" \\
        --negative "easynegative" --sampler "DPM++ 2M Karras" --size 512x768 --clip-skip 2 --batch 4 \\
        --hires 2 --hires-strength 0.5 --seed 42

The backend is read from --model: an Origin training run or checkpoint folder, or else an SD 1.5
checkpoint (an HF id, a diffusers folder, a .safetensors file or a name in the models folder).
Flags that only one backend understands are refused with a sentence for the other, before
anything loads. Same seed and settings give the same pixels.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

from engines.errors import InvalidRequestError, ModelNotFoundError
from engines.settings import MachineSettings, size_argument

# Kept as text here: importing the engines would load torch, and --help must stay instant.
SD_ONLY = ("clip_skip", "lora", "embedding", "hires", "hires_strength", "hires_steps", "hires_upscaler",
           "reference_scale", "reference_variant", "second_reference", "reference_split")
ORIGIN_ONLY = ("guidance_rescale", "upscale", "detail", "vibrancy", "saturation", "contrast", "brightness")


def _lora(text: str) -> tuple[str, float]:
    name, sep, weight = text.rpartition(":")
    if not sep or not name or len(weight) > 8 or "/" in weight or "\\" in weight:
        return text, 1.0
    try:
        return name, float(weight)
    except ValueError:
        return text, 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    both = parser.add_argument_group("both backends")
    both.add_argument("--model", required=True, metavar="REF",
                      help="an Origin run or checkpoint folder, or an SD 1.5 checkpoint: HF id, diffusers folder, "
                           ".safetensors file or a name in the models folder")
    both.add_argument("--prompt", default="", help="what to draw; SD checkpoints read A1111's syntax: (word:1.2), "
                                                   "[word], BREAK, <lora:name:0.8>, embedding names")
    both.add_argument("--negative", default="", help="what to steer away from")
    both.add_argument("--output", type=Path, default=None, metavar="FILE.png",
                      help="where to write the PNG (default: the outputs folder); more pictures get -2, -3, ...")
    both.add_argument("--seed", type=int, default=None, help="same seed + same settings = same picture (default random)")
    both.add_argument("--steps", type=int, default=None, help="denoising steps (default: Origin 30, SD 25)")
    both.add_argument("--cfg", type=float, default=None, help="how closely to follow the prompt (default: Origin 5, SD 7)")
    both.add_argument("--sampler", default=None,
                      help="SD: Euler a, Euler, DPM++ 2M, DPM++ 2M Karras (default), DPM++ SDE Karras, DPM++ 2M SDE "
                           "Karras, Heun, LMS, DDIM, UniPC, LCM; Origin: ddim (default), ddpm, dpm++, euler_a")
    both.add_argument("--size", type=size_argument, default=None, metavar="WxH", help="picture size, e.g. 512x768")
    both.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)
    both.add_argument("--height", type=int, default=None, help=argparse.SUPPRESS)
    both.add_argument("--batch", type=int, default=1, metavar="N", help="how many pictures (seeds seed, seed+1, ...)")
    both.add_argument("--vae", default=None, metavar="REF",
                      help="SD: a VAE to use instead of the checkpoint's; Origin latent models: where their VAE is now")
    both.add_argument("--reference", type=Path, default=None, metavar="IMAGE",
                      help="a picture of the character to keep across panels (SD: IP-Adapter); "
                           "Origin: a style reference or the previous panel")
    sd = parser.add_argument_group("SD 1.5 checkpoints")
    sd.add_argument("--clip-skip", type=int, default=None, metavar="N", help="text encoder layers to skip (default 2)")
    sd.add_argument("--lora", action="append", default=[], metavar="FILE[:W]",
                    help="a LoRA file or its name in models/loras, with a weight (default 1); repeatable")
    sd.add_argument("--embedding", action="append", default=[], metavar="FILE",
                    help="an embedding file outside models/embeddings; write its name in the prompt; repeatable")
    sd.add_argument("--hires", type=float, default=None, metavar="SCALE", help="hires fix: upscale by SCALE, denoise again")
    sd.add_argument("--hires-strength", type=float, default=None, metavar="X", help="hires fix denoising (default 0.5)")
    sd.add_argument("--hires-steps", type=int, default=None, metavar="N", help="hires fix steps (default: --steps)")
    sd.add_argument("--hires-upscaler", choices=("lanczos", "latent"), default=None, help="hires fix upscaler")
    sd.add_argument("--reference-scale", type=float, default=None, metavar="X",
                    help="how strongly the panel follows --reference, 0 to 2 (default 0.6)")
    sd.add_argument("--reference-variant", choices=("plain", "face"), default=None,
                    help="IP-Adapter: plain (the whole picture, default) or face (a cropped face)")
    sd.add_argument("--second-reference", type=Path, default=None, metavar="IMAGE",
                    help="a second character, drawn in the other half of the panel")
    sd.add_argument("--reference-split", choices=("left-right", "top-bottom"), default=None,
                    help="where the two references go: left/right halves (default) or top/bottom")
    origin = parser.add_argument_group("Origin models")
    origin.add_argument("--guidance-rescale", type=float, default=None, metavar="R",
                        help="0..1: keeps strong guidance from burning colours (default 0.7 on zero_snr models)")
    origin.add_argument("--upscale", type=int, choices=(1, 2, 4), default=None,
                        help="enlarge the result (the run's super-resolution model when it has one)")
    origin.add_argument("--detail", type=float, default=None, help="sharpening strength, 0 to 2 (default 0.3)")
    origin.add_argument("--vibrancy", type=float, default=None, help="boost of muted colours, -1 to 2 (default 0.15)")
    for name in ("saturation", "contrast", "brightness"):
        origin.add_argument(f"--{name}", type=float, default=None, help=f"{name}, 0 to 3 (default 1 = unchanged)")
    origin.add_argument("--no-enhance", action="store_true", help="skip sharpening, colour and clean-up passes")


def _refuse(args: argparse.Namespace, names: tuple[str, ...], backend: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value not in (None, [], False):
            flag = "--" + name.replace("_", "-")
            raise InvalidRequestError(f"{flag} does not apply to {backend}; leave it out or choose another --model.")


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    if args.size is not None:
        args.width, args.height = args.size
    if args.batch < 1 or args.batch > 64:
        raise InvalidRequestError(f"--batch must be from 1 to 64, not {args.batch}.")
    from engines.manga.panels import is_origin_model

    if is_origin_model(args.model, settings.paths.runs):
        return _run_origin(args, settings)
    given = Path(args.model).expanduser()
    if (given.is_absolute() or args.model.startswith((".", "~"))) and not given.exists():
        raise ModelNotFoundError(f"There is no model at {given}: give an Origin run or checkpoint folder, or an "
                                 "SD 1.5 checkpoint (a .safetensors file, a diffusers folder or a Hugging Face id).")
    return _run_sd15(args, settings)


def _run_origin(args: argparse.Namespace, settings: MachineSettings) -> int:
    from engines.manga.panels import ORIGIN_SAMPLERS
    from engines.origin.generation import cli as origin_cli

    _refuse(args, SD_ONLY, "Origin models (it is for SD 1.5 checkpoints)")
    if not args.prompt.strip():
        raise InvalidRequestError("Write a prompt describing the panel to generate.")
    path = Path(args.model).expanduser()
    if not path.is_dir():
        args.model = str(settings.paths.runs / args.model)
    sampler = (args.sampler or "ddim").strip()
    args.sampler = ORIGIN_SAMPLERS.get(sampler.lower(), sampler)
    args.steps = 30 if args.steps is None else args.steps
    args.cfg = 5.0 if args.cfg is None else args.cfg
    args.upscale = args.upscale or 1
    if args.batch == 1:
        return origin_cli.run(args, settings)
    first = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    for i in range(args.batch):
        one = copy.copy(args)
        one.seed = first + i
        if args.output is not None:
            one.output = args.output if i == 0 else args.output.with_name(f"{args.output.stem}-{i + 1}.png")
        origin_cli.run(one, settings)
    return 0


def _run_sd15(args: argparse.Namespace, settings: MachineSettings) -> int:
    _refuse(args, ORIGIN_ONLY, "SD 1.5 checkpoints (it is for Origin models)")
    from engines.context import build_engine_context
    from engines.progress import TqdmProgress
    from engines.sd15.library import Sd15Library
    from engines.sd15.request import Sd15Request, check
    from engines.sd15.txt2img import generate

    values = dict(model=args.model, prompt=args.prompt, negative=args.negative, seed=args.seed,
                  batch_count=args.batch, output=args.output,
                  loras=tuple(_lora(t) for t in args.lora), embeddings=tuple(args.embedding),
                  reference=args.reference, second_reference=args.second_reference)
    optional = dict(sampler=args.sampler, steps=args.steps, cfg=args.cfg, width=args.width, height=args.height,
                    vae=args.vae, clip_skip=args.clip_skip, hires_scale=args.hires,
                    hires_strength=args.hires_strength, hires_steps=args.hires_steps,
                    hires_upscaler=args.hires_upscaler, reference_scale=args.reference_scale,
                    reference_variant=args.reference_variant, reference_split=args.reference_split)
    values.update({k: v for k, v in optional.items() if v is not None})
    request = Sd15Request(**values)
    paths = settings.paths.ensure()
    check(request, Sd15Library(paths.models))  # a mistyped flag or LoRA: one sentence before torch loads
    ctx = build_engine_context(settings)
    bar = TqdmProgress(desc="Generating", lazy=True)  # appears with the first step

    started = time.perf_counter()
    try:
        result = generate(request, ctx.hardware, ctx.models, on_step=bar, outputs=paths.outputs)
    finally:
        bar.close()
    for picture in result.pictures:
        print(f"Saved {picture.path} (seed {picture.seed})")
    print(f"{len(result.pictures)} picture(s) in {time.perf_counter() - started:.1f} s")
    return 0
