"""The training monitor's refresh on a day-ten run against a day-one run: does its cost grow with the run?

Writes two synthetic ``metrics.jsonl`` files of realistic training lines (14 experts, every art loss,
memory, a validation line every 500 lines, a skipped step with nulls now and then, logged every
10 steps as the trainer does on long runs): 1,000 lines and 1,000,000 lines (about 1.6 GB). For
each, a ``RunMonitor`` reads the whole file once (reported: the first full read), then, repeatedly,
10 more lines are appended (not timed) and what a Training tab refresh costs is timed:
``refresh()`` and the nine panels' plotted series with their EMA (``chart.chart_panels``), without
drawing them. The two sizes alternate, so both see the same machine.

Ends with ``RATIO metrics_refresh_1m_vs_1k = x.xx (target <= 2)``: the 1M-line refresh over the
1k-line one. Exits 1 only when a correctness check fails (more than ``MAX_POINTS`` points in a
series, appended lines not seen, a bucket count that does not add up to the lines read).

    python bench/bench_metrics_refresh.py [--quick] [--lines N] [--repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402

try:
    import resource
except ImportError:  # Windows
    resource = None

NAME = "metrics_refresh_1m_vs_1k"
TARGET = 2.0
SMALL_LINES = 1_000
APPEND_LINES = 10
LOG_EVERY = 10
EXPERTS = ("color", "line_art", "anatomy", "perspective", "lighting", "texture", "background", "face", "hair",
           "clothing", "composition", "screentone", "motion", "expression")
ART_TERMS = ("line_art", "color", "anatomy", "perspective", "color_harmony")
BY_TIMESTEP = json.dumps({"100": 0.05, "300": 0.12, "500": 0.2, "700": 0.3, "900": 0.38})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/bench_metrics_refresh.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 lines, not 1,000,000 (smoke tests)")
    parser.add_argument("--lines", type=int, default=None, help="lines of the long run (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed refreshes per size (default 30, quick 5)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    args.lines = args.lines or (20_000 if args.quick else 1_000_000)
    args.repeats = args.repeats or (5 if args.quick else 30)
    return args


def _templates(count: int = 64) -> list[str]:
    """The part of a training line after its loss: real-looking floats (full repr, as json.dumps
    writes torch's numbers), varied so that the parser cannot profit from repetition."""
    rng = random.Random(0)
    out = []
    for _ in range(count):
        record = {
            "losses": {"diffusion": rng.uniform(0.2, 0.5), **{t: rng.uniform(0.01, 0.2) for t in ART_TERMS},
                       "expert_aux": rng.uniform(0.1, 0.4)},
            "experts": {e: {"aux_loss": rng.uniform(0.1, 0.5), "routing": rng.uniform(0.0, 1.0)}
                        for e in EXPERTS},
            "lr": 0.0002 * rng.uniform(0.5, 1.0), "lr_scale": 1.0, "grad_norm": rng.uniform(0.2, 2.0),
            "skipped": False, "samples_per_s": rng.uniform(30, 40), "seconds": rng.uniform(0.18, 0.25),
            "micro_batch": 8, "memory": {"ram_mb": rng.uniform(2000, 2200), "vram_mb": rng.uniform(880, 920),
                                         "vram_peak_mb": 1200.0},
        }
        out.append(json.dumps(record)[1:])  # without its "{": the line starts with step, epoch, loss
    return out


@functools.lru_cache(maxsize=None)
def _loss_text(block: int, wobble: int) -> str:
    """A loss that falls with the run and wobbles from line to line, formatted once per value: the
    1M-line file is written in seconds, and json.dumps' float reprs are what the parser reads."""
    return repr(0.05 + 0.4 / math.sqrt(1 + block + wobble / 7))


def lines_for(first: int, count: int, templates: list[str]) -> str:
    """``count`` lines from line number ``first`` (step = LOG_EVERY * number, 200 lines an epoch): a
    falling loss, a validation line every 500 lines and a skipped step (null loss) every 997."""
    out = []
    for number in range(first, first + count):
        epochs, rest = divmod(number, 200)
        head = f'{{"step": {number * LOG_EVERY}, "epoch": {epochs}.{rest * 5:03d}, '
        if number % 500 == 0:
            validation = _loss_text(number // 1000, 0)
            out.append(f'{head}"validation": {{"loss": {validation}, "by_timestep": {BY_TIMESTEP}}}}}\n')
            continue
        rest = templates[number % len(templates)]
        loss = _loss_text(number // 1000, number % 7)
        if number % 997 == 0:
            loss, rest = "null", rest.replace('"skipped": false', '"skipped": true')
        out.append(f'{head}"loss": {loss}, {rest}\n')
    return "".join(out)


def write_run(folder: Path, lines: int, templates: list[str]) -> Path:
    folder.mkdir(parents=True)
    status = {"state": "running", "total_steps": 2 * lines * LOG_EVERY}
    (folder / "status.json").write_text(json.dumps(status), encoding="utf-8")
    path = folder / "metrics.jsonl"
    with path.open("wb") as handle:
        for first in range(1, lines + 1, 20_000):
            handle.write(lines_for(first, min(20_000, lines + 1 - first), templates).encode("utf-8"))
    return path


def first_reads(report: harness.Report, folder: Path, sizes: dict[str, int], templates: list[str]) -> dict:
    """Write each run and read it whole once: its monitor, and the seconds that first read took."""
    from engines.origin.training.monitor import RunMonitor

    runs = {}
    for label, lines in sizes.items():
        started = time.perf_counter()
        path = write_run(folder / label, lines, templates)
        megabytes = path.stat().st_size / 2**20
        seconds = time.perf_counter() - started
        print(f"wrote {lines:,} lines ({megabytes:,.0f} MB) in {seconds:.1f} s", flush=True)
        monitor = RunMonitor(path.parent)
        seconds, snapshot = harness.timed(monitor.refresh)
        print(f"first full read of {lines:,} lines: {seconds:.2f} s", flush=True)
        report.check(f"{label}: every line read", snapshot.step == lines * LOG_EVERY)
        runs[label] = {"monitor": monitor, "lines": lines, "first_read_s": seconds, "file_mb": megabytes,
                       "samples": [], "points": 0}
    return runs


def time_refreshes(report: harness.Report, runs: dict, repeats: int, templates: list[str]) -> None:
    """Append APPEND_LINES lines (not timed), then time refresh() + the panels' series; sizes alternate."""
    from engines.origin.training.chart import chart_panels

    for _ in range(repeats):
        for label, run in runs.items():
            monitor = run["monitor"]
            with monitor.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(lines_for(run["lines"] + 1, APPEND_LINES, templates))
            run["lines"] += APPEND_LINES
            start = time.perf_counter()
            snapshot = monitor.refresh()
            panels = chart_panels(snapshot)
            run["samples"].append(time.perf_counter() - start)
            report.check(f"{label}: appended lines seen", snapshot.step == run["lines"] * LOG_EVERY)
            report.check(f"{label}: the panels have their lines", sum(len(p.lines) for p in panels) >= 40)
            run["points"] = max(len(xs) for xs, _ in snapshot.series.values())


def check_series(report: harness.Report, runs: dict) -> None:
    from engines.origin.training.monitor import MAX_POINTS

    for label, run in runs.items():
        series = run["monitor"].data.series
        peak = max(s.peak for s in series.values())
        report.check(f"{label}: at most {MAX_POINTS} points per series at any time", peak <= MAX_POINTS)
        lr = series["lr"]  # on every training line, skipped ones too
        training_lines = run["lines"] - run["lines"] // 500
        report.check(f"{label}: bucket counts add up to the training lines read",
                     sum(b.count for b in lr.buckets()) == lr.count == training_lines)
        for key, value in (("peak_points_per_series", peak), ("series", len(series)),
                           ("bucket_width_steps", lr.width), ("first_read_s", run["first_read_s"]),
                           ("file_mb", run["file_mb"])):
            report.metrics[f"{label}_{key}"] = value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = harness.Report(NAME, f"a refresh of the training monitor, {args.lines:,}-line run vs "
                                  f"{SMALL_LINES:,}-line run", TARGET, args)
    templates = _templates()
    with tempfile.TemporaryDirectory(prefix="inkframe-bench-metrics-") as tmp:
        runs = first_reads(report, Path(tmp), {"small": SMALL_LINES, "big": args.lines}, templates)
        time_refreshes(report, runs, args.repeats, templates)
        check_series(report, runs)

    report.info = harness.environment(args, lines_small=SMALL_LINES, lines_big=args.lines,
                                      repeats=args.repeats)
    big, small = runs["big"], runs["small"]
    measured = report.add(f"refresh + plotted series, {args.lines:,}-line run", big["samples"],
                          note=f"{big['points']} points per series, {APPEND_LINES} new lines")
    baseline = report.add(f"refresh + plotted series, {SMALL_LINES:,}-line run", small["samples"],
                          note=f"{small['points']} points per series, {APPEND_LINES} new lines")
    report.add(f"first full read, {args.lines:,} lines", [big["first_read_s"]],
               note=f"{big['file_mb']:,.0f} MB, {args.lines / big['first_read_s']:,.0f} lines/s")
    report.add(f"first full read, {SMALL_LINES:,} lines", [small["first_read_s"]],
               note=f"{small['file_mb']:,.1f} MB")
    m = report.metrics
    report.note(f"peak points per series: {m['big_peak_points_per_series']} on the long run, "
                f"{m['small_peak_points_per_series']} on the short one, {m['big_series']} series; "
                f"bucket width {m['big_bucket_width_steps']} steps on the long run")
    if resource is not None:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        m["peak_rss_mb"] = peak_mb
        report.note(f"peak RSS of the whole benchmark process: {peak_mb:,.0f} MB")
    return report.finish(measured, baseline)


if __name__ == "__main__":
    sys.exit(harness.run(main))
