"""Watching a run from outside: ``RunMonitor(run).refresh()`` turns ``<run>/metrics.jsonl`` into plottable
series, the latest numbers and an ETA, for the Training tab, ``write_chart`` and the terminal dashboard.

The trainer appends one JSON line per logged step and flushes it, so a reader sees a file that grows
while it reads, can end in half a line (a kill -9), and is rewritten shorter under a new inode when a
resumed run drops the lines past its checkpoint. Three rules follow:

1. ``MetricsTail`` (metrics_tail.py) reads only the bytes appended since its last read, keeps an unfinished last line for
   next time, and starts over (saying so) when the file shrank, was replaced or was rewritten in place.
   It opens the file for each read and closes it at once: on Windows an open handle would make the
   trainer's atomic rewrite (``os.replace``) fail.
2. Each line is parsed once and folded into ``Downsampled`` series of at most ``MAX_POINTS`` points, so
   the memory and the cost of a refresh stay the same on day one and day ten of a run.
3. Anything that is not a JSON object is skipped and counted; null, NaN and Inf are gaps; unknown keys
   become series of their own (the validation lines, the SR stage's ``l1``), up to ``MAX_SERIES``.

Nothing here imports torch or matplotlib: the snapshot is plain data.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from math import isfinite
from pathlib import Path
from typing import Any, Callable, Optional

from engines.origin.training.metrics_tail import MetricsTail
from engines.origin.training.run_control import read_status

MAX_POINTS = 2000
MAX_SERIES = 256  # a record with a huge unknown dict must not grow the monitor without bound
MAX_DEPTH = 4  # experts/<name>/aux_loss and validation/by_timestep/<t> are 3 deep
RECENT_RECORDS = 20  # images/s and step time are averaged over this many training lines
RATE_WINDOW_S = 120.0  # the observed steps-per-second looks this far back
RATE_MIN_SPAN_S = 10.0  # ... and needs at least this much history (one logged line is ~10 steps)
_NOT_SERIES = ("step", "epoch")


def ema(values: list[float], smoothing: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average divided by ``1 - smoothing**n``, so the
    first points are not pulled towards zero; ``smoothing`` 0 returns the values, non-finite ones pass."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    out: list[float] = []
    append, keep, last, weight = out.append, 1.0 - smoothing, 0.0, 0.0
    if isfinite(sum(values)):  # all finite, the usual case: the loop without a test (3x faster)
        for value in values:
            last = last * smoothing + keep * value
            weight = weight * smoothing + keep
            append(last / weight)
        return out
    for value in values:
        if isfinite(value):
            last = last * smoothing + keep * value
            weight = weight * smoothing + keep
            append(last / weight)
        else:
            append(value)
    return out


# -- series that stay small -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bucket:
    start: int  # steps start <= step < stop
    stop: int
    count: int
    x: float  # the mean step of its points
    mean: float
    low: float
    high: float


class Downsampled:
    """One series as at most ``max_points`` buckets of ``width`` steps each (``step // width``).

    When a new bucket would make one too many, the width doubles (as often as needed to use at most
    half the buckets) and the buckets that now share a step range merge. Why this scheme: counts and
    sums merge exactly, so every point is the true mean of its step range however often it was merged
    (decimation drops points; LTTB needs the whole series again for each refresh); bucket edges depend
    on the step alone, not on when a refresh happened, so the curve never jitters; min and max keep a
    loss spike visible after it is averaged away; each point costs O(1) and a widening O(max_points),
    once per doubling of the run. The newest bucket lives in attributes: almost every point lands
    there, and that path is the per-line cost of reading a long file.
    """

    __slots__ = ("max_points", "width", "count", "peak", "last_x", "last_y", "_keys", "_n", "_sx", "_sy",
                 "_lo", "_hi", "_mx", "_my", "_key", "_bn", "_bsx", "_bsy", "_blo", "_bhi")

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        if max_points < 4:  # keys -1 and 0 (steps either side of 0) never merge: 2 must fit in half
            raise ValueError(f"max_points must be at least 4, got {max_points}")
        self.max_points = max_points
        self.width = 1
        self.count = 0  # points seen
        self.peak = 0  # the most buckets held at any time
        self.last_x: Optional[int] = None
        self.last_y: Optional[float] = None
        # closed buckets (key, count, sums, extremes) and their means, ready to plot
        self._keys: list[int] = []
        self._n: list[int] = []
        self._sx: list[float] = []
        self._sy: list[float] = []
        self._lo: list[float] = []
        self._hi: list[float] = []
        self._mx: list[float] = []
        self._my: list[float] = []
        self._key: Optional[int] = None  # the newest bucket
        self._bn, self._bsx, self._bsy, self._blo, self._bhi = 0, 0.0, 0.0, 0.0, 0.0

    def __len__(self) -> int:
        return len(self._keys) + (self._key is not None)

    def add(self, x: int, y: float) -> None:
        self.count += 1
        self.last_x = x
        self.last_y = y
        key = x // self.width
        if key == self._key:
            self._bn += 1
            self._bsx += x
            self._bsy += y
            if y < self._blo:
                self._blo = y
            elif y > self._bhi:
                self._bhi = y
            return
        self._place(key, x, y)

    def _place(self, key: int, x: int, y: float) -> None:
        if self._key is None:
            self._open(key, x, y)
            self.peak = max(self.peak, 1)
            return
        if key < self._key:  # an older step than the newest bucket: rare (a resumed run that kept its lines)
            i = bisect_left(self._keys, key)
            if i < len(self._keys) and self._keys[i] == key:
                self._n[i] += 1
                self._sx[i] += x
                self._sy[i] += y
                self._lo[i], self._hi[i] = min(self._lo[i], y), max(self._hi[i], y)
                self._mx[i], self._my[i] = self._sx[i] / self._n[i], self._sy[i] / self._n[i]
                return
        if len(self._keys) + 1 >= self.max_points:  # a new bucket would be one too many
            self._widen()
            self.count -= 1
            self.add(x, y)
            return
        if key > self._key:
            self._keys.append(self._key)
            self._n.append(self._bn)
            self._sx.append(self._bsx)
            self._sy.append(self._bsy)
            self._lo.append(self._blo)
            self._hi.append(self._bhi)
            self._mx.append(self._bsx / self._bn)
            self._my.append(self._bsy / self._bn)
            self._open(key, x, y)
        else:
            columns = (self._keys, self._n, self._sx, self._sy, self._lo, self._hi, self._mx, self._my)
            for column, value in zip(columns, (key, 1, float(x), y, y, y, float(x), y)):
                column.insert(i, value)
        self.peak = max(self.peak, len(self._keys) + 1)

    def _open(self, key: int, x: int, y: float) -> None:
        self._key = key
        self._bn, self._bsx, self._bsy, self._blo, self._bhi = 1, float(x), y, y, y

    def _widen(self) -> None:
        """Double the width as often as it takes to need at most half the buckets, merging those that
        now share a step range (exact: counts and sums add). Doubling once can merge nothing: with a
        line every 10 steps, keys 10, 20, 30 only meet once the width passes 10. Half, so that the next
        widening is as far away as the run is long."""
        keys = self._keys + [self._key]
        shift = 1
        while sum(a >> shift != b >> shift for a, b in zip(keys, keys[1:])) >= self.max_points // 2:
            shift += 1
        shifted = [key >> shift for key in keys]  # floor division by 2**shift, negative steps too
        starts = [0] + [i for i in range(1, len(keys)) if shifted[i] != shifted[i - 1]]
        spans = list(zip(starts, starts[1:] + [len(keys)]))
        merged = [[shifted[a] for a, _ in spans]]
        for column, combine in ((self._n + [self._bn], sum), (self._sx + [self._bsx], sum),
                                (self._sy + [self._bsy], sum), (self._lo + [self._blo], min),
                                (self._hi + [self._bhi], max)):
            merged.append([combine(column[a:b]) for a, b in spans])
        self.width <<= shift
        self._keys, self._n, self._sx, self._sy, self._lo, self._hi = merged
        self._key, self._bn, self._bsx, self._bsy, self._blo, self._bhi = (column.pop() for column in merged)
        self._mx = [sx / n for n, sx in zip(self._n, self._sx)]
        self._my = [sy / n for n, sy in zip(self._n, self._sy)]

    def points(self) -> tuple[list[float], list[float]]:
        """(mean step, mean value) per bucket, oldest first: new lists, safe to keep."""
        if self._key is None:
            return [], []
        return self._mx + [self._bsx / self._bn], self._my + [self._bsy / self._bn]

    def band(self) -> tuple[list[float], list[float]]:
        """(min, max) per bucket, the spread each point of ``points()`` stands for."""
        if self._key is None:
            return [], []
        return self._lo + [self._blo], self._hi + [self._bhi]

    def buckets(self) -> list[Bucket]:
        xs, ys = self.points()
        lows, highs = self.band()
        keys = self._keys + ([self._key] if self._key is not None else [])
        counts = self._n + [self._bn]
        return [Bucket(k * self.width, (k + 1) * self.width, n, x, y, lo, hi)
                for k, n, x, y, lo, hi in zip(keys, counts, xs, ys, lows, highs)]


class _Node:
    """Where a key of a record goes: its series (numbers) or the nodes of its keys (a nested dict)."""

    __slots__ = ("series", "children")

    def __init__(self) -> None:
        self.series: Optional[Downsampled] = None
        self.children: dict[str, _Node] = {}


class RunSeries:
    """Every number of every record as a series named by its path (``loss``, ``losses/color``,
    ``experts/color/routing``, ``memory/ram_mb``, ``validation/loss``...), x being the step."""

    def __init__(self, *, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self.clear()

    def clear(self) -> None:
        self.series: dict[str, Downsampled] = {}
        self._root = _Node()
        self._nodes = 0
        self.latest: Optional[dict[str, Any]] = None
        self.step: Optional[int] = None
        self.epoch: Optional[float] = None
        self.records = 0
        self.bad_lines = 0
        self.skipped_steps = 0
        self.first_step_epoch: Optional[tuple[int, float]] = None  # for steps per epoch
        self.recent_images_per_s: deque[float] = deque(maxlen=RECENT_RECORDS)
        self.recent_step_seconds: deque[float] = deque(maxlen=RECENT_RECORDS)

    def add(self, record: dict[str, Any]) -> None:
        """Fold one record in; one without a usable step is counted as a bad line."""
        step = record.get("step")
        if type(step) is not int:
            if not _finite(step):
                self.bad_lines += 1
                return
            step = int(step)
        self.records += 1
        self.latest, self.step = record, step
        epoch = record.get("epoch")
        if _finite(epoch):
            self.epoch = float(epoch)
            if self.first_step_epoch is None:
                self.first_step_epoch = (step, self.epoch)
        if record.get("skipped") is True:
            self.skipped_steps += 1
        for recent, key in ((self.recent_images_per_s, "samples_per_s"),
                            (self.recent_step_seconds, "seconds")):
            value = record.get(key)
            if _finite(value) and value > 0:
                recent.append(float(value))
        self._walk(self._root, record, step, "", 1)

    def _walk(self, node: _Node, values: dict[str, Any], step: int, prefix: str, depth: int) -> None:
        children = node.children
        for key, value in values.items():
            child = children.get(key)
            if child is None:
                if (depth == 1 and key in _NOT_SERIES) or self._nodes >= 2 * MAX_SERIES:
                    continue
                child = children[key] = _Node()
                self._nodes += 1
            kind = type(value)
            if kind is float or kind is int:
                if child.series is None:
                    if len(self.series) >= MAX_SERIES:
                        continue
                    child.series = self.series[f"{prefix}{key}"] = Downsampled(self.max_points)
                if isfinite(value):
                    child.series.add(step, value)
            elif kind is dict and depth < MAX_DEPTH:
                self._walk(child, value, step, f"{prefix}{key}/", depth + 1)

    def steps_per_epoch(self) -> Optional[float]:
        if self.first_step_epoch is None or self.step is None or self.epoch is None:
            return None
        first_step, first_epoch = self.first_step_epoch
        if self.epoch <= first_epoch or self.step <= first_step:
            return None
        return (self.step - first_step) / (self.epoch - first_epoch)


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


# -- the monitor ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MonitorSnapshot:
    """What a run looks like now: plain data, shared by the Training tab, the chart and the dashboard."""

    run_dir: Path
    has_metrics: bool  # metrics.jsonl exists
    series: dict[str, tuple[list[float], list[float]]]  # name -> (steps, values), at most MAX_POINTS each
    bands: dict[str, tuple[list[float], list[float]]]  # name -> (min, max) of each point's steps
    last_values: dict[str, float]  # name -> the newest raw value (not a bucket mean)
    latest: Optional[dict[str, Any]]  # the newest record of any kind
    step: Optional[int]
    epoch: Optional[float]
    total_steps: Optional[int]
    records: int
    bad_lines: int
    skipped_steps: int
    images_per_s: Optional[float]  # mean of the last RECENT_RECORDS training lines
    seconds_per_step: Optional[float]
    rate_source: str  # "observed" (wall clock between refreshes), "step times" (the lines' seconds) or ""
    eta_s: Optional[float]
    epoch_s: Optional[float]  # the last epoch's measured time (status.json), else estimated
    reset: bool  # the file was replaced or truncated since the previous refresh

    @property
    def run_name(self) -> str:
        return self.run_dir.name

    @property
    def progress(self) -> Optional[float]:
        if not self.total_steps or self.step is None:
            return None
        return min(1.0, max(0.0, self.step / self.total_steps))

    def names(self, prefix: str, suffix: str = "") -> list[str]:
        """The middle parts of the series named ``prefix<name>suffix``: ``names("experts/", "/routing")``."""
        out = []
        for name in self.series:
            middle = name[len(prefix):len(name) - len(suffix)]
            if name.startswith(prefix) and name.endswith(suffix) and middle and "/" not in middle:
                out.append(middle)
        return out


class RunMonitor:
    """Keeps a ``MetricsTail`` and a ``RunSeries`` of one run; each ``refresh()`` reads only what is new."""

    def __init__(self, run_dir: Path, *, total_steps: Optional[int] = None, max_points: int = MAX_POINTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.total_steps = total_steps
        self.clock = clock
        self.tail = MetricsTail(self.metrics_path)
        self.data = RunSeries(max_points=max_points)
        self._seen: deque[tuple[float, int]] = deque()  # (clock, step) at each refresh, RATE_WINDOW_S back

    def refresh(self) -> MonitorSnapshot:
        reset = False
        for batch in self.tail.batches():
            if batch.reset:
                self.data.clear()
                self._seen.clear()
                reset = True
            add = self.data.add
            for record in batch.records:
                add(record)
            self.data.bad_lines += batch.bad_lines
        status = read_status(self.run_dir) or {}
        total = self.total_steps or _positive(status.get("total_steps"), int)
        seconds_per_step, source = self._seconds_per_step()
        data = self.data
        eta = None
        if total and data.step is not None and seconds_per_step is not None:
            eta = max(0, total - data.step) * seconds_per_step
        epoch_s = _positive(status.get("epoch_seconds"), float)
        steps_per_epoch = data.steps_per_epoch()
        if epoch_s is None and steps_per_epoch and seconds_per_step is not None:
            epoch_s = steps_per_epoch * seconds_per_step
        recent = data.recent_images_per_s
        return MonitorSnapshot(
            run_dir=self.run_dir, has_metrics=self.tail.found,
            series={name: s.points() for name, s in data.series.items() if s.count},
            bands={name: s.band() for name, s in data.series.items() if s.count},
            last_values={name: s.last_y for name, s in data.series.items() if s.last_y is not None},
            latest=data.latest, step=data.step, epoch=data.epoch, total_steps=total, records=data.records,
            bad_lines=data.bad_lines, skipped_steps=data.skipped_steps,
            images_per_s=sum(recent) / len(recent) if recent else None,
            seconds_per_step=seconds_per_step, rate_source=source, eta_s=eta, epoch_s=epoch_s, reset=reset,
        )

    def _seconds_per_step(self) -> tuple[Optional[float], str]:
        """The wall clock between refreshes when it has seen the run progress for a while (it counts
        data loading, samples, checkpoints and validation); else the mean of the lines' own step
        times (the optimizer step alone, so an optimistic first guess)."""
        now, step, seen = self.clock(), self.data.step, self._seen
        # one entry per new step or per second, so a caller refreshing in a tight loop stays bounded
        if step is not None and (not seen or step != seen[-1][1] or now - seen[-1][0] >= 1.0):
            seen.append((now, step))
        while len(seen) > 2 and now - seen[0][0] > RATE_WINDOW_S:
            seen.popleft()
        if len(seen) >= 2:
            (t0, s0), (t1, s1) = seen[0], seen[-1]
            if t1 - t0 >= RATE_MIN_SPAN_S and s1 > s0:
                return (t1 - t0) / (s1 - s0), "observed"
        times = self.data.recent_step_seconds
        if times:
            return sum(times) / len(times), "step times"
        return None, ""


def _positive(value: Any, kind: type) -> Any:
    return kind(value) if _finite(value) and value > 0 else None
