"""Run every benchmark, collect their RATIO lines and print one summary (the numbers in docs/PERFORMANCE.md).

    python bench/run_all.py [--full] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
                            [--out-dir bench/results] [--markdown]

Quick mode (fewer repeats and steps) is the default; ``--full`` is what the documented numbers
use. Each benchmark's own table streams by as it runs, and its JSON lands in ``--out-dir``. The
exit code is non-zero only if a benchmark failed a correctness check or crashed, never for time.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS = ("bench_pool_swap", "bench_from_pipe", "bench_engine_overhead", "bench_startup", "bench_model_load",
              "bench_text_encoder", "bench_sd15_generate",
              "bench_sd15_reference", "bench_manga_page", "bench_manga_cbz", "bench_live_action",
              "bench_live_action_swap", "bench_animation", "bench_animation_swap")
RATIO_LINE = re.compile(r"^RATIO (?P<name>\S+) = (?P<ratio>\S+)x \((?P<target>[^)]*)\)\s*$", re.MULTILINE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run_all.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full repeats and steps (default: --quick)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--vram-limit", type=float, default=None, metavar="GB")
    parser.add_argument("--size", choices=("tiny", "small", "sd15"), default="small")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME",
                        help="run only these benchmarks")
    parser.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where the JSON results go")
    parser.add_argument("--markdown", action="store_true", help="also print the summary as a Markdown table")
    return parser.parse_args(argv)


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Run one benchmark as a subprocess, echoing its output; returns its summary row."""
    json_path = args.out_dir / f"{name}.json"
    json_path.unlink(missing_ok=True)
    command = [sys.executable, str(BENCH / f"{name}.py"), "--device", args.device, "--size", args.size,
               "--json", str(json_path)]
    if not args.full:
        command.append("--quick")
    if args.vram_limit is not None:
        command += ["--vram-limit", str(args.vram_limit)]
    print(f"\n$ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    code = proc.wait()
    match = RATIO_LINE.search("".join(lines))
    row = {"name": name, "exit_code": code, "wall_s": time.perf_counter() - start,
           "ratio_line": match.group(0).strip() if match else None}
    if json_path.is_file():
        data = json.loads(json_path.read_text(encoding="utf-8"))
        row.update({k: data.get(k) for k in ("ratio", "target", "meets_target", "measured", "baseline",
                                             "measured_median_s", "baseline_median_s", "correct", "environment")})
    elif match:
        row["ratio"] = float(match.group("ratio"))
    return row


def _seconds(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def summary_rows(rows: list[dict]) -> list[list[str]]:
    table = []
    for r in rows:
        ratio = r.get("ratio")
        target = r.get("target")
        verdict = ("crashed" if r["exit_code"] and r.get("correct") is None else
                   "CHECK FAILED" if r["exit_code"] else
                   "-" if target is None else "meets" if r.get("meets_target") else "misses")
        table.append([r["name"], _seconds(r.get("measured_median_s")), _seconds(r.get("baseline_median_s")),
                      "-" if ratio is None else f"{ratio:.4g}x", "-" if target is None else f"<= {target:g}x",
                      verdict])
    return table


HEAD = ["benchmark", "measured", "baseline", "ratio", "target", "verdict"]


def print_table(table: list[list[str]]) -> None:
    widths = [max(len(HEAD[i]), *(len(row[i]) for row in table)) for i in range(len(HEAD))]
    print("  ".join(h.ljust(w) for h, w in zip(HEAD, widths)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def print_markdown(table: list[list[str]]) -> None:
    print("| " + " | ".join(HEAD) + " |")
    print("|" + "---|" * len(HEAD))
    for row in table:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_one(name, args) for name in args.only]
    mode = "full" if args.full else "quick"
    print(f"\n== summary: {mode} mode, device {args.device}, size {args.size}"
          + (f", vram limit {args.vram_limit:g} GB" if args.vram_limit else "") + " ==")
    table = summary_rows(rows)
    print_table(table)
    print()
    for r in rows:
        print(r["ratio_line"] or f"RATIO {r['name']} missing (exit code {r['exit_code']})")
    if args.markdown:
        print()
        print_markdown(table)
    summary = {"mode": mode, "device": args.device, "size": args.size, "vram_limit_gb": args.vram_limit,
               "benchmarks": rows}
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {args.out_dir}")
    return 0 if all(r["exit_code"] == 0 and r["ratio_line"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
