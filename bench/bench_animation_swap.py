"""Moving from Live-Action (or Text-to-Manga) to Animation on the same checkpoint, against a cold load of the
Animation pipeline.

Measured: what Animation does before its first denoising step when another tab already used the checkpoint:
``ensure_models`` (models found, registered in the pool), the motion adapter and the checkpoint activated,
the motion UNet built from their layers and the AnimateDiff pipeline derived. Two cases, each timed
against a cold load:

- back and forth (the RATIO): the artist has animated before, so the pool holds the checkpoint and the
  motion adapter; the switch loads nothing and builds the motion UNet on the meta device (no copy).
- first switch: the pool holds only the checkpoint; the switch reads the motion adapter and nothing else.

Baseline, "cold": the same steps on an empty pool (checkpoint, VAE, text encoder and adapter from disk).
Also shown, for scale: diffusers' own ``UNetMotionModel.from_unet2d`` on the pooled checkpoint, which copies
the UNet's weights into a new model (what ``AnimateDiffPipeline.from_pipe`` does).

    python bench/bench_animation_swap.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import build_pipeline, save_motion_adapter  # noqa: E402

NAME = "bench_animation_swap"
TARGET = 0.05


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv)
    harness.quiet_libraries()
    from diffusers import AnimateDiffPipeline, UNetMotionModel

    from engines.animation.animate import ensure_models
    from engines.animation.motion import motion_unet
    from engines.animation.request import AnimationRequest, check
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
            save_motion_adapter(pipe, models / "bench-motion", dtype=dtype, seed=1)
            return harness.pipeline_bytes(pipe)

        size = harness.in_fresh_thread(build)
        store = ModelStore(models, offline=True)
        plan = check(AnimationRequest(base_model="bench-sd15", vae="", motion_adapter="bench-motion", prompt="x",
                                      negative=""), store)

        def fresh_hardware(index: int):
            return harness.make_hardware(args, Path(tmp) / f"data-{index}", device_budget=4 * size,
                                         host_budget=8 * size)

        def ready(hw) -> object:
            """Everything Animation does before its first step: models in the pool, activated, derived."""
            names = ensure_models(plan, hw, store)
            with hw.use(names["motion"]) as adapter, hw.use(names["base"]) as base:
                return derive_pipeline(AnimateDiffPipeline, base, unet=motion_unet(base.unet, adapter),
                                       motion_adapter=adapter)

        def other_tab_used(hw):
            """Live-Action or Text-to-Manga has drawn with the checkpoint: it sits in the pool, activated."""
            name = Sd15Models(hw, store).ensure(CheckpointRef("bench-sd15"))
            with hw.use(name) as base:
                return base

        report = harness.Report(NAME, "Live-Action -> Animation on the same checkpoint vs a cold load", TARGET, args)
        colds, firsts, backs, copies, peaks = [], [], [], [], []
        shared = True
        for i in range(runs):
            # cold: an empty pool
            hw = fresh_hardware(2 * i)
            with peak.phase() as p:
                seconds, pipe = harness.timed(lambda: ready(hw), cuda=cuda)
            colds.append(seconds)
            peaks.append(p["bytes"])
            del pipe
            hw.close()
            # first switch: only the checkpoint is pooled
            hw = fresh_hardware(2 * i + 1)
            base = other_tab_used(hw)
            seconds, pipe = harness.timed(lambda: ready(hw), cuda=cuda)
            firsts.append(seconds)
            pointers = {t.data_ptr() for t in base.unet.parameters()}
            with hw.use("motion:bench-motion") as adapter:
                pointers |= {t.data_ptr() for t in adapter.parameters()}
                seconds_copy, copied = harness.timed(lambda: UNetMotionModel.from_unet2d(base.unet, adapter),
                                                     cuda=cuda)
            copies.append(seconds_copy)
            del copied
            shared = shared and all(t.data_ptr() in pointers for t in pipe.unet.parameters())
            shared = shared and pipe.vae is base.vae and pipe.text_encoder is base.text_encoder
            shared = shared and set(hw.pool.names()) == {"sd15:bench-sd15", "motion:bench-motion"}
            # back and forth: the other tab again, then Animation again
            other_tab_used(hw)
            seconds, pipe = harness.timed(lambda: ready(hw), cuda=cuda)
            backs.append(seconds)
            shared = shared and not any("reloading" in e for e in hw.events)
            pipe = base = None  # the pool's references are the last ones, so close() really frees them
            hw.close()

        report.info = harness.environment(args, None, size=args.size, pipeline_mib=round(size / 2**20, 1))
        back = report.add("switch back and forth (checkpoint and motion adapter pooled)", backs)
        report.add("first switch (reads the motion adapter only)", firsts)
        report.add("for scale: diffusers' from_unet2d copy of the pooled UNet", copies)
        cold = report.add("cold: checkpoint + motion adapter from disk", colds, peak_vram=harness.max_known(peaks))
        ratio_first = statistics.median(firsts) / statistics.median(colds)
        report.metrics["first_switch_ratio"] = ratio_first
        report.metrics["from_unet2d_copy_ratio"] = statistics.median(copies) / statistics.median(colds)
        report.note(f"First switch / cold: {ratio_first:.3f}x: the motion adapter is read from disk the first time "
                    "(v1-5-3 is about a third of the checkpoint's weights); afterwards every switch finds it pooled.")
        report.check("every weight of the motion UNet is the pooled UNet's or the pooled adapter's, the VAE and text "
                     "encoder are the checkpoint's, and only the adapter was added to the pool", shared)
        return report.finish(back, cold)


if __name__ == "__main__":
    sys.exit(harness.run(main))
