"""Switching between two pipelines that share their components, against a cold load of the second.

A ``StableDiffusionPipeline`` and ``StableDiffusionImg2ImgPipeline.from_pipe(base)`` are both
registered in the HardwareManager's pool; they are the same UNet, VAE and text encoder, counted
once. Measured: one switch, ``with hw.use(other)``. Baseline: loading the img2img pipeline from
disk with ``ModelStore.load_pipeline`` plus ``hw.register``, what a studio without ``from_pipe``
would do. Also reported: building the shared pipeline the first time (``from_pipe`` + register).

    python bench/bench_from_pipe.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import save_pipeline  # noqa: E402

NAME = "bench_from_pipe"
TARGET = 0.05


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv, harness.add_disk_arguments)
    harness.quiet_libraries()
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    from engines.models import ModelStore, derive_pipeline

    cuda = args.device == "cuda"
    runs = harness.repeats(args, full=7, quick=3)
    peak = harness.PeakVram(cuda)
    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        # 1. the base pipeline on disk and in the pool
        dtype = harness.studio_dtype(args)
        folder = save_pipeline(args.size, Path(tmp) / "model", dtype=dtype)
        store = ModelStore(Path(tmp) / "models", offline=True)

        def load(cls):
            return lambda: store.load_pipeline(str(folder), cls, torch_dtype=dtype)

        base = load(StableDiffusionPipeline)()
        size = harness.pipeline_bytes(base)
        # Room for the base and a separately loaded img2img copy, so the baseline pays for its
        # load, not for an eviction the shared pipeline never needs.
        hw = harness.make_hardware(args, Path(tmp) / "data", device_budget=3 * size, host_budget=4 * size)
        hw.register("txt2img", base, loader=load(StableDiffusionPipeline))
        harness.vram_line(hw, "txt2img registered")
        report = harness.Report(NAME, "switch between from_pipe-shared pipelines vs cold load", TARGET, args)

        # 2. the shared pipeline, built from the base's components (timed: the first switch)
        def share():
            return hw.register("img2img", derive_pipeline(StableDiffusionImg2ImgPipeline, base))

        creates = []
        for _ in range(runs):
            hw.pool.forget("img2img")  # untimed: the unload runs a garbage collection
            seconds, img2img = harness.timed(share, cuda=cuda)
            creates.append(seconds)
        shared = all(getattr(img2img, k) is v for k, v in base.components.items() if v is not None)
        report.check("img2img uses the very same component objects as txt2img", shared)
        report.check("shared components are counted once in the device budget", hw.pool.device_bytes() == size)
        del img2img
        harness.vram_line(hw, "img2img shared through from_pipe")

        # 3. switching back and forth, interleaved with cold loads of the second pipeline
        def switch(name: str) -> None:
            with hw.use(name):
                pass

        switch("img2img")  # untimed warm-up
        switch("txt2img")
        switches, colds, switch_peak, cold_peak = [], [], [], []
        cold_device_bytes = 0
        for i in range(runs):
            for name in ("img2img", "txt2img"):
                with peak.phase() as p:
                    seconds, _ = harness.timed(lambda: switch(name), cuda=cuda)
                switches.append(seconds)
                switch_peak.append(p["bytes"])

            if args.drop_page_cache:
                harness.drop_page_cache(folder)
            harness.vram_line(hw, f"before cold img2img {i + 1}")
            with peak.phase() as p:
                seconds, cold_pipe = harness.timed(
                    lambda: _cold_register(hw, load(StableDiffusionImg2ImgPipeline)), cuda=cuda)
            colds.append(seconds)
            cold_peak.append(p["bytes"])
            del cold_pipe
            harness.vram_line(hw, f"cold img2img {i + 1} registered")
            cold_device_bytes = hw.pool.device_bytes()
            hw.unload("img2img-cold")  # untimed
            harness.vram_line(hw, f"cold img2img {i + 1} unloaded")
            if hw.pool.tier_of("txt2img") != "device":
                switch("txt2img")
        report.check("no switch reloaded from disk", not any("reloading" in e for e in hw.events))

        report.info = harness.environment(args, hw, size=args.size, pipeline_mib=round(size / 2**20, 1))
        switch_row = report.add("switch txt2img <-> img2img: hw.use(name)", switches,
                                peak_vram=harness.max_known(switch_peak), note="components shared")
        report.add("first switch: from_pipe(base) + register", creates, note="no weights read or copied")
        cache = "page cache dropped" if args.drop_page_cache else "files in the page cache"
        cold_row = report.add("cold: load img2img from disk + register", colds,
                              peak_vram=harness.max_known(cold_peak), note=cache)
        report.note(f"Pool memory with both pipelines: {size / 2**20:,.1f} MiB shared through from_pipe, "
                    f"{cold_device_bytes / 2**20:,.1f} MiB with img2img loaded separately.")
        if not cuda:
            report.note("CPU only: the pool's tiers are both RAM; on CUDA the cold load also copies the "
                        "second pipeline to the GPU, which the shared one never does.")
        del base
        hw.close()
        return report.finish(switch_row, cold_row)


def _cold_register(hw, loader):
    return hw.register("img2img-cold", loader(), loader=loader)


if __name__ == "__main__":
    sys.exit(harness.run(main))
