"""The dataset filter benchmark runs quick and prints its ratio (the value is reported, not judged)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_filter_benchmark_runs_quick_and_prints_its_ratio(tmp_path):
    results = tmp_path / "bench_dataset_filters.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_dataset_filters.py"), "--quick",
                           "--repeats", "1", "--json", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^RATIO dataset_filters = \d+\.\d{3} \(target >= 0\.67\)$", proc.stdout, re.M), proc.stdout
    data = json.loads(results.read_text(encoding="utf-8"))
    assert data["correct"] and data["mode"] == "quick" and data["baseline_median_s"] > 0
