"""Loading a pipeline with its weights read into memory, against leaving them memory-mapped.

Measured: ``ModelStore.load_pipeline`` as the studio runs it (weights copied out of their
safetensors files, engines/models/residency.py) followed by the first generation. Baseline: the
same call with that copy switched off, which is what the store did before: diffusers maps the
files and the first generation reads the weights from them. Both are timed load plus first
generation, since a mapped load defers its reading to the first use. Also reported: a second
generation, the resident memory (RSS) each adds, the bytes still mapped from the files, and the
cost of the check ``hw.use`` makes on every use to notice a replaced file (``FileStamp.changed``).

Each sample runs in a fresh process, so that RSS growth is not hidden by memory a previous load
freed and the allocator kept; the page cache stays warm between samples unless
``--drop-page-cache`` is given.

    python bench/bench_model_load.py [--quick] [--device cpu|cuda] [--size tiny|small|sd15] [--drop-page-cache]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import SPECS, folder_bytes, save_pipeline  # noqa: E402

NAME = "bench_model_load"
TARGET = 1.15
PROMPT = "a manga girl on a rooftop at night, ink"
SEED = 7
PATHS = ("read", "mapped")
MiB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_disk_arguments(parser)
    # One sample, run by the parent in a fresh process.
    parser.add_argument("--sample", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--image-out", type=Path, help=argparse.SUPPRESS)


# --- one sample, in its own process -----------------------------------------------------------------


def _resident() -> dict[str, int]:
    """This process's resident memory; on Linux also split into anonymous and file-backed pages."""
    import psutil

    found = {"rss": int(psutil.Process().memory_info().rss)}
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                found[key[3:].lower()] = int(value.split()[0]) * 1024
    return found


def _grew(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in before}


def run_sample(args: argparse.Namespace) -> int:
    harness.quiet_libraries()
    import numpy as np
    import torch
    # Imported before the clock starts: diffusers and transformers import these lazily on first load.
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

    import engines.models.store as store_module
    from engines.models.residency import file_mapped_bytes

    if args.sample == "mapped":
        store_module.read_into_memory = lambda obj: 0  # the store before the change
    cuda = args.device == "cuda"
    dtype = harness.studio_dtype(args)
    store = store_module.ModelStore(args.folder.parent / "models", offline=True)
    px = SPECS[args.size].image_px

    def generate(pipe):
        generator = torch.Generator("cpu").manual_seed(SEED)
        return pipe(PROMPT, num_inference_steps=harness.steps(args), height=px, width=px, guidance_scale=7.5,
                    generator=generator, output_type="np").images

    def measure() -> dict:
        start = _resident()
        load_s, pipe = harness.timed(lambda: store.load_pipeline(str(args.folder), torch_dtype=dtype), cuda=cuda)
        if cuda:
            load_s += harness.timed(lambda: pipe.to("cuda"), cuda=True)[0]
        pipe.set_progress_bar_config(disable=True)
        loaded = _resident()
        mapped = file_mapped_bytes(pipe)
        first_s, image = harness.timed(lambda: generate(pipe), cuda=cuda)
        used = _resident()
        second_s, again = harness.timed(lambda: generate(pipe), cuda=cuda)
        np.save(args.image_out, image)
        return {"load_s": load_s, "first_s": first_s, "second_s": second_s, "mapped_bytes": mapped,
                "pipeline_bytes": harness.pipeline_bytes(pipe), "load_growth": _grew(loaded, start),
                "use_growth": _grew(used, loaded), "repeatable": bool(np.array_equal(image, again))}

    print("SAMPLE " + json.dumps(harness.in_fresh_thread(measure)), flush=True)
    return 0


# --- the benchmark ----------------------------------------------------------------------------------


