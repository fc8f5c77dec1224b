"""A picture through the SD 1.5 engine, against raw diffusers on the same checkpoint, prompt and seed.

Measured: ``engines.sd15.txt2img.generate`` from a diffusers folder: the request checked, the
checkpoint taken from the pool, A1111's prompt conditioning (chunks, weights, clip skip 1), the
denoise with a fresh scheduler, the VAE decode through the HardwareManager, the PNG written with
A1111's parameters, Inkframe's JSON and the model hash. Baseline: ``pipe(prompt, ...)`` on the
same folder loaded with ``from_pretrained``, and ``image.save`` of its PNG. The order alternates
between repeats; the saved pixels of every engine run must equal the raw run's, or it exits 1.
Loading is outside both timings (the first engine call loads, and is not timed). Both run 20 steps,
as the issue's GPU benchmark does (4 with --quick).

    python bench/bench_sd15_generate.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
        [--picture WxH]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import SPECS, build_pipeline  # noqa: E402

NAME = "bench_sd15_generate"
TARGET = 1.02
PROMPT = "ink manga, a girl on a rooftop at night, screentone"
SEED = 1234


def _sampler_for(scheduler) -> str:
    """The studio's name for the checkpoint's own scheduler, so both paths run the same solver."""
    from engines.sd15.samplers import SAMPLERS

    return next(name for name, (cls, overrides) in SAMPLERS.items()
                if cls == type(scheduler).__name__ and not overrides)


def _extra(parser) -> None:
    parser.add_argument("--picture", default=None, metavar="WxH",
                        help="picture size (default: the size's square, at least 64 px), e.g. 512x768")


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv, add_extra=_extra)
    cuda = args.device == "cuda"
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # bit-identical repeats (see engine_overhead)
    harness.quiet_libraries()
    import tempfile

    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from engines.models import ModelStore
    from engines.sd15.request import Sd15Request
    from engines.sd15.txt2img import generate

    if cuda:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    runs = harness.repeats(args, full=7, quick=2)
    # A job's own length: the engine's cost is per job (about 10 ms on a CPU: the checks, the pool, the
    # A1111 tokenizing, the PNG's chunks), so it is measured against a real job's 20 steps, not 2.
    n_steps = 4 if args.quick else 20
    px = max(64, SPECS[args.size].image_px)  # the studio's smallest picture side
    width, height = (int(v) for v in args.picture.lower().split("x")) if args.picture else (px, px)
    peak = harness.PeakVram(cuda)

    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        # 1. one random-weight checkpoint saved as a diffusers folder in the models folder
        data = Path(tmp) / "data"
        folder = data / "models" / "bench-sd15"
        harness.in_fresh_thread(lambda: build_pipeline(args.size, seed=0).save_pretrained(folder))
        dtype = harness.studio_dtype(args)

        def load_raw():
            pipe = StableDiffusionPipeline.from_pretrained(str(folder), dtype=dtype, safety_checker=None,
                                                           requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            return pipe.to("cuda" if cuda else "cpu")

        raw_pipe = harness.in_fresh_thread(load_raw)
        size = harness.pipeline_bytes(raw_pipe)
        hw = harness.make_hardware(args, data, device_budget=2 * size, host_budget=4 * size)
        store = ModelStore(data / "models", offline=True)
        request = Sd15Request(model="bench-sd15", prompt=PROMPT, sampler=_sampler_for(raw_pipe.scheduler),
                              steps=n_steps, cfg=7.5, width=width, height=height, seed=SEED, clip_skip=1,
                              output_dir=Path(tmp) / "out")

        # 2. the two paths, each in a fresh thread as jobs run
        def raw_call():
            image = raw_pipe(PROMPT, num_inference_steps=n_steps, guidance_scale=7.5, height=height, width=width,
                             generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
            image.save(Path(tmp) / "raw.png")
            return np.asarray(image)

        def engine_call():
            picture = generate(request, hw, store, outputs=Path(tmp) / "out").pictures[0]
            return np.asarray(Image.open(picture.path).convert("RGB"))

        timing = harness.engine_vs_raw(raw_call, engine_call, runs, cuda=cuda, peak=peak)

        report = harness.Report(NAME, "an SD 1.5 picture through engines.sd15 vs raw diffusers", TARGET, args)
        report.info = harness.environment(args, hw, size=args.size, pipeline_mib=round(size / 2**20, 1),
                                          picture=f"{width}x{height}", steps=n_steps, sampler=request.sampler)
        engine_row, raw_row = timing.rows(report, "raw diffusers: pipe(prompt) + PNG",
                                          "engine: sd15 generate() + PNG with parameters")
        report.note("The engine also checks the request, hashes the model (cached), fits no LoRA and writes "
                    "two PNG text chunks; the raw path does none of that.")
        report.check(f"identical pixels in all {len(timing.same)} engine runs", all(timing.same))
        hw.close()
        return report.finish(engine_row, raw_row)


if __name__ == "__main__":
    sys.exit(harness.run(main))
