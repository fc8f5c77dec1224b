"""An Animation video through the engine, against raw diffusers on the same checkpoint, motion adapter and seed.

Measured: ``engines.animation.animate.make_animation``, text-to-video: the request checked, the pooled
checkpoint and motion adapter, the motion UNet built of their layers (no copy), a pipeline derived per job,
A1111's prompt conditioning, the denoise, the VAE decode in chunks through the HardwareManager, the
consistency score, and the MP4, frame 0 and the sidecar written. Baseline: ``AnimateDiffPipeline`` loaded
with ``from_pretrained`` (its UNet copied into a ``UNetMotionModel`` by diffusers), the same scheduler
settings, and the frames written as an MP4 with imageio-ffmpeg. The order alternates between repeats; the
engine's frame 0 must equal the raw run's, or it exits 1. Loading is outside both timings. 16 frames at
8 fps, 20 steps (2 with --quick); on a GPU the peak VRAM of each is the figure docs/PERFORMANCE.md keeps.

    python bench/bench_animation.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
        [--picture WxH] [--frames N]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import SPECS, build_pipeline, save_motion_adapter  # noqa: E402

NAME = "bench_animation"
TARGET = 1.05
PROMPT = "1girl, walking, wind in hair, city street"
SEED = 1234
FPS = 8


def _extra(parser) -> None:
    parser.add_argument("--picture", default=None, metavar="WxH",
                        help="frame size (default: the size's square, at least 64 px), e.g. 512x512")
    parser.add_argument("--frames", type=int, default=16)


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv, add_extra=_extra)
    cuda = args.device == "cuda"
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # bit-identical repeats
    harness.quiet_libraries()
    import tempfile

    import imageio_ffmpeg
    import numpy as np
    import torch
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter
    from PIL import Image

    from engines.animation.animate import MOTION_SCHEDULE, make_animation
    from engines.animation.request import AnimationRequest
    from engines.models import ModelStore

    if cuda:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    runs = harness.repeats(args, full=3, quick=2)
    n_steps = 2 if args.quick else 20
    frames = args.frames
    px = max(64, SPECS[args.size].image_px)
    width, height = (int(v) for v in args.picture.lower().split("x")) if args.picture else (px, px)
    peak = harness.PeakVram(cuda)
    dtype = harness.studio_dtype(args)

    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        # 1. a random-weight checkpoint and motion adapter saved as diffusers folders in the models folder
        data = Path(tmp) / "data"
        models = data / "models"

        def build() -> None:
            pipe = build_pipeline(args.size, seed=0)
            pipe.save_pretrained(models / "bench-sd15")
            save_motion_adapter(pipe, models / "bench-motion", seed=1)

        harness.in_fresh_thread(build)
        device = "cuda" if cuda else "cpu"

        def load_raw():
            adapter = MotionAdapter.from_pretrained(str(models / "bench-motion"), torch_dtype=dtype)
            pipe = AnimateDiffPipeline.from_pretrained(str(models / "bench-sd15"), motion_adapter=adapter,
                                                       torch_dtype=dtype)
            pipe.scheduler = DDIMScheduler.from_config({**pipe.scheduler.config, **MOTION_SCHEDULE})
            pipe.set_progress_bar_config(disable=True)
            return pipe.to(device)

        raw_pipe = harness.in_fresh_thread(load_raw)
        size = harness.pipeline_bytes(raw_pipe)
        hw = harness.make_hardware(args, data, device_budget=2 * size, host_budget=4 * size)
        store = ModelStore(models, offline=True)
        request = AnimationRequest(
            output=Path(tmp) / "out" / "walk.mp4", prompt=PROMPT, negative="", base_model="bench-sd15", vae="",
            motion_adapter="bench-motion", frames=frames, fps=FPS, steps=n_steps, cfg=7.5, sampler="DDIM",
            seed=SEED, width=width, height=height, clip_skip=1)

        # 2. the two paths, each in a fresh thread as jobs run
        def raw_call():
            video = raw_pipe(PROMPT, negative_prompt="", num_frames=frames, height=height, width=width,
                             num_inference_steps=n_steps, guidance_scale=7.5,
                             generator=torch.Generator("cpu").manual_seed(SEED)).frames[0]
            writer = imageio_ffmpeg.write_frames(str(Path(tmp) / "raw.mp4"), (width, height), fps=FPS,
                                                 codec="libx264", pix_fmt_out="yuv420p", macro_block_size=8)
            writer.send(None)
            for frame in video:
                writer.send(np.ascontiguousarray(np.asarray(frame.convert("RGB"))))
            writer.close()
            return np.asarray(video[0].convert("RGB"))

        def engine_call():
            result = make_animation(request, hw, store, outputs=Path(tmp) / "out")
            return np.asarray(Image.open(result.first_frame).convert("RGB"))

        timing = harness.engine_vs_raw(raw_call, engine_call, runs, cuda=cuda, peak=peak)

        report = harness.Report(NAME, "an Animation video through the engine vs raw diffusers", TARGET, args)
        report.info = harness.environment(args, hw, size=args.size, pipeline_mib=round(size / 2**20, 1),
                                          picture=f"{width}x{height}", frames=frames, steps=n_steps)
        engine_row, raw_row = timing.rows(report, "raw diffusers: AnimateDiffPipeline + MP4",
                                          "engine: make_animation() + MP4, frame 0, sidecar, score")
        report.note("The engine also checks the request, scores the frames' consistency and writes frame 0 and the "
                    "sidecar JSON; the raw path holds its own copy of the UNet (from_unet2d), the engine none.")
        report.check(f"identical frame 0 in all {len(timing.same)} engine runs", all(timing.same))
        hw.close()
        return report.finish(engine_row, raw_row)


if __name__ == "__main__":
    sys.exit(harness.run(main))