def sample(args: argparse.Namespace, path: str, folder: Path, image_out: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--sample", path, "--folder", str(folder),
               "--image-out", str(image_out), "--device", args.device, "--size", args.size,
               "--precision", args.precision]
    if args.quick:
        command.append("--quick")
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SAMPLE ")]
    if proc.returncode or not lines:
        raise SystemExit(f"The {path} sample failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("SAMPLE "):])


def stamp_check_seconds(files: list[Path], calls: int) -> list[float]:
    """Seconds per ``FileStamp.changed()`` on a pipeline's files, in batches of ``calls``."""
    from engines.files import FileStamp

    stamp = FileStamp.of(files)
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            stamp.changed()
        batches.append((time.perf_counter() - start) / calls)
    return batches


def memory_note(growth: dict[str, int], mapped: int | None = None) -> str:
    parts = [f"RSS {growth['rss'] / MiB:+.1f} MiB"]
    if "anon" in growth:
        parts.append(f"(anon {growth['anon'] / MiB:+.1f}, file {growth['file'] / MiB:+.1f})")
    if mapped is not None:
        parts.append(f"mapped {mapped / MiB:.1f} MiB")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv, add_arguments)
    if args.sample:
        return run_sample(args)
    harness.quiet_libraries()
    import numpy as np

    from engines.models import ModelStore

    runs = harness.repeats(args, full=5, quick=1)
    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        # 1. a random-weight pipeline on disk, in the dtype the studio would load it in
        folder = harness.in_fresh_thread(lambda: save_pipeline(args.size, Path(tmp) / "model",
                                                               dtype=harness.studio_dtype(args)))
        files = ModelStore(Path(tmp) / "models", offline=True).files_for(str(folder))

        # 2. alternating samples, each in a fresh process, so drift in the machine's speed hits both
        results: dict[str, list[dict]] = {path: [] for path in PATHS}
        for i in range(runs):
            for path in PATHS if i % 2 == 0 else PATHS[::-1]:
                if args.drop_page_cache:
                    harness.drop_page_cache(folder)
                results[path].append(sample(args, path, folder, Path(tmp) / f"{path}-{i}.npy"))
        images = {path: np.load(Path(tmp) / f"{path}-0.npy") for path in PATHS}

        report = harness.Report(NAME, "load + first generation: weights read into memory vs mapped", TARGET, args)
        size = results["read"][0]["pipeline_bytes"]
        report.info = harness.environment(args, size=args.size, pipeline_mib=round(size / MiB, 1),
                                          on_disk_mib=round(folder_bytes(folder) / MiB, 1), files=len(files),
                                          image_px=SPECS[args.size].image_px, steps=harness.steps(args))
        rows = {}
        for path, label in (("read", "read into memory"), ("mapped", "mapped (before)")):
            r = results[path]
            first = r[0]  # memory figures from the first sample; every sample is a fresh process
            report.add(f"{label}: load_pipeline", [s["load_s"] for s in r],
                       note=memory_note(first["load_growth"], first["mapped_bytes"]))
            report.add("  then first generation", [s["first_s"] for s in r], note=memory_note(first["use_growth"]))
            report.add("  then second generation", [s["second_s"] for s in r], note="not in the ratio")
            rows[path] = report.add(f"{label}: load + first generation", [s["load_s"] + s["first_s"] for s in r])
        stamp_row = report.add(f"FileStamp.changed() on {len(files)} files", stamp_check_seconds(files, 2000),
                               note="on every hw.use; not in the ratio")
        for path in PATHS:
            first = results[path][0]
            report.metrics[f"{path}_rss_after_load_bytes"] = first["load_growth"]["rss"]
            report.metrics[f"{path}_rss_after_first_generation_bytes"] = (first["load_growth"]["rss"]
                                                                          + first["use_growth"]["rss"])
            report.metrics[f"{path}_file_mapped_bytes"] = first["mapped_bytes"]
        report.metrics["pipeline_bytes"] = size
        report.metrics["file_stamp_check_s"] = stamp_row.median

        report.note(f"The pool counts {size / MiB:.1f} MiB for this pipeline. Read into memory, the load itself "
                    "makes it resident; mapped, the load returns with almost nothing resident and the first "
                    "generation reads the weights it touches from the file (a text-to-image generation never "
                    "runs the VAE encoder, so those pages stay on disk).")
        report.note("RSS is per process: file-backed pages of a mapping are the page cache, which the kernel "
                    "may drop and read back from disk during a later generation.")
        if not args.drop_page_cache:
            report.note("The files were in the page cache (the best case for a mapped load); --drop-page-cache "
                        "measures a first load after a reboot.")
        report.check("read into memory: no weight is file-mapped after the load",
                     all(s["mapped_bytes"] == 0 for s in results["read"]))
        report.check("mapped baseline: the weights really were file-mapped",
                     all(s["mapped_bytes"] > 0 for s in results["mapped"]))
        report.check("both loads draw identical pixels", bool(np.array_equal(images["read"], images["mapped"])))
        report.check("each process drew the same pixels twice",
                     all(s["repeatable"] for path in PATHS for s in results[path]))
        return report.finish(rows["read"], rows["mapped"])


if __name__ == "__main__":
    sys.exit(harness.run(main))
