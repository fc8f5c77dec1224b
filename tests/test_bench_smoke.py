"""Every benchmark runs end to end on tiny models and reports its ratio (the values are not judged here).

Benchmarks report time, they do not pass or fail on it; what is checked is that each one starts,
passes its own correctness checks (identical pixels, shared components, a server that answers)
and prints its ``RATIO`` line and JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("bench_pool_swap", "bench_from_pipe", "bench_engine_overhead", "bench_startup", "bench_model_load",
              "bench_text_encoder", "bench_sd15_generate",
              "bench_sd15_reference", "bench_manga_page", "bench_manga_cbz", "bench_live_action",
              "bench_live_action_swap", "bench_animation", "bench_animation_swap")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_quick_and_prints_its_ratio(name: str, tmp_path: Path) -> None:
    results = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick", "--size", "tiny", "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert re.search(rf"^RATIO {name} = \d+\.\d\dx \((target <= [\d.]+|no target)\)$", proc.stdout, re.M), output
    data = json.loads(results.read_text(encoding="utf-8"))
    assert data["name"] == name and data["correct"] and data["mode"] == "quick"
    assert data["baseline_median_s"] > 0


def test_learns_benchmark_runs_a_tiny_version_of_itself(tmp_path: Path) -> None:
    """bench_origin_learns: the dataset, the trainer, the sampler and the judge, wired together on a
    few steps (the scores of so short a run mean nothing; the judge's own tests are test_learns_judge.py)."""
    results = tmp_path / "learns.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_origin_learns.py"), "--quick", "--variants", "origin,plain,origin_latent",
         "--sample-steps", "4", "--cfg", "4,1", "--json", str(results), "--keep", str(tmp_path / "kept")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert re.search(r"^RATIO origin_learns = (\d+\.\d\dx \(target >= 1\.00\)|n/a )", proc.stdout, re.M), output
    assert re.search(r"^GOAL background colour accuracy \d+ %", proc.stdout, re.M), output
    data = json.loads(results.read_text(encoding="utf-8"))
    origin, plain = data["variants"]["origin"], data["variants"]["plain"]
    assert plain["config"]["architecture"] == "plain" and origin["config"]["noise_schedule"] == "zero_snr"
    assert abs(plain["params"] - origin["params"]) < 0.25 * origin["params"]  # "of equal parameter count"
    for row in (origin, plain):
        for cfg in ("cfg 4", "cfg 1"):
            for split in ("seen", "held_out"):
                scores = row["eval"][cfg][split]
                assert scores["count"] == 8
                assert all(0.0 <= scores[a] <= 1.0 for a in ("background", "colour", "shape", "position", "all"))
    assert 0.0 < origin["caption_share"] < 1.0 and plain["caption_share"] is None
    assert (tmp_path / "kept" / "origin-cfg4-seen.png").is_file()
    # The latent variant: its own VAE trained on the benchmark's pictures, then Origin in its space.
    latent = data["variants"]["origin_latent"]
    assert latent["config"]["space"] == "latent" and latent["config"]["resolution"] == 64
    assert latent["eval"]["cfg 4"]["seen"]["count"] == 8 and latent["vae"]["figures"]["factor"] == 4
    assert re.search(r"^LATENT origin_latent at 64 px vs origin at 32 px: background \d+ %", proc.stdout, re.M), output


def test_latent_benchmark_runs_quick_and_prints_its_ratio(tmp_path: Path) -> None:
    """bench_origin_latent: the trainer's step in both spaces, the encode and the decode-with-gradients
    option, on the tiny config and a narrow VAE."""
    results = tmp_path / "latent.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_origin_latent.py"), "--quick", "--json",
                           str(results)], cwd=ROOT, capture_output=True, text=True, timeout=150)
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert re.search(r"^RATIO origin_latent = \d+\.\d\dx \(target <= 1\.3\)$", proc.stdout, re.M), output
    assert "VAE decode + art losses + backward" in proc.stdout
    data = json.loads(results.read_text(encoding="utf-8"))
    assert data["name"] == "origin_latent" and data["correct"] and data["baseline_median_s"] > 0


def test_metrics_refresh_benchmark_runs_quick_and_prints_its_ratio(tmp_path: Path) -> None:
    """bench_metrics_refresh: the monitor's refresh on a long run against a short one (5,000 lines here,
    enough for the series to halve their buckets; the full run writes 1,000,000)."""
    results = tmp_path / "metrics_refresh.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_metrics_refresh.py"), "--quick", "--lines", "5000",
                           "--repeats", "3", "--json", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert re.search(r"^RATIO metrics_refresh_1m_vs_1k = \d+\.\d\dx \(target <= 2\)$", proc.stdout, re.M), output
    data = json.loads(results.read_text(encoding="utf-8"))
    assert data["name"] == "metrics_refresh_1m_vs_1k" and data["correct"] and data["mode"] == "quick"
    assert data["baseline_median_s"] > 0 and data["metrics"]["big_peak_points_per_series"] <= 2000
