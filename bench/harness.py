"""What every benchmark shares: its command line, the HardwareManager it measures, timing and the report.

Benchmarks report; they never fail on time. A benchmark exits non-zero only when a correctness
check fails (different pixels, components that should be shared but are not, a server that never
answers). Each prints a table and ends with ``RATIO <name> = <x.xx>x (target <= T)``, the measured
path against a baseline timed in the same process, in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import Report  # noqa: E402,F401 - re-exported: the scripts use harness.Report
from bench.synthetic_models import SIZES, SPECS  # noqa: E402

T = TypeVar("T")
MiB = 2**20
# The studio's smallest target card; a CUDA run without --vram-limit budgets like one, so the pool
# evicts at the sizes the studio is built for instead of never evicting on a large card.
DEFAULT_CUDA_VRAM_LIMIT_GB = 6.0


def parse_args(name: str, description: str, argv: Optional[list[str]] = None,
               add_extra: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"bench/{name}.py", description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps (smoke tests, CI)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the HardwareManager puts models (default cpu)")
    parser.add_argument("--vram-limit", type=float, default=None, metavar="GB",
                        help=f"device budget in GB (CUDA default {DEFAULT_CUDA_VRAM_LIMIT_GB:g}, a 6 GB card)")
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="random-weight pipeline: tiny (test-suite size), small (~140 MB, default), "
                             "sd15 (real SD 1.5 shapes, 4.3 GB fp32 / 2.1 GB fp16)")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="number format; auto is the studio's rule (fp32 on CPU, fp16 on most GPUs)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="override the repeat count")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    if add_extra is not None:
        add_extra(parser)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.vram_limit_given = args.vram_limit is not None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.exit(2, f"bench/{name}.py: --device cuda was given but torch sees no CUDA GPU "
                           f"(torch {torch.__version__}); run with --device cpu.\n")
        if args.vram_limit is None:
            args.vram_limit = DEFAULT_CUDA_VRAM_LIMIT_GB
    return args


def run(main: Callable[[], int]) -> int:
    """Run a benchmark's ``main``; a studio error (a budget too small for the model...) is one sentence."""
    from engines.errors import StudioError

    try:
        return main()
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


def repeats(args: argparse.Namespace, full: int, quick: int) -> int:
    return args.repeats or (quick if args.quick else full)


def steps(args: argparse.Namespace) -> int:
    spec = SPECS[args.size]
    return spec.quick_steps if args.quick else spec.steps


def quiet_libraries() -> None:
    """Progress bars and load warnings would drown the table (and cost time inside the timings)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # engines/models/store.py still passes diffusers' deprecated ``torch_dtype`` (reported, not ours to fix).
    warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cuda_limit_holding(nbytes: int) -> float:
    """The --vram-limit in GB whose model budget (the cap less the HardwareManager's activation floor,
    15 % of the cap up to 1 GB) is ``nbytes``."""
    cap = nbytes / 0.85
    if cap * 0.15 > 2**30:
        cap = nbytes + 2**30
    return cap / 2**30


def make_hardware(args: argparse.Namespace, data_dir: Path, *, device_budget: Optional[int] = None,
                  host_budget: Optional[int] = None) -> Any:
    """The HardwareManager under test.

    On CUDA it is the studio's own (budget from --vram-limit, enforced as torch's per-process
    memory fraction). On a CPU the "device" tier is RAM too, so the benchmark gives the pool a
    budget sized to its pipelines, the way the test suite does; --vram-limit still wins there.
    """
    from engines.hardware import HardwareManager
    from engines.settings import MachineSettings

    cuda = args.device == "cuda"
    settings = MachineSettings(data_dir=data_dir, cpu=not cuda, vram_limit_gb=args.vram_limit,
                               precision=args.precision)
    if cuda:
        hw = HardwareManager(settings)
        if hw.device.type != "cuda":
            raise SystemExit(f"The HardwareManager chose {hw.device.name}, not a CUDA GPU.")
        return hw
    return HardwareManager(settings, device_budget_bytes=device_budget, host_budget_bytes=host_budget)


def synchronize(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], T], *, cuda: bool = False) -> tuple[float, T]:
    """Seconds ``fn`` took, with queued GPU work finished on both sides of the clock."""
    synchronize(cuda)
    start = time.perf_counter()
    result = fn()
    synchronize(cuda)
    return time.perf_counter() - start, result


class PeakVram:
    """``with peak.phase() as p: ...`` then ``p["bytes"]``: peak CUDA memory of a phase (None on CPU)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    @contextmanager
    def phase(self) -> Iterator[dict[str, Optional[int]]]:
        box: dict[str, Optional[int]] = {"bytes": None}
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        yield box
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            box["bytes"] = int(torch.cuda.max_memory_allocated())


