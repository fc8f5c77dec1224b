"""A Live-Action picture through the engine, against raw diffusers on the same checkpoint, ControlNets and seed.

Measured: ``engines.live_action.photoreal.make_live_action`` with ready depth and pose maps (no
estimator: raw diffusers has none) and no colour transfer: the request and the picture checked,
the picture read and fitted, the background read, the pooled checkpoint and two pooled ControlNets,
a pipeline derived per job, A1111's prompt conditioning, the denoise, the VAE decode through the
HardwareManager, the realism report, and the PNG, the JSON report and the maps written. Baseline:
``StableDiffusionControlNetImg2ImgPipeline(prompt, image, control_image)`` on the same components
loaded with ``from_pretrained``, and ``image.save``. The order alternates between repeats; the
saved pixels of every engine run must equal the raw run's, or it exits 1. Loading is outside both
timings (the first engine call loads, and is not timed). 30 steps at strength 0.65 (19 steps
taken), as the studio's defaults; 4 with --quick.

    python bench/bench_live_action.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
        [--picture WxH]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import SPECS, build_pipeline, save_controlnet  # noqa: E402

NAME = "bench_live_action"
TARGET = 1.05
PROMPT = "RAW photo, a young woman in a red jacket, natural light"
SEED = 1234
STRENGTH = 0.65
SCALES = (0.75, 0.4)


def _extra(parser) -> None:
    parser.add_argument("--picture", default=None, metavar="WxH",
                        help="picture size (default: the size's square, at least 64 px), e.g. 512x768")


def _pictures(folder: Path, width: int, height: int) -> tuple[Path, Path, Path]:
    """A drawn figure on a scenic gradient, a depth ramp and a pose-like map, at the working size."""
    import numpy as np
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:height, 0:width]
    scene = np.stack([40 + 180 * x / width, 200 - 110 * y / height, np.full_like(x, 150.0)], -1).astype(np.uint8)
    picture = Image.fromarray(scene)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((width * 0.3, height * 0.35, width * 0.7, height * 0.9), fill=(200, 60, 50))
    draw.ellipse((width * 0.35, height * 0.08, width * 0.65, height * 0.35), fill=(240, 200, 170))
    depth = Image.fromarray((255 * y / height).astype(np.uint8)).convert("RGB")
    pose = Image.new("RGB", (width, height))
    ImageDraw.Draw(pose).line((width // 2, height // 5, width // 2, height * 4 // 5), fill=(255, 0, 85), width=6)
    paths = folder / "drawing.png", folder / "depth.png", folder / "pose.png"
    for image, path in zip((picture, depth, pose), paths):
        image.save(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv, add_extra=_extra)
    cuda = args.device == "cuda"
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # bit-identical repeats
    harness.quiet_libraries()
    import tempfile

    import numpy as np
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline
    from PIL import Image

    from engines.live_action.photoreal import make_live_action
    from engines.live_action.request import LiveActionRequest
    from engines.models import ModelStore

    if cuda:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    runs = harness.repeats(args, full=5, quick=2)
    n_steps = 4 if args.quick else 30
    px = max(64, SPECS[args.size].image_px)
    width, height = (int(v) for v in args.picture.lower().split("x")) if args.picture else (px, px)
    peak = harness.PeakVram(cuda)
    dtype = harness.studio_dtype(args)

    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        # 1. a random-weight checkpoint and two ControlNets saved as diffusers folders in the models folder
        data = Path(tmp) / "data"
        models = data / "models"

        def build() -> None:
            pipe = build_pipeline(args.size, seed=0)
            pipe.save_pretrained(models / "bench-sd15")
            save_controlnet(pipe, models / "bench-depth", seed=1)
            save_controlnet(pipe, models / "bench-pose", seed=2)

        harness.in_fresh_thread(build)
        drawing, depth, pose = _pictures(Path(tmp), width, height)
        device = "cuda" if cuda else "cpu"

        def load_raw():
            nets = [ControlNetModel.from_pretrained(str(models / n), torch_dtype=dtype) for n in ("bench-depth",
                                                                                                 "bench-pose")]
            pipe = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
                str(models / "bench-sd15"), controlnet=nets, dtype=dtype, safety_checker=None,
                requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            return pipe.to(device)

        raw_pipe = harness.in_fresh_thread(load_raw)
        size = harness.pipeline_bytes(raw_pipe)
        hw = harness.make_hardware(args, data, device_budget=2 * size, host_budget=4 * size)
        store = ModelStore(models, offline=True)
        request = LiveActionRequest(
            image=drawing, output=Path(tmp) / "out" / "real.png", prompt=PROMPT, negative="", base_model="bench-sd15",
            vae="", controlnet_depth="bench-depth", controlnet_pose="bench-pose", depth_map=depth, pose_map=pose,
            strength=STRENGTH, steps=n_steps, cfg=7.0, sampler="DDIM", seed=SEED, width=width, height=height,
            depth_scale=SCALES[0], pose_scale=SCALES[1], colour_transfer="off")
        control = [Image.open(depth).convert("RGB"), Image.open(pose).convert("RGB")]
        source = Image.open(drawing).convert("RGB")

        # 2. the two paths, each in a fresh thread as jobs run
        def raw_call():
            image = raw_pipe(PROMPT, negative_prompt="", image=source, control_image=control, height=height,
                             width=width, strength=STRENGTH, num_inference_steps=n_steps, guidance_scale=7.0,
                             controlnet_conditioning_scale=list(SCALES),
                             generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
            image.save(Path(tmp) / "raw.png")
            return np.asarray(image)

        def engine_call():
            result = make_live_action(request, hw, store, outputs=Path(tmp) / "out")
            return np.asarray(Image.open(result.path).convert("RGB"))

        timing = harness.engine_vs_raw(raw_call, engine_call, runs, cuda=cuda, peak=peak)

        report = harness.Report(NAME, "a Live-Action picture through the engine vs raw diffusers", TARGET, args)
        report.info = harness.environment(args, hw, size=args.size, pipeline_mib=round(size / 2**20, 1),
                                          picture=f"{width}x{height}", steps=n_steps, strength=STRENGTH)
        engine_row, raw_row = timing.rows(report, "raw diffusers: ControlNet img2img + PNG",
                                          "engine: make_live_action() + PNG, report, maps")
        report.note("The engine also reads and checks the picture, analyses the background, computes the realism "
                    "report and writes the JSON report and both maps; the raw path does none of that.")
        report.check(f"identical pixels in all {len(timing.same)} engine runs", all(timing.same))
        hw.close()
        return report.finish(engine_row, raw_row)


if __name__ == "__main__":
    sys.exit(harness.run(main))
