"""One generation through the engine layer, against the same raw diffusers call.

Measured: ``JobRunner(hw).run(job, call)``, where ``call`` takes the pipeline with
``hw.use(name)`` under the GPU lock and runs it with ``diffusers_step_callback`` reporting every
step. Baseline: ``pipe(...)`` on the same pipeline object, same prompt, seed and steps. The order
alternates between repeats and the medians are compared; the pixels of every run must be
identical to the first raw run's, or the benchmark exits 1.

    python bench/bench_engine_overhead.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import SPECS, build_pipeline  # noqa: E402

NAME = "bench_engine_overhead"
TARGET = 1.05
PROMPT = "ink manga, a girl on a rooftop at night, screentone"
SEED = 1234


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv)
    cuda = args.device == "cuda"
    if cuda:
        # cuBLAS picks reduction orders per workspace; a fixed workspace makes two runs of the same
        # call bit-identical, which the pixel check needs (set before CUDA initialises).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    harness.quiet_libraries()
    import tempfile

    import numpy as np
    import torch

    from engines.progress import diffusers_step_callback
    from studio.jobs import JobRunner

    if cuda:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    runs = harness.repeats(args, full=7, quick=2)
    n_steps = harness.steps(args)
    px = SPECS[args.size].image_px
    peak = harness.PeakVram(cuda)

    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        # 1. one pipeline, registered in the pool as an engine would. Every torch call runs in a
        #    short-lived thread, never on the main thread (harness.in_fresh_thread says why).
        def build():
            pipe = build_pipeline(args.size, seed=0)
            pipe.to(dtype=harness.studio_dtype(args))
            pipe.set_progress_bar_config(disable=True)
            return pipe

        pipe = harness.in_fresh_thread(build)
        size = harness.pipeline_bytes(pipe)
        hw = harness.make_hardware(args, Path(tmp) / "data", device_budget=2 * size, host_budget=4 * size)
        harness.in_fresh_thread(lambda: hw.register("panel", pipe))
        runner = JobRunner(hw)
        settings = dict(num_inference_steps=n_steps, height=px, width=px, guidance_scale=7.5, output_type="np")

        # 2. the two paths; the raw call gets a fresh thread too, as JobRunner gives every job one
        def raw_call():
            generator = torch.Generator("cpu").manual_seed(SEED)
            return pipe(PROMPT, generator=generator, **settings).images

        def raw():
            return harness.in_fresh_thread(raw_call)

        last_progress = [0]

        def engine():
            def call(on_step, cancel):
                with hw.use("panel") as panel:
                    generator = torch.Generator("cpu").manual_seed(SEED)
                    callback = diffusers_step_callback(on_step, cancel, total=n_steps)
                    return panel(PROMPT, generator=generator, callback_on_step_end=callback, **settings).images

            def on_event(event):
                if event.kind == "progress":
                    last_progress[0] = event.step

            return runner.run("bench-generate", call, on_event=on_event)

        def empty_job():
            def call(on_step, cancel):
                with hw.use("panel"):
                    return None

            return runner.run("bench-empty", call)

        # 3. warm-up (allocator, kernels, oneDNN primitives; on a VM, memory the host reclaimed),
        #    then alternating timed runs
        reference = raw()
        same = [np.array_equal(engine(), reference)]
        for _ in range(0 if args.quick else 1):
            same += [np.array_equal(raw(), reference), np.array_equal(engine(), reference)]
        samples: dict[str, list[float]] = {"raw": [], "engine": [], "empty": []}
        peaks: dict[str, list] = {"raw": [], "engine": []}
        paths = {"raw": raw, "engine": engine}
        for i in range(runs):
            for which in (("raw", "engine") if i % 2 == 0 else ("engine", "raw")):
                with peak.phase() as p:
                    seconds, images = harness.timed(paths[which], cuda=cuda)
                samples[which].append(seconds)
                peaks[which].append(p["bytes"])
                same.append(np.array_equal(images, reference))
            samples["empty"].append(harness.timed(empty_job, cuda=cuda)[0])

        report = harness.Report(NAME, "a generation through JobRunner + hw.use vs raw diffusers", TARGET, args)
        report.info = harness.environment(args, hw, size=args.size, pipeline_mib=round(size / 2**20, 1),
                                          image_px=px, steps=n_steps)
        raw_row = report.add("raw diffusers: pipe(...)", samples["raw"], peak_vram=harness.max_known(peaks["raw"]),
                             note="in a plain thread, as jobs run")
        engine_row = report.add("engine: JobRunner.run + hw.use + step callback", samples["engine"],
                                peak_vram=harness.max_known(peaks["engine"]))
        empty_row = report.add("empty job: JobRunner.run + hw.use only", samples["empty"],
                               note="fixed cost of one job")
        # Each repeat runs both paths back to back, so their ratio is immune to slow drifts in the
        # machine's load; its median cross-checks the ratio of medians (which RATIO reports).
        paired = statistics.median(e / r for e, r in zip(samples["engine"], samples["raw"]))
        report.metrics["median_paired_ratio"] = paired
        report.note(f"Median of the per-repeat ratios engine/raw: {paired:.3f}x (a cross-check of the "
                    "ratio of medians below, robust to the machine's load changing during the run).")
        per_step = (engine_row.median - raw_row.median - empty_row.median) / n_steps
        report.note(f"Engine minus raw: {1e3 * (engine_row.median - raw_row.median):+.2f} ms per generation; "
                    f"the empty job explains {1e3 * empty_row.median:.2f} ms of it, leaving "
                    f"{1e3 * per_step:+.3f} ms per step for the progress callback (medians, so noisy).")
        report.note("Both paths compute in a fresh thread each call (JobRunner's way); a raw call on the "
                    "main thread beside job threads would measure OpenMP thread-pool contention instead "
                    "(see bench/README.md).")
        report.check(f"identical pixels in all {len(same)} engine and raw runs", all(same))
        report.check(f"progress reached step {n_steps} of {n_steps}", last_progress[0] == n_steps)
        del pipe
        hw.close()
        return report.finish(engine_row, raw_row)


if __name__ == "__main__":
    sys.exit(harness.run(main))