@dataclass
class EngineVsRaw:
    """Seconds and peak VRAM of each path's timed runs, and whether each engine run equalled the raw result."""

    samples: dict[str, list[float]]
    peaks: dict[str, list]
    same: list[bool]

    def rows(self, report: Any, raw_label: str, engine_label: str) -> tuple[Any, Any]:
        """Both rows, and the median of the per-repeat ratios as a metric and a note; returns (engine, raw)."""
        raw = report.add(raw_label, self.samples["raw"], peak_vram=max_known(self.peaks["raw"]))
        engine = report.add(engine_label, self.samples["engine"], peak_vram=max_known(self.peaks["engine"]))
        paired = statistics.median(e / r for e, r in zip(self.samples["engine"], self.samples["raw"]))
        report.metrics["median_paired_ratio"] = paired
        report.note(f"Median of the per-repeat ratios engine/raw: {paired:.3f}x.")
        return engine, raw


def engine_vs_raw(raw_call: Callable[[], Any], engine_call: Callable[[], Any], runs: int, *, cuda: bool,
                  peak: "PeakVram") -> EngineVsRaw:
    """Time an engine call against raw diffusers, each in a fresh thread as jobs run: raw once for the reference
    result, the engine once untimed (it loads), then ``runs`` of each, alternating which goes first (a warm cache
    or a busy moment favours neither). Every engine result, the untimed one too, is compared with the reference."""
    import numpy as np

    paths = {"raw": lambda: in_fresh_thread(raw_call), "engine": lambda: in_fresh_thread(engine_call)}
    reference = paths["raw"]()
    same = [bool(np.array_equal(paths["engine"](), reference))]
    samples: dict[str, list[float]] = {"raw": [], "engine": []}
    peaks: dict[str, list] = {"raw": [], "engine": []}
    for i in range(runs):
        for which in (("raw", "engine") if i % 2 == 0 else ("engine", "raw")):
            with peak.phase() as p:
                seconds, result = timed(paths[which], cuda=cuda)
            samples[which].append(seconds)
            peaks[which].append(p["bytes"])
            same.append(bool(np.array_equal(result, reference)))
    return EngineVsRaw(samples, peaks, same)


def vram_line(hw: Any, stage: str) -> None:
    """On CUDA, print what torch holds next to what the pool counts (the pool's accounting, checked)."""
    if hw.device.type != "cuda":
        return
    import torch

    torch.cuda.synchronize()
    print(f"vram: {stage}: torch allocated {torch.cuda.memory_allocated() / MiB:,.0f} MiB, "
          f"pool counts {hw.pool.device_bytes() / MiB:,.0f} MiB on the device", flush=True)


def environment(args: argparse.Namespace, hw: Any = None, **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(terse=True),
        "cpu_count": os.cpu_count(),
    }
    if hasattr(os, "getloadavg"):  # other work on the machine is the usual source of noise
        info["load_1min"] = round(os.getloadavg()[0], 2)
    torch = sys.modules.get("torch")  # not imported just to report it (the startup benchmark needs no torch)
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if args.device == "cuda":
            info["gpu"] = torch.cuda.get_device_name(0)
    if hw is not None:
        info["device"] = hw.device.name
        info["dtype"] = str(hw.dtype()).replace("torch.", "")
        info["device_budget_mib"] = round(hw.pool.device_budget / MiB, 1)
        info["budget_source"] = hw.budget().source
    info.update(extra)
    return info


def drop_page_cache(folder: Path) -> bool:
    """Ask the kernel to forget cached pages of a saved model, so the next load reads the disk.

    Works without privileges for files nobody is writing (POSIX_FADV_DONTNEED); returns False
    where the platform has no such call.
    """
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in Path(folder).rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


def add_disk_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--drop-page-cache", action="store_true",
                        help="evict the saved model from the OS page cache before each cold load "
                             "(a first load after a reboot); default: cached, the harder baseline to beat")


def studio_dtype(args: argparse.Namespace) -> Any:
    """The inference dtype the studio's rules pick for this device and --precision (fp16 on most GPUs)."""
    from engines.hardware.devices import select_device, select_precision, torch_dtype

    device = select_device(force_cpu=args.device != "cuda")
    return torch_dtype(select_precision(device, args.precision).inference)


def pipeline_bytes(pipe: Any) -> int:
    from engines.hardware.placement import components_of, module_bytes

    return sum(module_bytes(m) for m in components_of(pipe).values())


def max_known(values: list[Optional[int]]) -> Optional[int]:
    """The largest of the values that were measured (peak VRAM is None on a CPU)."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread, as ``JobRunner`` runs every job, and return its result.

    Why the benchmarks never compute on the main thread: torch's CPU kernels use OpenMP, and
    libgomp keeps one thread pool per calling thread. Measured on a 2-core machine: once a second
    thread has run torch work while the first one's pool is alive (the main thread and a job
    thread, say), the same generation runs 3 to 15 times slower, in either thread; with only one
    pool alive at a time there is no slowdown. (Likely cause: with more OpenMP threads than
    cores, libgomp stops spin-waiting between parallel regions, so every small kernel waits
    for a wake-up.) A pool dies with its thread, so computing only in one short-lived thread at
    a time keeps both paths on equal footing.
    """
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = error

    worker = threading.Thread(target=run, name="bench-call")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
