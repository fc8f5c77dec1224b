"""Moving from Text-to-Manga to Live-Action on the same checkpoint, against a cold load of the Live-Action pipeline.

Measured: what Live-Action does before its first denoising step when Text-to-Manga already used the
checkpoint: ``ensure_models`` (models found, registered in the pool), the ControlNets and the checkpoint
activated, the ControlNet img2img pipeline derived. Two cases, each timed against a cold load:

- back and forth (the RATIO): the artist has used both tabs before, so the pool holds the checkpoint
  and the ControlNets; the switch loads nothing.
- first switch: the pool holds only Text-to-Manga's checkpoint; the switch loads the two ControlNets
  and nothing else (the checkpoint's UNet, VAE and text encoder are the pooled objects, checked).

Baseline: the same steps on an empty pool (the checkpoint, VAE, text encoder and both ControlNets
read from disk). Ready control maps are used, so no estimator is loaded in any case.

    python bench/bench_live_action_swap.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import build_pipeline, save_controlnet  # noqa: E402

NAME = "bench_live_action_swap"
TARGET = 0.05


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv)
    harness.quiet_libraries()
    from diffusers import StableDiffusionControlNetImg2ImgPipeline
    from diffusers.models.controlnets import MultiControlNetModel
    from PIL import Image

    from engines.live_action.photoreal import ensure_models
    from engines.live_action.request import LiveActionRequest, check
    from engines.models import ModelStore, derive_pipeline
    from engines.sd15.checkpoint import CheckpointRef, Sd15Models

    cuda = args.device == "cuda"
    runs = harness.repeats(args, full=5, quick=2)
    peak = harness.PeakVram(cuda)
    dtype = harness.studio_dtype(args)
    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        models = Path(tmp) / "data" / "models"

        def build() -> int:
            pipe = build_pipeline(args.size, seed=0)
            if dtype is not None:
                pipe.to(dtype=dtype)
            pipe.save_pretrained(models / "bench-sd15", safe_serialization=True)
            save_controlnet(pipe, models / "bench-depth", dtype=dtype, seed=1)
            save_controlnet(pipe, models / "bench-pose", dtype=dtype, seed=2)
            return harness.pipeline_bytes(pipe)

        size = harness.in_fresh_thread(build)
        drawing = Path(tmp) / "drawing.png"
        Image.new("RGB", (64, 64), (200, 60, 50)).save(drawing)
        store = ModelStore(models, offline=True)
        request = LiveActionRequest(image=drawing, base_model="bench-sd15", vae="", controlnet_depth="bench-depth",
                                    controlnet_pose="bench-pose", depth_map=drawing, pose_map=drawing, prompt="x",
                                    negative="", sampler="DDIM")
        plan = check(request, store)

        def fresh_hardware(index: int):
            return harness.make_hardware(args, Path(tmp) / f"data-{index}", device_budget=4 * size,
                                         host_budget=8 * size)

        def ready(hw) -> object:
            """Everything Live-Action does before its first step: models in the pool, activated, derived."""
            names = ensure_models(plan, hw, store)
            nets = [names["controlnet-depth"], names["controlnet-pose"]]
            with hw.use(nets[0]) as depth, hw.use(nets[1]) as pose, hw.use(names["base"]) as base:
                return derive_pipeline(StableDiffusionControlNetImg2ImgPipeline, base,
                                       controlnet=MultiControlNetModel([depth, pose]))

        def manga_used(hw):
            """Text-to-Manga has drawn with the checkpoint: it sits in the pool, activated."""
            name = Sd15Models(hw, store).ensure(CheckpointRef("bench-sd15"))
            with hw.use(name) as base:
                return base

        report = harness.Report(NAME, "Text-to-Manga -> Live-Action on the same checkpoint vs a cold load",
                                TARGET, args)
        colds, firsts, backs, peaks = [], [], [], []
        shared = True
        for i in range(runs):
            # cold: an empty pool
            hw = fresh_hardware(3 * i)
            with peak.phase() as p:
                seconds, pipe = harness.timed(lambda: ready(hw), cuda=cuda)
            colds.append(seconds)
            peaks.append(p["bytes"])
            del pipe  # the pool's references are the last ones, so close() really frees them
            hw.close()
            # first switch: only the checkpoint is pooled
            hw = fresh_hardware(3 * i + 1)
            base = manga_used(hw)
            seconds, pipe = harness.timed(lambda: ready(hw), cuda=cuda)
            firsts.append(seconds)
            shared = shared and all(getattr(pipe, c) is getattr(base, c) for c in ("unet", "vae", "text_encoder"))
            added = {n for n in hw.pool.names()} - {"sd15:bench-sd15"}
            shared = shared and added == {"controlnet:bench-depth", "controlnet:bench-pose"}
            # back and forth: Text-to-Manga again, then Live-Action again
            manga_used(hw)
            seconds, pipe = harness.timed(lambda: ready(hw), cuda=cuda)
            backs.append(seconds)
            shared = shared and pipe.unet is base.unet and not any("reloading" in e for e in hw.events)
            del pipe, base
            hw.close()

        report.info = harness.environment(args, None, size=args.size, pipeline_mib=round(size / 2**20, 1))
        back = report.add("switch back and forth (checkpoint and ControlNets pooled)", backs)
        report.add("first switch (loads the two ControlNets only)", firsts)
        cold = report.add("cold: checkpoint + two ControlNets from disk", colds, peak_vram=harness.max_known(peaks))
        ratio_first = statistics.median(firsts) / statistics.median(colds)
        report.metrics["first_switch_ratio"] = ratio_first
        report.note(f"First switch / cold: {ratio_first:.3f}x. The ControlNets are read from disk the first time "
                    "(each is about 40 % of the UNet: they copy its encoder), so the first switch costs their "
                    "share of the load and nothing else; afterwards both tabs find everything in the pool.")
        report.check("the UNet, VAE and text encoder are the pooled checkpoint's, and only the ControlNets were "
                     "added to the pool", shared)
        return report.finish(back, cold)


if __name__ == "__main__":
    sys.exit(harness.run(main))
