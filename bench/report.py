"""The report every benchmark prints: a table of timings, notes, checks, the RATIO line and the JSON.

The RATIO line is the measured path's median over the baseline's, both timed in the same run.
Only checks decide the exit code; time never does.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

MiB = 2**20


@dataclass
class Row:
    label: str
    samples: list[float]
    peak_vram: Optional[int] = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def _seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


@dataclass
class Report:
    """Collects rows, prints the table and the RATIO line, writes the JSON."""

    name: str
    title: str
    target: Optional[float]  # the ratio should be at or below this; None: reported only
    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # extra numbers for the JSON

    def add(self, label: str, samples: list[float], *, peak_vram: Optional[int] = None, note: str = "") -> Row:
        row = Row(label, list(samples), peak_vram, note)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    def check(self, name: str, ok: bool) -> None:
        """A correctness check: any failure makes the benchmark exit 1 (time never does)."""
        self.checks[name] = bool(ok)

    def _print_table(self) -> None:
        show_vram = any(r.peak_vram is not None for r in self.rows)
        head = ["phase", "median", "min", "max", "n"] + (["peak VRAM"] if show_vram else []) + ["note"]
        lines = []
        for r in self.rows:
            cells = [r.label, _seconds(r.median), _seconds(min(r.samples)), _seconds(max(r.samples)),
                     str(len(r.samples))]
            if show_vram:
                cells.append("-" if r.peak_vram is None else f"{r.peak_vram / MiB:,.0f} MiB")
            lines.append(cells + [r.note])
        widths = [max(len(head[i]), *(len(line[i]) for line in lines)) for i in range(len(head))]
        fmt = "  ".join(f"{{:{'<' if i in (0, len(head) - 1) else '>'}{w}}}" for i, w in enumerate(widths))
        print(fmt.format(*head))
        print("  ".join("-" * w for w in widths))
        for line in lines:
            print(fmt.format(*line))

    def finish(self, measured: Row, baseline: Row) -> int:
        """Print everything, write the JSON and return the exit code."""
        ratio = measured.median / baseline.median if baseline.median > 0 else float("inf")
        meets = None if self.target is None else ratio <= self.target
        mode = "quick" if self.args.quick else "full"
        print(f"\n== {self.name}: {self.title} ==")
        print("  ".join(f"{k}={v}" for k, v in self.info.items()) + f"  mode={mode}\n")
        self._print_table()
        print()
        for text in self.notes:
            print(f"note: {text}")
        for check, ok in self.checks.items():
            print(f"check: {check}: {'ok' if ok else 'FAILED'}")
        print(f"ratio: {measured.label} / {baseline.label} = {ratio:.6f}"
              + ("" if meets is None else f" ({'meets' if meets else 'misses'} the target <= {self.target:g})"))
        target_text = "no target" if self.target is None else f"target <= {self.target:g}"
        print(f"RATIO {self.name} = {ratio:.2f}x ({target_text})", flush=True)
        if self.args.json is not None:
            self._write_json(measured, baseline, ratio, meets, mode)
        return 0 if all(self.checks.values()) else 1

    def _write_json(self, measured: Row, baseline: Row, ratio: float, meets: Optional[bool], mode: str) -> None:
        data = {
            "name": self.name, "title": self.title, "mode": mode, "ratio": ratio, "target": self.target,
            "meets_target": meets, "measured": measured.label, "baseline": baseline.label,
            "measured_median_s": measured.median, "baseline_median_s": baseline.median,
            "checks": self.checks, "correct": all(self.checks.values()), "notes": self.notes,
            "metrics": self.metrics,
            "environment": self.info,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()},
            "rows": [{"label": r.label, "median_s": r.median, "min_s": min(r.samples), "max_s": max(r.samples),
                      "samples_s": r.samples, "peak_vram_bytes": r.peak_vram, "note": r.note} for r in self.rows],
        }
        path = Path(self.args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
