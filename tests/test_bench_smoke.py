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
              "bench_text_encoder")


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
