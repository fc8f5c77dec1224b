"""The training monitor: reading metrics.jsonl as it grows, series that stay small, the ETA, the chart
and the terminal dashboard. No torch: the files are written here the way ``RunLogs.metrics`` writes them.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engines.errors import InvalidRequestError
from engines.origin.training.chart import NO_DATA, chart_panels, write_chart
from engines.origin.training.dashboard import duration, follow, render_dashboard, sparkline
from engines.origin.training.monitor import MAX_POINTS, Downsampled, MetricsTail, RunMonitor, RunSeries, ema
from engines.origin.training.run_logs import truncate_metrics

ROOT = Path(__file__).resolve().parent.parent
EXPERTS = ("color", "line_art", "anatomy", "perspective", "lighting", "texture", "background", "face", "hair",
           "clothing", "composition", "screentone", "motion", "expression")


def training_line(step: int, *, loss: float | None = None, experts=EXPERTS, seconds: float = 0.5,
                  vram: bool = True) -> dict:
    loss = 1.0 / (1 + step / 100) if loss is None else loss
    memory = {"ram_mb": 2100.0 + step}
    if vram:
        memory.update(vram_mb=900.0, vram_peak_mb=1200.0)
    return {"step": step, "epoch": step / 100, "loss": loss,
            "losses": {"diffusion": 0.9 * loss, "line_art": 0.06, "color": 0.03, "anatomy": 0.12,
                       "perspective": 0.15, "color_harmony": 0.13, "expert_aux": 0.26},
            "experts": {e: {"aux_loss": 0.3 + i / 100, "routing": 1.0 / (i + 1)}
                        for i, e in enumerate(experts)},
            "lr": 0.0002, "lr_scale": 1.0, "grad_norm": 0.8, "skipped": False, "samples_per_s": 32.0,
            "seconds": seconds, "micro_batch": 8, "memory": memory}


def validation_line(step: int, loss: float = 0.21) -> dict:
    return {"step": step, "epoch": step / 100,
            "validation": {"loss": loss, "by_timestep": {"100": 0.05, "300": 0.12, "500": 0.2, "700": 0.3}}}


def write_lines(path: Path, records: list[dict], mode: str = "a") -> None:
    with path.open(mode, encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    folder = tmp_path / "runs" / "hana-style"
    folder.mkdir(parents=True)
    return folder


# -- reading the file ----------------------------------------------------------------------------------
def test_tail_keeps_a_half_written_line_until_it_is_finished(run: Path) -> None:
    path = run / "metrics.jsonl"
    second = json.dumps(training_line(2))
    path.write_text(json.dumps(training_line(1)) + "\n" + second[:40], encoding="utf-8")
    tail = MetricsTail(path)
    first = tail.read_new()
    assert [r["step"] for r in first.records] == [1] and not first.reset and first.bad_lines == 0
    assert tail.read_new().records == []  # nothing new: the half line stays pending
    with path.open("a", encoding="utf-8") as handle:
        handle.write(second[40:] + "\n" + json.dumps(training_line(3)) + "\n")
    again = tail.read_new()
    assert [r["step"] for r in again.records] == [2, 3] and not again.reset
    assert tail.offset == path.stat().st_size


def test_tail_reads_only_the_new_bytes(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = run / "metrics.jsonl"
    write_lines(path, [training_line(s) for s in range(1, 50)])
    tail = MetricsTail(path, chunk_bytes=4096)
    assert len(tail.read_new().records) == 49
    write_lines(path, [training_line(50)])
    read_sizes = []
    real_open = open

    def spying_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        real_read = handle.read

        def read(size=-1):
            data = real_read(size)
            read_sizes.append(len(data))
            return data
        handle.read = read
        return handle

    monkeypatch.setattr("builtins.open", spying_open)
    assert [r["step"] for r in tail.read_new().records] == [50]
    # the guard bytes before the offset, the new line, the end of the file: never the old lines
    assert sum(read_sizes) < 2 * len(json.dumps(training_line(50)))


def test_truncation_by_a_resumed_run_starts_the_series_over(run: Path) -> None:
    path = run / "metrics.jsonl"
    write_lines(path, [training_line(s, loss=1.0) for s in range(1, 21)])
    monitor = RunMonitor(run)
    assert monitor.refresh().step == 20
    inode = path.stat().st_ino
    assert truncate_metrics(path, after_step=10) == 10  # what RunLogs does on --resume: an atomic rewrite
    assert path.stat().st_ino != inode
    write_lines(path, [training_line(s, loss=2.0) for s in range(11, 14)])
    snapshot = monitor.refresh()
    assert snapshot.reset and snapshot.step == 13 and snapshot.records == 13
    xs, ys = snapshot.series["loss"]
    assert xs == list(range(1, 14)) and ys == [1.0] * 10 + [2.0] * 3
    assert not monitor.refresh().reset


def test_a_file_rewritten_in_place_or_removed_is_read_again(run: Path) -> None:
    path = run / "metrics.jsonl"
    write_lines(path, [training_line(s) for s in range(1, 4)])
    tail = MetricsTail(path)
    assert len(tail.read_new().records) == 3
    # Same inode, longer content (a copy tool writing over it): only the guard bytes can tell.
    with path.open("r+", encoding="utf-8") as handle:
        handle.seek(0)
        for step in range(100, 106):
            handle.write(json.dumps(training_line(step)) + "\n")
    batch = tail.read_new()
    assert batch.reset and [r["step"] for r in batch.records] == list(range(100, 106))
    # Shrunk in place.
    path.write_text(json.dumps(training_line(7)) + "\n", encoding="utf-8")
    batch = tail.read_new()
    assert batch.reset and [r["step"] for r in batch.records] == [7]
    path.unlink()
    assert tail.read_new().reset and tail.read_new() == tail.read_new()  # one reset, then quiet
    write_lines(path, [training_line(8)])
    assert [r["step"] for r in tail.read_new().records] == [8]


def test_garbage_lines_are_skipped_and_counted(run: Path) -> None:
    path = run / "metrics.jsonl"
    lines = [json.dumps(training_line(1)), "not json", "[1, 2, 3]", '{"step": "soon"}', "", "\x00\xff",
             '{"step": 2, "loss": NaN, "lr": Infinity, "losses": [1, 2], "experts": {"color": 3}}',
             '{"step": 3, "loss": 0.5, "experts": {"color": {"routing": "high"}}, "memory": null}',
             '{"step": 4, "loss": {"deep": {"deeper": {"deepest": {"too": {"far": 1.0}}}}}}',
             '{"step": 5, "loss": 0.4, "extra": {"anything": [1, {"x": 2}]}, "new_metric": 7}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    snapshot = RunMonitor(run).refresh()
    assert snapshot.bad_lines == 4  # not json, the list, the step that is not a number, the bytes
    assert snapshot.records == 5 and snapshot.step == 5
    assert snapshot.series["loss"] == ([1.0, 3.0, 5.0], [pytest.approx(1 / 1.01), 0.5, 0.4])
    assert "lr" in snapshot.series and snapshot.series["lr"][0] == [1.0]  # Infinity is a gap
    assert snapshot.series["new_metric"] == ([5.0], [7.0])
    assert snapshot.series["experts/color"] == ([2.0], [3.0])
    assert not any(name.endswith("/far") for name in snapshot.series)


def test_tiny_chunks_over_long_lines_and_huge_records_stay_bounded(run: Path, monkeypatch) -> None:
    from engines.origin.training import metrics_tail, monitor

    path = run / "metrics.jsonl"
    record = training_line(1)
    record["note"] = "線画の重み"  # multi-byte characters split across reads
    write_lines(path, [record, training_line(2)])
    assert [r["step"] for r in MetricsTail(path, chunk_bytes=7).read_new().records] == [1, 2]
    monkeypatch.setattr(metrics_tail, "MAX_LINE_BYTES", 100)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("x" * 1000 + "\n" + json.dumps({"step": 3, "loss": 0.1}) + "\n")
    tail = MetricsTail(path, chunk_bytes=64)
    batch = tail.read_new()
    # the two training lines are over the (patched) limit too: three lines dropped, not held in memory
    assert [r["step"] for r in batch.records] == [3] and batch.bad_lines == 3
    wide = {"step": 4, **{f"metric_{i}": float(i) for i in range(1000)}}
    series = RunSeries()
    series.add(wide)
    assert len(series.series) == monitor.MAX_SERIES


def test_null_values_are_gaps_and_skipped_steps_are_counted(run: Path) -> None:
    skipped = training_line(2)
    skipped.update(loss=None, grad_norm=None, skipped=True)
    skipped["experts"]["color"]["aux_loss"] = None
    write_lines(run / "metrics.jsonl", [training_line(1), skipped, training_line(3)])
    snapshot = RunMonitor(run).refresh()
    assert snapshot.series["loss"][0] == [1.0, 3.0]
    assert snapshot.series["grad_norm"][0] == [1.0, 3.0]
    assert snapshot.series["experts/color/aux_loss"][0] == [1.0, 3.0]
    assert snapshot.series["lr"][0] == [1.0, 2.0, 3.0]
    assert snapshot.skipped_steps == 1


def test_validation_lines_make_their_own_series(run: Path) -> None:
    write_lines(run / "metrics.jsonl", [training_line(s) for s in range(1, 6)] + [validation_line(5, 0.25)]
                + [training_line(6), validation_line(10, 0.2)])
    snapshot = RunMonitor(run).refresh()
    assert snapshot.series["validation/loss"] == ([5.0, 10.0], [0.25, 0.2])
    assert snapshot.series["validation/by_timestep/300"][1] == [0.12, 0.12]
    assert snapshot.series["loss"][0] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert snapshot.latest == validation_line(10, 0.2) and snapshot.step == 10 and snapshot.epoch == 0.1
    assert snapshot.last_values["loss"] == pytest.approx(1 / 1.06)
    assert sorted(snapshot.names("experts/", "/routing")) == sorted(EXPERTS)
    assert "diffusion" in snapshot.names("losses/")


# -- downsampling --------------------------------------------------------------------------------------
def test_buckets_hold_the_true_means_of_their_step_ranges() -> None:
    rng = random.Random(1)
    raw: list[tuple[int, float]] = []
    series = RunSeries()
    for line in range(1, 50_001):
        step = 3 * line + rng.randrange(3)  # uneven steps, as with a log_every that changed
        value = None if line % 211 == 0 else rng.gauss(1.0 / (1 + line / 5000), 0.1)
        series.add({"step": step, "loss": value})
        if value is not None:
            raw.append((step, value))
        if line % 5000 == 0:
            assert len(series.series["loss"]) <= MAX_POINTS
    loss = series.series["loss"]
    assert loss.peak <= MAX_POINTS and len(loss) > MAX_POINTS // 2 and loss.count == len(raw)
    buckets = loss.buckets()
    assert sum(b.count for b in buckets) == len(raw)
    by_bucket: dict[int, list[tuple[int, float]]] = {}
    for step, value in raw:
        by_bucket.setdefault(step // loss.width, []).append((step, value))
    assert len(by_bucket) == len(buckets)
    for bucket in buckets:
        members = by_bucket[bucket.start // loss.width]
        assert bucket.stop - bucket.start == loss.width
        assert all(bucket.start <= s < bucket.stop for s, _ in members)
        assert bucket.count == len(members)
        assert bucket.mean == pytest.approx(sum(v for _, v in members) / len(members), rel=1e-12)
        assert bucket.x == pytest.approx(sum(s for s, _ in members) / len(members), rel=1e-12)
        assert (bucket.low, bucket.high) == (min(v for _, v in members), max(v for _, v in members))
    xs, ys = loss.points()
    assert xs == [b.x for b in buckets] and ys == [b.mean for b in buckets]


def test_a_million_points_stay_within_max_points_and_late_steps_land_in_their_bucket() -> None:
    series = Downsampled()
    for step in range(1_000_000):
        series.add(step, 1.0)
    assert series.peak <= MAX_POINTS and len(series) <= MAX_POINTS and series.count == 1_000_000
    assert series.width == 512 and len(series.points()[0]) == len(series)
    before = len(series)
    series.add(10, 3.0)  # a step from the past: merged into its bucket, nothing is lost
    first = series.buckets()[0]
    assert len(series) == before and first.count == 513 and first.high == 3.0
    assert first.mean == pytest.approx((512 + 3.0) / 513)
    with pytest.raises(ValueError):
        Downsampled(max_points=1)


def test_ema_is_tensorboards_debiased_smoothing() -> None:
    values = [4.0, 2.0, 8.0, 1.0]
    assert ema(values, 0.0) == values
    smoothed = ema(values, 0.5)
    assert smoothed[0] == 4.0  # debiased: the first point is not pulled towards zero
    assert smoothed[1] == pytest.approx((0.5 * 0.5 * 4 + 0.5 * 2) / 0.75)
    assert smoothed == pytest.approx([4.0, 2 / 0.75, 5 / 0.875, 3 / 0.9375])
    assert ema([1.0, float("nan"), 3.0], 0.5)[1] != ema([1.0, float("nan"), 3.0], 0.5)[1]  # passes through
    assert ema([1.0, float("nan"), 3.0], 0.5)[2] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)
    assert ema([], 0.9) == []
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            ema(values, bad)


# -- timing --------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_eta_from_the_status_file_and_the_observed_rate(run: Path) -> None:
    (run / "status.json").write_text(json.dumps({"state": "running", "total_steps": 1000}), encoding="utf-8")
    write_lines(run / "metrics.jsonl", [training_line(s, seconds=0.5) for s in range(10, 110, 10)])
    clock = FakeClock()
    monitor = RunMonitor(run, clock=clock)
    first = monitor.refresh()
    # no history yet: the lines' own step times, 0.5 s per step
    assert first.total_steps == 1000 and first.step == 100 and first.progress == pytest.approx(0.1)
    assert first.rate_source == "step times" and first.eta_s == pytest.approx(900 * 0.5)
    assert first.seconds_per_step == pytest.approx(0.5) and first.images_per_s == pytest.approx(32.0)
    assert first.epoch_s == pytest.approx(100 * 0.5)  # 100 steps per epoch (epoch = step / 100)
    clock.now += 20.0
    write_lines(run / "metrics.jsonl", [training_line(s, seconds=0.5) for s in range(110, 210, 10)])
    second = monitor.refresh()
    # 100 steps in 20 s of wall clock: data loading, samples and checkpoints included
    assert second.rate_source == "observed" and second.seconds_per_step == pytest.approx(0.2)
    assert second.eta_s == pytest.approx(800 * 0.2) and second.epoch_s == pytest.approx(100 * 0.2)
    status = {"total_steps": 400, "epoch_seconds": 33.0}
    (run / "status.json").write_text(json.dumps(status), encoding="utf-8")
    third = monitor.refresh()
    assert third.total_steps == 400 and third.epoch_s == 33.0
    assert RunMonitor(run, total_steps=5000).refresh().total_steps == 5000  # the argument wins
    (run / "status.json").write_text("{half", encoding="utf-8")
    assert RunMonitor(run).refresh().eta_s is None


# -- the chart -----------------------------------------------------------------------------------------
def _png(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_chart_of_a_run(run: Path, tmp_path: Path) -> None:
    records = [training_line(s, vram=False) for s in range(1, 501)]
    records.insert(150, validation_line(150))
    write_lines(run / "metrics.jsonl", records + [validation_line(500, 0.18)])
    output = write_chart(run, tmp_path / "charts" / "progress.png", smoothing=0.9)
    width, height = _png(output)
    assert output.stat().st_size > 20_000 and 1000 <= width <= 3000 and 700 <= height <= 3000
    assert not list(output.parent.glob(".*.tmp"))
    panels = chart_panels(RunMonitor(run).refresh(), smoothing=0.9)
    assert len(panels) == 9
    assert [p.title for p in panels][:2] == ["Total loss", "Diffusion and validation loss"]
    assert panels[0].log_y and not panels[3].log_y  # the loss fell from 1.0 to 0.17
    assert any(line.label == "validation" and line.ys == [0.21, 0.18] for line in panels[1].lines)
    assert {line.label for line in panels[3].lines} == set(EXPERTS)
    assert [line.label for line in panels[8].lines] == ["RAM"]  # no VRAM on this machine


def test_chart_of_a_run_that_just_started(run: Path, tmp_path: Path) -> None:
    write_lines(run / "metrics.jsonl", [training_line(1, experts=()), {"step": 2, "loss": None}])
    output = write_chart(run, tmp_path / "early.png")
    assert _png(output)[0] > 500
    empty = [p.title for p in chart_panels(RunMonitor(run).refresh()) if not p.lines]
    assert empty == ["Expert auxiliary losses", "Expert routing weights"]
    (run / "metrics.jsonl").write_text("", encoding="utf-8")
    assert _png(write_chart(run, tmp_path / "empty.png"))[0] > 500


def test_chart_without_metrics_says_so(tmp_path: Path) -> None:
    (tmp_path / "new-run").mkdir()
    with pytest.raises(InvalidRequestError, match=r"The run folder .*new-run has no metrics yet; "):
        write_chart(tmp_path / "new-run", tmp_path / "chart.png")
    assert not (tmp_path / "chart.png").exists()
    assert NO_DATA == "no data yet"


def test_the_monitor_modules_import_neither_torch_nor_matplotlib() -> None:
    code = ("import sys; import engines.origin.training.monitor, engines.origin.training.chart, "
            "engines.origin.training.dashboard; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


# -- the terminal dashboard ----------------------------------------------------------------------------
def test_dashboard_shows_the_numbers(run: Path) -> None:
    (run / "status.json").write_text(json.dumps({"total_steps": 400}), encoding="utf-8")
    lines = [training_line(s) for s in range(1, 101)]
    lines[-1]["loss"] = 0.4321
    write_lines(run / "metrics.jsonl", lines + [validation_line(100, 0.2345)])
    text = render_dashboard(RunMonitor(run).refresh(), 90, state="running (pid 4242)")
    assert "hana-style" in text and "state: running (pid 4242)" in text
    assert "step 100 / 400" in text and "epoch 1.00" in text and "25.0 %" in text
    assert "loss 0.4321" in text and "EMA 0." in text and "validation loss 0.2345 (step 100)" in text
    assert "images/s 32.0" in text and f"ETA {duration(300 * 0.5)}" in text and "ETA 2 min 30 s" in text
    assert "per epoch 50 s" in text and "LR 2.00e-04" in text and "RAM 2,200 MB" in text
    assert "VRAM 900 MB (peak 1,200)" in text and "skipped steps: 0" in text
    expert_lines = [line for line in text.splitlines() if " aux 0." in line and "routing" in line]
    assert len(expert_lines) == 14 and "color" in expert_lines[0] and "routing 1.00" in expert_lines[0]
    assert any(ch in text for ch in "▁▂▃▄▅▆▇█")
    assert max(len(line) for line in text.splitlines()) <= 90


def test_dashboard_before_the_first_line_and_helpers(run: Path) -> None:
    text = render_dashboard(RunMonitor(run).refresh())
    assert "waiting for the first logged step" in text
    assert sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 8) == "▁▂▃▄▅▆▇█"
    assert len(sparkline(list(range(1000)), 40)) == 40 and sparkline([], 10) == ""
    assert duration(None) == "-" and duration(3 * 86400 + 7200) == "3 d 02 h"
    assert duration(3725) == "1 h 02 min" and duration(250) == "4 min 10 s"


def test_follow_draws_until_the_run_ends_then_once_more(run: Path) -> None:
    write_lines(run / "metrics.jsonl", [training_line(1)])
    answers = iter([True, True, False])
    out = io.StringIO()
    appended = []

    def is_running() -> bool:
        answer = next(answers)
        if not answer:  # the run's last line arrives as it ends: the final frame must show it
            write_lines(run / "metrics.jsonl", [training_line(77)])
            appended.append(77)
        return answer

    assert follow(run, interval_s=0, is_running=is_running, out=out, clear=True, width=80) == 0
    frames = out.getvalue().split("\x1b[H\x1b[2J")[1:]
    assert len(frames) == 3 and appended == [77]
    assert "step 1" in frames[0] and "step 77" in frames[-1]


def test_follow_stops_quietly_on_ctrl_c_and_after_max_frames(run: Path) -> None:
    write_lines(run / "metrics.jsonl", [training_line(1)])
    calls = []

    def interrupted() -> bool:
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return True

    out = io.StringIO()
    assert follow(run, interval_s=0, is_running=interrupted, out=out, clear=False) == 0
    assert out.getvalue().count("Origin run hana-style") == 2
    out = io.StringIO()
    assert follow(run, interval_s=0, is_running=lambda: True, out=out, clear=False, max_frames=3) == 0
    assert out.getvalue().count("Origin run hana-style") == 3
