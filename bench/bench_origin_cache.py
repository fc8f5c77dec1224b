"""Origin's tensor cache: a training epoch served from the cache against the first epoch's decoding.

Builds ~200 synthetic 512 px JPEG "illustrations" (gradients, shapes, ink lines, grain), then in
the same process, for each repeat with a fresh cache folder:

- epoch 1 (baseline): every sample decoded, resized and centre-cropped, then written to the
  cache (misses: decode + content hash + disk write);
- epoch 2 (measured): the same DataLoader again, served from the RAM tier (hits);
- a disk-tier epoch: a new ``TensorCache`` on the same folder with no RAM tier, as a new run
  or a DataLoader worker without RAM sees it (reported, not part of the ratio);
- a no-cache epoch: decoding alone, to show what the miss path adds (reported).

Prints ``RATIO origin_cache = x.xx (target >= 5)``: epoch-1 time / epoch-2 time (higher is better).
Exits 1 only when a correctness check fails (cached tensors differ from decoded ones, or epoch 2
was not all hits).

    python bench/bench_origin_cache.py [--quick] [--resolution 64|128] [--images N] [--workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NAME = "origin_cache"
TARGET = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/bench_origin_cache.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 images, one repeat (smoke tests)")
    parser.add_argument("--resolution", type=int, choices=(64, 128), default=64, help="training resolution (default 64)")
    parser.add_argument("--images", type=int, default=None, help="number of 512 px JPEGs (default 200, quick 40)")
    parser.add_argument("--repeats", type=int, default=None, help="fresh-cache repeats (default 3, quick 1)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0: the main process)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.images = args.images or (40 if args.quick else 200)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def make_images(folder: Path, count: int, size: int = 512) -> None:
    """Smooth colour fields with shapes, lines and grain: JPEGs that decode like real illustrations."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        phase = rng.uniform(0, 6.3, 3)
        rgb = np.stack([0.5 + 0.4 * np.sin(4 * xx * (c + 1) + 3 * yy + phase[c]) for c in range(3)], -1)
        rgb += rng.normal(0, 0.03, rgb.shape).astype(np.float32)
        image = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.integers(0, size - 64, 2)
            w, h = rng.integers(32, 200, 2)
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            draw.line((*rng.integers(0, size, 2), *rng.integers(0, size, 2)), fill=(10, 10, 10), width=3)
        image.save(folder / f"illustration_{i:04d}.jpg", quality=90)
        (folder / f"illustration_{i:04d}.txt").write_text("manga girl, forest background", encoding="utf-8")


def run_epoch(loader) -> tuple[float, dict, list]:
    """Seconds for one pass over the loader, where its samples came from, and the images by path."""
    from engines.origin.training.cache import CacheTally

    tally, images = CacheTally(), {}
    start = time.perf_counter()
    for batch in loader:
        tally.add(batch["cache"])
        for path, image in zip(batch["path"], batch["image"]):
            images[path] = image
    return time.perf_counter() - start, tally.stats(), images


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from engines.origin.training.cache import TensorCache
    from engines.origin.training.data import ArtDataset, make_dataloader

    def loader_for(dataset):
        return make_dataloader(dataset, batch_size=16, shuffle=True, num_workers=args.workers, device_type="cpu",
                               seed=0)

    rows: dict[str, list[float]] = {"epoch 1 (decode + cache write)": [], "epoch 2 (RAM tier)": [],
                                    "new run (disk tier)": [], "no cache (decode only)": []}
    checks: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="inkframe-bench-cache-") as tmp:
        data = Path(tmp) / "dataset"
        data.mkdir()
        started = time.perf_counter()
        make_images(data, args.images)
        print(f"made {args.images} JPEGs of 512 px in {time.perf_counter() - started:.1f} s", flush=True)
        ram_budget = 2 * args.images * 3 * args.resolution ** 2  # room for all, as the default 1 GB is
        for repeat in range(args.repeats):
            disk = Path(tmp) / f"cache-{repeat}"
            cache = TensorCache(disk, ram_bytes=ram_budget, log_every=0)
            dataset = ArtDataset(data, args.resolution, cache=cache)
            loader = loader_for(dataset)
            t1, s1, first = run_epoch(loader)
            t2, s2, second = run_epoch(loader)
            del loader  # stop persistent workers before the next loader starts its own
            t3, s3, third = run_epoch(loader_for(ArtDataset(data, args.resolution,
                                                            cache=TensorCache(disk, ram_bytes=0, log_every=0))))
            t4, _, plain = run_epoch(loader_for(ArtDataset(data, args.resolution)))
            for label, seconds in zip(rows, (t1, t2, t3, t4)):
                rows[label].append(seconds)
            checks["epoch 1 all misses"] = checks.get("epoch 1 all misses", True) and s1["misses"] == len(dataset)
            checks["epoch 2 all hits"] = checks.get("epoch 2 all hits", True) and s2["hit_rate"] == 1.0
            checks["disk epoch all disk hits"] = (checks.get("disk epoch all disk hits", True)
                                                  and s3["disk_hits"] == len(dataset))
            same = all(torch.equal(first[p], second[p]) and torch.equal(first[p], third[p])
                       and torch.equal(first[p], plain[p]) for p in first)
            checks["cached tensors identical to decoded"] = checks.get("cached tensors identical to decoded", True) and same
            print(f"repeat {repeat + 1}/{args.repeats}: epoch 1 {t1:.3f} s, epoch 2 {t2:.3f} s, "
                  f"disk tier {t3:.3f} s, no cache {t4:.3f} s", flush=True)

    medians = {label: statistics.median(values) for label, values in rows.items()}
    ratio = medians["epoch 1 (decode + cache write)"] / medians["epoch 2 (RAM tier)"]
    disk_ratio = medians["epoch 1 (decode + cache write)"] / medians["new run (disk tier)"]
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "images": args.images, "resolution": args.resolution,
            "workers": args.workers, "repeats": args.repeats, "mode": "quick" if args.quick else "full"}
    if hasattr(os, "getloadavg"):
        info["load_1min"] = round(os.getloadavg()[0], 2)
    print(f"\n== {NAME}: epoch 2 from the tensor cache vs epoch 1 decoding ==")
    print("  ".join(f"{k}={v}" for k, v in info.items()) + "\n")
    width = max(map(len, rows))
    print(f"{'phase'.ljust(width)}  {'median':>9}  {'per image':>9}  {'min':>9}  {'max':>9}")
    for label, values in rows.items():
        print(f"{label.ljust(width)}  {medians[label]:8.3f}s  {1e3 * medians[label] / args.images:7.2f}ms  "
              f"{min(values):8.3f}s  {max(values):8.3f}s")
    print()
    for check, ok in checks.items():
        print(f"check: {check}: {'ok' if ok else 'FAILED'}")
    print(f"disk tier alone: {disk_ratio:.2f}x faster than epoch 1")
    print(f"RATIO {NAME} = {ratio:.2f} (target >= {TARGET:g})", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "name": NAME, "ratio": ratio, "target": TARGET, "meets_target": ratio >= TARGET,
            "disk_tier_ratio": disk_ratio, "medians_s": medians, "samples_s": rows, "checks": checks,
            "correct": all(checks.values()), "environment": info,
        }, indent=2) + "\n", encoding="utf-8")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
