"""A run in a terminal: ``render_dashboard(snapshot)`` as plain text, ``follow(run)`` redrawing it.

For a training run on a machine without a browser (a rented GPU over ssh): the same
``RunMonitor`` snapshot the Training tab plots, as a screenful of text with sparklines. ``follow``
only reads the run folder; stopping it (Ctrl+C) never touches the training process, which the
artist steers through the run's control flags instead.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional, TextIO

from engines.origin.training.monitor import MonitorSnapshot, RunMonitor, ema

SPARKS = "▁▂▃▄▅▆▇█"
MAX_EXPERT_LINES = 14
SMOOTHING = 0.6
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen (ANSI; Windows 10+ terminals understand it too)


def sparkline(values: list[float], width: int, *, log: bool = False) -> str:
    """``values`` squeezed into ``width`` characters (mean per column), lowest ▁ to highest █."""
    values = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not values or width < 1:
        return ""
    if log:
        values = [math.log10(v) for v in values]
    if len(values) > width:
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:]) if b > a]
    low, high = min(values), max(values)
    span = high - low
    if span <= 1e-12 * max(abs(low), abs(high), 1.0):
        return SPARKS[len(SPARKS) // 2] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))] for v in values)


def progress_bar(fraction: float, width: int) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "█" * filled + "░" * (width - filled)


def duration(seconds: Optional[float]) -> str:
    """``2 d 03 h``, ``1 h 05 min``, ``4 min 10 s``, ``12 s``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(max(0.0, seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _number(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) < 10 ** -(digits - 1) or abs(value) >= 1e6):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def render_dashboard(snapshot: MonitorSnapshot, width: int = 80, *, state: Optional[str] = None) -> str:
    """The run as a screenful of text: where it is, how fast, the loss and each expert."""
    s, width = snapshot, max(40, width)
    last = s.last_values
    lines = [f"Origin run {s.run_name}"]
    if state:
        lines.append(f"state: {state}")
    if not s.has_metrics or s.step is None:
        lines.append("waiting for the first logged step (metrics.jsonl)…")
        return "\n".join(_fit(line, width) for line in lines) + "\n"

    # 1. where the run is
    where = f"epoch {s.epoch:.2f}  " if s.epoch is not None else ""
    where += f"step {s.step:,}" + (f" / {s.total_steps:,}" if s.total_steps else "")
    lines.append(where)
    if s.progress is not None:
        label = f" {100 * s.progress:5.1f} %"
        lines.append(progress_bar(s.progress, width - len(label)) + label)

    # 2. how it learns
    xs_ys = s.series.get("loss")
    if xs_ys:
        smoothed = ema(xs_ys[1], SMOOTHING)[-1]
        lines.append(f"loss {_number(last.get('loss'))}  EMA {_number(smoothed)}")
        lines.append("     " + sparkline(xs_ys[1], width - 5, log=min(xs_ys[1]) > 0))
    if "validation/loss" in last:
        validation = s.series["validation/loss"]
        lines.append(f"validation loss {_number(last['validation/loss'])} (step {int(validation[0][-1]):,})")
        if len(validation[1]) > 1:
            lines.append("     " + sparkline(validation[1], width - 5))

    # 3. how fast, and what it holds
    speed = f"images/s {s.images_per_s:.1f}" if s.images_per_s is not None else "images/s -"
    lines.append(f"{speed}   ETA {duration(s.eta_s)}   per epoch {duration(s.epoch_s)}")
    lr = f"LR {_number(last.get('lr'), 3)}"
    if "lr_scale" in last and last["lr_scale"] != 1.0:
        lr += f" (×{last['lr_scale']:.2f})"
    memory = [f"RAM {last['memory/ram_mb']:,.0f} MB"] if "memory/ram_mb" in last else []
    if "memory/vram_mb" in last:
        peak = last.get("memory/vram_peak_mb")
        memory.append(f"VRAM {last['memory/vram_mb']:,.0f} MB" + (f" (peak {peak:,.0f})" if peak else ""))
    lines.append("   ".join([lr, *memory]))

    # 4. the experts, one line each
    experts = list(dict.fromkeys(s.names("experts/", "/aux_loss") + s.names("experts/", "/routing")))
    experts = experts[:MAX_EXPERT_LINES]
    if experts:
        name_width = min(16, max(len(e) for e in experts))
        lines.append("experts: aux loss, routing")
        for expert in experts:
            aux, routing = last.get(f"experts/{expert}/aux_loss"), last.get(f"experts/{expert}/routing")
            lines.append(f"  {expert[:name_width]:<{name_width}}  aux {_number(aux)}  routing "
                         f"{'-' if routing is None else f'{routing:.2f}'}")
    tail = f"skipped steps: {s.skipped_steps}"
    if s.bad_lines:
        tail += f"   unreadable lines: {s.bad_lines}"
    lines.append(tail)
    return "\n".join(_fit(line, width) for line in lines) + "\n"


def follow(run_dir: Path, *, interval_s: float = 2.0, is_running: Callable[[], bool],
           out: Optional[TextIO] = None, clear: bool = True, max_frames: Optional[int] = None,
           total_steps: Optional[int] = None, state: Optional[Callable[[], Optional[str]]] = None,
           width: Optional[int] = None) -> int:
    """Redraw the dashboard every ``interval_s`` while ``is_running()``, then once more; returns 0,
    also on Ctrl+C. ``out`` defaults to the ``sys.stdout`` of the call (not of the import, so a
    redirected stdout is honoured); ``max_frames`` stops earlier (tests); ``state()`` gives the state line."""
    out = out if out is not None else sys.stdout
    monitor = RunMonitor(Path(run_dir), total_steps=total_steps)
    frames = 0

    def draw() -> None:
        nonlocal frames
        columns = width or min(100, shutil.get_terminal_size((80, 24)).columns)
        text = render_dashboard(monitor.refresh(), columns, state=state() if state else None)
        out.write((CLEAR if clear else "") + text)
        out.flush()
        frames += 1

    try:
        while is_running():
            draw()
            if max_frames is not None and frames >= max_frames:
                return 0
            time.sleep(interval_s)
        draw()  # the run ended: its last lines
    except KeyboardInterrupt:
        out.write("\n")
    return 0
