"""Re-activating a pipeline the pool evicted to CPU RAM, against loading it cold from disk.

Pipelines are registered in a HardwareManager whose device budget holds one fewer than there are
(two on a CPU, where the budget is sized to fit one), so the least recently used sits in the host
tier. Measured: ``with hw.use(name)`` bringing it back (and pushing the next-oldest out to RAM).
Baseline: ``ModelStore.load_pipeline`` from the saved safetensors folder plus ``hw.register``,
into the same full pool. On a CPU both tiers are RAM, so re-activation is bookkeeping only; on
CUDA it is a real device-to-host plus host-to-device copy.

    python bench/bench_pool_swap.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import folder_bytes, save_pipeline  # noqa: E402

NAME = "bench_pool_swap"
TARGET = 0.2
MAX_PIPELINES = 8


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv, harness.add_disk_arguments)
    harness.quiet_libraries()
    from engines.models import ModelStore

    cuda = args.device == "cuda"
    runs = harness.repeats(args, full=7, quick=3)
    peak = harness.PeakVram(cuda)
    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        # 1. a random-weight pipeline on disk, in the dtype the studio would load it in
        dtype = harness.studio_dtype(args)
        folder = save_pipeline(args.size, Path(tmp) / "model", dtype=dtype)
        store = ModelStore(Path(tmp) / "models", offline=True)

        def load():
            return store.load_pipeline(str(folder), torch_dtype=dtype)

        first = load()
        size = harness.pipeline_bytes(first)

        # 2. a pool that holds one pipeline fewer than it is given: on CUDA without --vram-limit a
        #    budget that fits one and a half (two pipelines), with one the real budget decides
        if cuda and not args.vram_limit_given:
            args.vram_limit = round(harness.cuda_limit_holding(size + size // 2), 3)
        hw = harness.make_hardware(args, Path(tmp) / "data", device_budget=size + size // 2,
                                   host_budget=size * (MAX_PIPELINES + 2))
        count = max(2, hw.pool.device_budget // size + 1)
        if count > MAX_PIPELINES:
            raise SystemExit(
                f"A {hw.pool.device_budget / 2**30:.2f} GB model budget holds {count - 1} of these "
                f"{size / 2**30:.3f} GB pipelines, too many to cycle through: leave --vram-limit out, give "
                f"--vram-limit {harness.cuda_limit_holding(size + size // 2):.2f} or less, or use a larger --size.")
        names = [f"pipeline-{i}" for i in range(count)]
        objects = {}
        for i, name in enumerate(names):
            objects[name] = hw.register(name, first if i == 0 else load(), loader=load)
        del first
        report = harness.Report(NAME, "re-activate an evicted pipeline vs cold load from disk", TARGET, args)
        report.check("the first pipeline was evicted to the host tier", hw.pool.tier_of(names[0]) == "host")

        def host_resident() -> str:
            return next(n for n in names if hw.pool.tier_of(n) == "host")

        def cold_load():
            return hw.register("cold", load(), loader=load)

        reused = [True]

        def swap_in(name: str) -> None:
            with hw.use(name) as pipe:
                reused[0] = reused[0] and pipe is objects[name]

        # 3. one untimed cycle: first CUDA copies pay for context and allocator set-up
        for _ in names:
            swap_in(host_resident())

        # 4. interleaved samples, so drift in the machine's speed hits both sides alike
        swaps, colds, swap_peak, cold_peak = [], [], [], []
        for _ in range(runs):
            name = host_resident()
            with peak.phase() as p:
                seconds, _ = harness.timed(lambda: swap_in(name), cuda=cuda)
            swaps.append(seconds)
            swap_peak.append(p["bytes"])

            on_device = [n for n in names if hw.pool.tier_of(n) == "device"]
            if args.drop_page_cache:
                harness.drop_page_cache(folder)
            with peak.phase() as p:
                seconds, cold_pipe = harness.timed(cold_load, cuda=cuda)
            colds.append(seconds)
            cold_peak.append(p["bytes"])
            del cold_pipe  # the pool keeps the only reference, so unload really frees it
            # Untimed: free the cold copy and put back what it pushed out, so every sample starts full.
            hw.unload("cold")
            for evicted in (n for n in on_device if hw.pool.tier_of(n) == "host"):
                swap_in(evicted)

        report.check("re-activation returned the very object kept in RAM", reused[0])
        report.check("no swap reloaded from disk", not any("reloading" in e for e in hw.events))
        report.info = harness.environment(
            args, hw, size=args.size, pipeline_mib=round(size / 2**20, 1),
            on_disk_mib=round(folder_bytes(folder) / 2**20, 1), pipelines=count)
        swap = report.add("re-activate from CPU RAM: hw.use(name)", swaps, peak_vram=harness.max_known(swap_peak),
                          note="evicts the next-oldest to RAM")
        cache = "page cache dropped" if args.drop_page_cache else "files in the page cache"
        cold = report.add("cold: ModelStore.load_pipeline + register", colds, peak_vram=harness.max_known(cold_peak),
                          note=cache)
        report.note("ModelStore reads the weights into memory as it loads (docs/models.md), so the cold "
                    "load includes reading every byte: nothing is left to read on first use.")
        if cuda:
            report.note("CUDA: re-activation is a real copy (the evicted pipeline host-to-device, the "
                        "next-oldest device-to-host); the cold load reads, builds and copies too.")
        else:
            report.note("CPU only: the device tier and the host tier are both RAM, so re-activation moves no "
                        "bytes; it costs the pool's bookkeeping plus torch walking every module for "
                        ".to('cpu') calls that change nothing. Run with --device cuda for a real "
                        "host-to-device copy.")
        if not args.drop_page_cache:
            report.note("The cold load reads files the OS still has cached (the best case for disk); "
                        "--drop-page-cache measures a first load after a reboot.")
        objects.clear()  # the pool's references are the last ones, so close() really frees them
        hw.close()
        return report.finish(swap, cold)


if __name__ == "__main__":
    sys.exit(harness.run(main))
