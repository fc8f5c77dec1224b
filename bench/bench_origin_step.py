"""An Origin training step against a same-size plain diffusers UNet step: the cost of MoE, GNN, art losses.

Measured: the Origin step as the trainer runs it: forward through the conditioning path (text,
reference, canvas, router, 14 experts run twice, GNN, fusion) and the pixel UNet, the Min-SNR
diffusion loss, the predicted clean image and its five art losses, the 14 expert auxiliary
losses, backward, and an AdamW step. Baseline: a ``UNet2DConditionModel`` with the same block
layout (cross-attention at the same levels, same depth) and widths tuned until its parameter
count is within 10 % of the whole Origin model's, doing a standard noise-prediction step (MSE,
backward, AdamW) on the same images, timesteps and caption tokens. Caption tokens are
precomputed for both: the text encoder is frozen and its output cached in training.

A third row runs the Origin step with the diffusion loss only, to show what the art and
auxiliary losses cost on their own. The steps alternate within each repeat and the medians are
compared. Also reported: Origin samples/s at 64 and 128 px.

On a shared or busy CPU, pass ``--threads 1``: two OpenMP threads competing with other
processes for two cores ran the same step several times slower (see bench/README.md).

    python bench/bench_origin_step.py [--quick] [--config tiny|default] [--batch-size N]
                                      [--repeats N] [--threads N] [--device cpu|cuda] [--precision fp32|bf16]
                                      [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402

NAME = "origin_step"
TARGET = 1.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/bench_origin_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config and few repeats (smoke runs)")
    parser.add_argument("--config", choices=("tiny", "default"), default=None,
                        help="tiny_config() or the default ModelConfig (default; tiny with --quick)")
    parser.add_argument("--resolution", type=int, default=64,
                        help="pixels of the ratio measurement (default 64)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 4 (2 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed repeats (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 on a busy shared CPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: forward and losses under CUDA autocast, as the trainer's mixed precision "
                             "runs on Ampere and newer (weights and optimizer stay fp32)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    if args.precision != "fp32" and args.device != "cuda":
        parser.error("--precision bf16 is for --device cuda (the trainer runs fp32 on a CPU)")
    args.config = args.config or ("tiny" if args.quick else "default")
    args.batch_size = args.batch_size or (2 if args.quick else 4)
    args.repeats = args.repeats or (3 if args.quick else 7)
    return args


def origin_config(args: argparse.Namespace):
    from engines.origin.model.config import OriginConfig, tiny_config

    config = tiny_config(args.resolution) if args.config == "tiny" else OriginConfig()
    return replace(config, model=replace(config.model, resolution=args.resolution))


def matched_baseline_kwargs(model_config, target_params: int) -> tuple[dict, int]:
    """UNet2DConditionModel settings with the Origin UNet's layout and the width whose size is closest."""
    import torch
    from diffusers import UNet2DConditionModel

    levels = range(len(model_config.channel_mult))
    attn = set(model_config.attention_levels)
    base = dict(
        sample_size=model_config.resolution, in_channels=3, out_channels=3,
        layers_per_block=model_config.num_res_blocks,
        down_block_types=tuple("CrossAttnDownBlock2D" if i in attn else "DownBlock2D" for i in levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(levels)),
        cross_attention_dim=model_config.text_dim,
        attention_head_dim=model_config.attention_heads,  # diffusers' legacy name for the number of heads
        norm_num_groups=2,  # any even width, so the search can land within 10 %
    )
    best = None
    step = 2
    for width in range(step, model_config.base_channels * 4 + step, step):
        kwargs = dict(base, block_out_channels=tuple(width * m for m in model_config.channel_mult))
        with torch.device("meta"):  # counting parameters needs no memory
            count = sum(p.numel() for p in UNet2DConditionModel(**kwargs).parameters())
        if best is None or abs(count - target_params) < abs(best[1] - target_params):
            best = (kwargs, count)
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.quiet_libraries()
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from engines.origin.training.losses import (ArtLosses, add_noise_target, art_loss_weights, diffusion_loss,
                                       predicted_clean)
    from engines.origin.model.network import OriginModel

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    config = origin_config(args)
    mc, lc = config.model, config.loss
    scheduler = DDPMScheduler(num_train_timesteps=config.train.num_train_timesteps,
                              prediction_type=mc.prediction_type)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)

    # 1. the two models, same parameter count
    torch.manual_seed(0)
    origin = OriginModel(mc).to(device).train()
    counts = origin.parameter_counts()
    baseline_kwargs, baseline_params = matched_baseline_kwargs(mc, counts["total"])
    baseline = UNet2DConditionModel(**baseline_kwargs).to(device).train()
    art = ArtLosses()
    origin_opt = torch.optim.AdamW(origin.parameters(), lr=config.train.learning_rate)
    baseline_opt = torch.optim.AdamW(baseline.parameters(), lr=config.train.learning_rate)

    # 2. one batch of inputs per resolution: images, noise, timesteps, precomputed caption tokens
    def batch(px: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        b = args.batch_size
        clean = (torch.rand(b, 3, px, px, generator=g) * 2 - 1).to(device)
        noise = torch.randn(b, 3, px, px, generator=g).to(device)
        timesteps = torch.randint(0, config.train.num_train_timesteps, (b,), generator=g).to(device)
        tokens = torch.randn(b, mc.max_text_tokens, mc.text_dim, generator=g).to(device)
        mask = torch.ones(b, mc.max_text_tokens, dtype=torch.bool, device=device)
        return dict(clean=clean, noise=noise, timesteps=timesteps, tokens=tokens, mask=mask,
                    x_t=scheduler.add_noise(clean, noise, timesteps))

    def mixed():
        return torch.autocast("cuda", dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()

    def origin_step(d: dict) -> float:
        with mixed():  # autocast covers the forward and the losses; backward runs outside it
            out = origin(d["x_t"], d["timesteps"], d["tokens"], d["mask"])
            target = add_noise_target(scheduler, d["clean"], d["noise"], d["timesteps"], mc.prediction_type)
            loss = diffusion_loss(out.sample, target, d["timesteps"], scheduler, lc.min_snr_gamma)
            pred = predicted_clean(scheduler, d["x_t"], out.sample, d["timesteps"], mc.prediction_type)
            arts = art(pred, d["clean"], art_loss_weights(scheduler, d["timesteps"]))
            aux = origin.expert_aux_losses(out, d["clean"])
            total = (loss + sum(getattr(lc, name) * value for name, value in arts.items())
                     + lc.expert_aux * sum(aux.values()))
        origin_opt.zero_grad(set_to_none=True)
        total.backward()
        origin_opt.step()
        return total.item()

    def origin_plain_step(d: dict) -> float:
        """The same model with the diffusion loss only: what the art and auxiliary losses add."""
        with mixed():
            out = origin(d["x_t"], d["timesteps"], d["tokens"], d["mask"])
            target = add_noise_target(scheduler, d["clean"], d["noise"], d["timesteps"], mc.prediction_type)
            loss = diffusion_loss(out.sample, target, d["timesteps"], scheduler, lc.min_snr_gamma)
        origin_opt.zero_grad(set_to_none=True)
        loss.backward()
        origin_opt.step()
        return loss.item()

    def baseline_step(d: dict) -> float:
        with mixed():
            pred = baseline(d["x_t"], d["timesteps"], encoder_hidden_states=d["tokens"]).sample
            loss = F.mse_loss(pred.float(), d["noise"])
        baseline_opt.zero_grad(set_to_none=True)
        loss.backward()
        baseline_opt.step()
        return loss.item()

    def time_step(fn, d) -> tuple[float, float]:
        return harness.timed(lambda: fn(d), cuda=cuda)

    report = harness.Report(NAME, "Origin training step vs a same-size diffusers UNet step", TARGET, args)
    widths = "/".join(map(str, baseline_kwargs["block_out_channels"]))
    report.info = harness.environment(args, config=args.config, batch=args.batch_size, precision=args.precision,
                                      origin_params=counts["total"], baseline_params=baseline_params,
                                      baseline_widths=widths)
    report.metrics.update({f"origin_params_{k}": v for k, v in counts.items()})
    report.metrics["baseline_params"] = baseline_params
    report.check("parameter counts within 10 %", abs(baseline_params / counts["total"] - 1) <= 0.10)

    # 3. the ratio at the measured resolution: warm up, then alternate
    data = batch(args.resolution, 0)
    losses = [origin_step(data), baseline_step(data)]  # warm-up (allocator, oneDNN kernels)
    origin_times, plain_times, baseline_times = [], [], []
    for i in range(args.repeats):
        order = ((origin_step, origin_times), (origin_plain_step, plain_times),
                 (baseline_step, baseline_times))
        for fn, times in (order if i % 2 == 0 else order[::-1]):
            seconds, loss = time_step(fn, data)
            times.append(seconds)
            losses.append(loss)
    # Each repeat times the steps back to back, so the ratio within a repeat shares its load;
    # on a busy shared machine the median of those ratios drifts less than the ratio of medians.
    paired = statistics.median(o / b for o, b in zip(origin_times, baseline_times))
    report.metrics["paired_median_ratio"] = paired
    report.note(f"median of per-repeat ratios (origin / baseline, measured back to back): {paired:.2f}")
    report.check("all losses finite", all(map(lambda v: v == v and abs(v) != float("inf"), losses)))
    measured = report.add(f"origin step {args.resolution}px", origin_times,
                          note=f"{counts['total'] / 1e6:.2f} M params, art + aux losses")
    report.add(f"origin step {args.resolution}px, diffusion loss only", plain_times,
               note="without art and auxiliary losses")
    base_row = report.add(f"diffusers UNet step {args.resolution}px", baseline_times,
                          note=f"{baseline_params / 1e6:.2f} M params, MSE")

    # 4. Origin throughput at 64 and 128 px
    for px in (64, 128):
        if px == args.resolution:
            times = origin_times
        else:
            d = batch(px, 1)
            origin_step(d)
            times = [time_step(origin_step, d)[0] for _ in range(max(2, args.repeats // 2))]
            report.add(f"origin step {px}px", times)
        rate = args.batch_size / statistics.median(times)
        report.metrics[f"origin_samples_per_s_{px}px"] = rate
        report.note(f"Origin training throughput at {px} px: {rate:.2f} samples/s (batch {args.batch_size})")
    report.note("parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in counts.items()))
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
        report.metrics["peak_vram_gib"] = peak
        report.note(f"Peak VRAM of the whole run ({args.precision}, batch {args.batch_size}, both models and their "
                    f"AdamW states resident): {peak:.2f} GiB")
    return report.finish(measured, base_row)


if __name__ == "__main__":
    start = time.perf_counter()
    code = harness.run(main)
    print(f"(took {time.perf_counter() - start:.0f} s)")
    sys.exit(code)
