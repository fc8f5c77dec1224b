"""How much the dataset checks cost next to decoding the image, on the same images in the same run.

Measured path, per image: MD5 of the bytes, ``inspect_image`` (header checks, full decode, colour
deviation, Laplacian sharpness, pHash) and the near-duplicate query against an index that already
holds 10 000 hashes (then the hash is added), i.e. everything the collector does to a downloaded
file before keeping it. Baseline: decoding the same bytes with PIL (``Image.open(...).load()``) and
nothing else. The ratio is throughput with checks / decode-only throughput; the target 0.67 means the
checks cost at most half of what the decode costs.

    python bench/bench_dataset_filters.py [--quick] [--repeats N] [--json PATH]

Images are drawn (gradient, outlined shapes, grain) at booru sizes, mostly JPEG with some PNG, so
every one passes the checks; a check that rejects one is a correctness failure (exit 1).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET = 0.67
SIZES = [(1280, 960), (1600, 1200), (2048, 1448), (1200, 1700), (2400, 1350), (1000, 1400)]
INDEX_SIZE = 10_000


def draw(seed: int, size: tuple[int, int]):
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = rng.uniform(-1, 1) * xx / w + rng.uniform(-1, 1) * yy / h
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = Image.fromarray((c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(image)
    for _ in range(14):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = [x0, y0, x0 + rng.uniform(w * 0.05, w * 0.4), y0 + rng.uniform(h * 0.05, h * 0.4)]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (pen.ellipse if rng.random() < 0.5 else pen.rectangle)(box, fill=colour, outline=(0, 0, 0), width=4)
    grain = rng.normal(0, 5, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8))


def make_images(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        image = draw(i, SIZES[i % len(SIZES)])
        if i % 4 == 3:
            image.save(buffer, "PNG", compress_level=6)
        else:
            image.save(buffer, "JPEG", quality=92)
        out.append(buffer.getvalue())
    return out


def decode_only(images: list[bytes]) -> float:
    from PIL import Image

    started = time.perf_counter()
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    return time.perf_counter() - started


def with_checks(images: list[bytes], index_hashes, thresholds) -> tuple[float, list]:
    from engines.dataset.dedupe import DuplicateIndex
    from engines.dataset.filters import inspect_image

    index = DuplicateIndex(thresholds.near_duplicate_distance)
    for value in index_hashes:
        index.add(None, int(value))
    verdicts = []
    started = time.perf_counter()
    for data in images:
        digest = hashlib.md5(data).hexdigest()
        verdict = inspect_image(data, thresholds)
        duplicate = index.has_md5(digest) or (verdict.ok and index.is_near_duplicate(verdict.phash))
        index.add(digest, verdict.phash)
        verdicts.append((verdict, duplicate))
    return time.perf_counter() - started, verdicts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bench_dataset_filters.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (smoke tests)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args(argv)
    import numpy as np

    from engines.dataset.request import QualityThresholds

    count, repeats = (8, 3) if args.quick else (24, 7)
    repeats = args.repeats or repeats
    images = make_images(count)
    thresholds = QualityThresholds()
    rng = np.random.default_rng(1)
    index_hashes = rng.integers(0, 2**63, INDEX_SIZE, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)

    decode_only(images[:2])  # warm-up: imports, PIL plugins, first-call costs
    with_checks(images[:2], index_hashes[:10], thresholds)
    decode_times, check_times, verdicts = [], [], []
    for _ in range(repeats):  # interleaved, so machine noise hits both sides alike
        decode_times.append(decode_only(images))
        elapsed, verdicts = with_checks(images, index_hashes, thresholds)
        check_times.append(elapsed)
    rejected = [(i, v.reason, dup) for i, (v, dup) in enumerate(verdicts) if not v.ok or dup]
    decode_s, check_s = statistics.median(decode_times), statistics.median(check_times)
    ratio = decode_s / check_s
    megapixels = sum(v.width * v.height for v, _ in verdicts) / 1e6

    print(f"{count} images ({megapixels:.1f} MP, {sum(map(len, images)) / 2**20:.1f} MB), {repeats} repeats, "
          f"index of {INDEX_SIZE} hashes; python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"{'path':<28}{'median s':>10}{'min s':>9}{'max s':>9}{'images/s':>10}{'ms/image':>10}")
    for name, times in (("decode only (baseline)", decode_times), ("decode + checks + hashes", check_times)):
        median = statistics.median(times)
        print(f"{name:<28}{median:>10.3f}{min(times):>9.3f}{max(times):>9.3f}{count / median:>10.1f}"
              f"{1000 * median / count:>10.2f}")
    print(f"checks alone: {1000 * (check_s - decode_s) / count:.2f} ms/image "
          f"({100 * (check_s - decode_s) / decode_s:.0f}% of the decode)")
    correct = not rejected
    if not correct:
        print(f"CHECK FAILED: images rejected or flagged as duplicates: {rejected}", file=sys.stderr)
    print(f"RATIO dataset_filters = {ratio:.3f} (target >= {TARGET})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "name": "dataset_filters", "mode": "quick" if args.quick else "full", "ratio": ratio,
            "target": TARGET, "correct": correct, "images": count, "repeats": repeats,
            "baseline_median_s": decode_s, "measured_median_s": check_s,
            "decode_times_s": decode_times, "check_times_s": check_times,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }, indent=2), encoding="utf-8")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
