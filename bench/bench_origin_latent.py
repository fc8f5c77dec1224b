"""Latent Origin: one training step at 512 px in latent space against one at 64 px in pixel space.

Both steps run the trainer's own code (``forward_backward.LossComputer`` under accelerate, the
step's randomness from ``draw_inputs``, AdamW) on the same network: the default Origin config (or
the tiny one with ``--quick``), once with 3 pixel channels at 64 px and once with the 4 latent
channels of Stable Diffusion's VAE for 512 px pictures (64x64 latents). The latent step includes
what only it does: the art losses and the experts' targets read the latents' approximate picture
(the fitted linear latent -> RGB map, ``model/latent.py``). The VAE is SD's architecture with random
weights (``assets/vae/sd-vae-ft-mse/config.json``): its cost does not depend on its weights.

Also measured, for the choice of how the art losses get pixels (docs/origin-model.md):

- the latent step with the art losses off (what the approximation costs);
- decoding the predicted clean latents through the VAE decoder with gradients, at 512 px, for one
  picture (forward and backward), i.e. what "decode every N steps" would add per decoded sample;
- encoding one 512 px picture (what the tensor cache saves every epoch after the first).

    python bench/bench_origin_latent.py [--quick] [--batch-size N] [--repeats N] [--threads N]
                                        [--device cpu|cuda] [--skip-decode] [--json PATH]

Ends with ``RATIO origin_latent = x.xx (target <= 1.3)``: the latent step over the pixel step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402

NAME = "origin_latent"
TARGET = 1.3
LATENT_RES, PIXEL_RES = 512, 64


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/bench_origin_latent.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, small VAE, few repeats (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 4 (2 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 7, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--skip-decode", action="store_true",
                        help="leave out the decode-with-gradients measurement (slow on a CPU)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or (2 if args.quick else 4)
    args.repeats = args.repeats or (2 if args.quick else 7)
    return args


def build_vae(quick: bool):
    """SD's VAE layout with random weights (``--quick``: 2 levels and narrow, for smoke runs)."""
    import torch
    from diffusers import AutoencoderKL

    from engines.origin.model.latent import SINGLE_FILE_CONFIG

    torch.manual_seed(0)
    if quick:
        return AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                             up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                             layers_per_block=1)
    return AutoencoderKL.from_config(AutoencoderKL.load_config(str(SINGLE_FILE_CONFIG)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.quiet_libraries()
    import torch
    from accelerate import Accelerator

    from engines.origin.model.config import OriginConfig, tiny_config, with_latent_geometry
    from engines.origin.model.latent import LatentCodec, latents_to_rgb
    from engines.origin.model.network import OriginModel
    from engines.origin.model.schedule import training_scheduler
    from engines.origin.training.forward_backward import LossComputer, TrainingForward, draw_inputs
    from engines.origin.training.losses import ArtLosses

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    accelerator = Accelerator(cpu=not cuda)
    base = tiny_config(PIXEL_RES) if args.quick else OriginConfig()
    base = replace(base, model=replace(base.model, text_encoder=""))
    pixel_config = replace(base, model=replace(base.model, resolution=PIXEL_RES, space="pixel"))
    codec = LatentCodec(build_vae(args.quick).to(device), "SD VAE layout, random weights", "bench")
    latent_config = with_latent_geometry(
        replace(base, model=replace(base.model, resolution=LATENT_RES, space="latent")),
        codec.latent_channels, codec.factor)
    assert latent_config.model.sample_size == PIXEL_RES, latent_config.model.sample_size

    class Tokens:  # precomputed caption tokens: the text encoder is frozen and cached in training
        def encode(self, captions, dev):
            g = torch.Generator().manual_seed(len(captions))
            m = base.model
            return (torch.randn(len(captions), m.max_text_tokens, m.text_dim, generator=g).to(dev),
                    torch.ones(len(captions), m.max_text_tokens, dtype=torch.bool, device=dev))

    def make(config, to_rgb=None, art=True):
        torch.manual_seed(0)
        model = OriginModel(config.model).to(device).train()
        forward = TrainingForward(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
        loss_config = config if art else replace(config, loss=replace(
            config.loss, line_art=0.0, color=0.0, anatomy=0.0, perspective=0.0, color_harmony=0.0))
        scheduler = training_scheduler(config)
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
        computer = LossComputer(accelerator, forward, Tokens(), scheduler, ArtLosses().to(device), loss_config,
                                to_rgb=to_rgb)
        return model, optimizer, computer

    def batch(channels: int, size: int, seed: int) -> list[dict]:
        g = torch.Generator().manual_seed(seed)
        images = torch.randn(args.batch_size, channels, size, size, generator=g)
        return [{"image": images, "caption": [f"caption {i}" for i in range(args.batch_size)]}]

    def stepper(config, channels, to_rgb=None, art=True):
        model, optimizer, computer = make(config, to_rgb, art)
        window = batch(channels, config.model.sample_size, 0)
        count = [0]

        def step() -> float:
            count[0] += 1
            inputs = draw_inputs(window, seed=0, step=count[0], process_index=0, caption_dropout=0.1,
                                 num_timesteps=config.train.num_train_timesteps, device=device)
            optimizer.zero_grad(set_to_none=True)
            stats = computer.forward_backward(inputs, args.batch_size, seed=0, step=count[0])
            optimizer.step()
            return stats.total
        return step, model

    to_rgb = lambda z: latents_to_rgb(z, codec.rgb_map.to(device))  # noqa: E731
    pixel_step, pixel_model = stepper(pixel_config, 3)
    latent_step, latent_model = stepper(latent_config, codec.latent_channels, to_rgb)
    bare_step, _ = stepper(latent_config, codec.latent_channels, to_rgb, art=False)

    report = harness.Report(NAME, "a 512 px latent-space step vs a 64 px pixel-space step, same network", TARGET,
                            args)
    params = sum(p.numel() for p in latent_model.parameters())
    report.info = harness.environment(args, config="tiny" if args.quick else "default", batch=args.batch_size,
                                      origin_params=params,
                                      pixel_params=sum(p.numel() for p in pixel_model.parameters()))
    losses = [pixel_step(), latent_step(), bare_step()]  # warm-up
    pixel_times, latent_times, bare_times = [], [], []
    for i in range(args.repeats):
        order = ((pixel_step, pixel_times), (latent_step, latent_times), (bare_step, bare_times))
        for fn, times in (order if i % 2 == 0 else order[::-1]):
            seconds, loss = harness.timed(fn, cuda=cuda)
            times.append(seconds)
            losses.append(loss)
    report.check("all losses finite", all(v == v and abs(v) != float("inf") for v in losses))
    paired = statistics.median(latent / pixel for latent, pixel in zip(latent_times, pixel_times))
    report.metrics["paired_median_ratio"] = paired
    report.note(f"median of per-repeat ratios (latent / pixel, back to back): {paired:.2f}")
    measured = report.add(f"latent step {LATENT_RES}px ({PIXEL_RES}x{PIXEL_RES}x{codec.latent_channels} latents)",
                          latent_times, note="art losses + expert targets on the latent->RGB approximation")
    report.add(f"latent step {LATENT_RES}px, art losses off", bare_times, note="what the approximation costs")
    base_row = report.add(f"pixel step {PIXEL_RES}px", pixel_times, note="same network, 3 channels")

    # What the other ways of giving the art losses pixels would cost, and what the cache saves.
    g = torch.Generator().manual_seed(1)
    picture = (torch.rand(1, 3, LATENT_RES, LATENT_RES, generator=g) * 2 - 1).to(device)
    seconds, latents = harness.timed(lambda: codec.encode(picture), cuda=cuda)
    report.add(f"VAE encode, 1 picture {LATENT_RES}px", [seconds], note="once per image: the tensor cache keeps it")
    if not args.skip_decode:
        art = ArtLosses().to(device)
        z = latents.clone().requires_grad_(True)

        def decode_with_gradients() -> float:
            pixels = codec.vae.decode(codec.to_vae_latents(z)).sample
            terms = art(pixels, picture, torch.ones(1, device=device))
            total = sum(terms.values())
            total.backward()
            return float(total.detach())

        seconds, _ = harness.timed(decode_with_gradients, cuda=cuda)
        report.add(f"VAE decode + art losses + backward, 1 picture {LATENT_RES}px", [seconds],
                   note="the 'decode every N steps' option, per decoded picture")
        step = statistics.median(latent_times)
        report.metrics["decode_per_picture_over_latent_step"] = seconds / step
        report.note(f"decoding one picture with gradients costs {seconds / step:.1f} latent steps of batch "
                    f"{args.batch_size}; decoding the whole batch every 8th step would add "
                    f"{seconds * args.batch_size / 8 / step * 100:.0f} % to the average step")
    if cuda:
        report.metrics["peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
        report.note(f"peak VRAM: {report.metrics['peak_vram_gib']:.2f} GiB (all three models resident)")
    return report.finish(measured, base_row)


if __name__ == "__main__":
    start = time.perf_counter()
    code = harness.run(main)
    print(f"(took {time.perf_counter() - start:.0f} s)")
    sys.exit(code)
