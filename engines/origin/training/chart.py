"""The progress chart of a run: nine panels of ``metrics.jsonl`` as one PNG (``write_chart``).

Two halves, so the Training tab can redraw from the ``RunMonitor`` it already keeps instead of
reading the whole file again: ``chart_panels(snapshot)`` is pure data (what each panel plots, the
smoothing applied), and ``render_chart(snapshot)`` draws it with matplotlib.

matplotlib is imported inside ``render_chart`` (the studio starts without it) and used through
``Figure`` + ``FigureCanvasAgg`` only, never pyplot: pyplot keeps a process-wide list of figures and
a current backend, which two threads drawing at once (the tab and a CLI job) would share. A bare
Figure with its own Agg canvas needs no backend selection, so ``matplotlib.use`` is not called
either (it would change the backend for anyone else in the process using pyplot).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.files import atomic_write_bytes
from engines.origin.training.monitor import MonitorSnapshot, RunMonitor, ema

NO_DATA = "no data yet"
# Terms that have their own panel; every other ``losses/<term>`` is an art loss.
_NOT_ART = ("diffusion", "expert_aux")


@dataclass(frozen=True)
class Line:
    label: str
    xs: list[float]
    ys: list[float]
    style: str = "smooth"  # "smooth" (the curve to read), "raw" (faint, under it) or "points" (sparse)
    band: Optional[tuple[list[float], list[float]]] = None  # (min, max) per point, drawn faint


@dataclass(frozen=True)
class Panel:
    title: str
    lines: list[Line] = field(default_factory=list)
    log_y: bool = False
    ylabel: str = ""
    scientific: bool = False  # tick labels as 2e-04 (the learning rate)


def _smoothed(snapshot: MonitorSnapshot, name: str, label: str, smoothing: float, *,
              raw: bool = False, band: bool = False) -> list[Line]:
    """The series as an EMA line, with the raw bucket means (and their min/max) faint underneath."""
    if name not in snapshot.series:
        return []
    xs, ys = snapshot.series[name]
    lines = [Line(label, xs, ys, "raw", snapshot.bands.get(name) if band else None)] if raw else []
    return lines + [Line(label if not raw else f"{label} (EMA {smoothing:g})", xs, ema(ys, smoothing))]


def _spans_decades(panel_lines: list[Line]) -> bool:
    """Log scale when every value is above zero and they span a factor of 5 or more: a loss that fell
    from 1.0 to 0.02 reads on it, a steady one would only show rounding noise."""
    ys = [y for line in panel_lines for y in line.ys]
    return bool(ys) and min(ys) > 0 and max(ys) >= 5 * min(ys)


def _steady_limits(panel_lines: list[Line]) -> Optional[tuple[float, float]]:
    """Y limits for a constant series (a fixed LR, a steady RAM figure): ±5 % around it, instead of an
    axis zoomed into the last bits of a float."""
    ys = [y for line in panel_lines for y in line.ys]
    if not ys:
        return None
    low, high = min(ys), max(ys)
    if high - low > 1e-9 * max(abs(low), abs(high)):
        return None
    margin = max(abs(high) * 0.05, 1e-12)
    return low - margin, high + margin


def chart_panels(snapshot: MonitorSnapshot, *, smoothing: float = 0.6) -> list[Panel]:
    """What the nine panels plot, left to right and top to bottom (an empty panel has no lines)."""
    s = snapshot
    total = _smoothed(s, "loss", "total loss", smoothing, raw=True, band=True)
    diffusion = _smoothed(s, "losses/diffusion", "diffusion (training)", smoothing)
    if "validation/loss" in s.series:
        diffusion.append(Line("validation", *s.series["validation/loss"], style="points"))
    art = [line for term in s.names("losses/") if term not in _NOT_ART
           for line in _smoothed(s, f"losses/{term}", term, smoothing)]
    experts = s.names("experts/", "/aux_loss")
    aux = [line for e in experts for line in _smoothed(s, f"experts/{e}/aux_loss", e, smoothing)]
    routing = [line for e in s.names("experts/", "/routing")
               for line in _smoothed(s, f"experts/{e}/routing", e, smoothing)]
    lr = [Line("learning rate", *s.series["lr"], style="smooth")] if "lr" in s.series else []
    grad = _smoothed(s, "grad_norm", "grad norm", smoothing, raw=True)
    speed = _smoothed(s, "samples_per_s", "images/s", smoothing, raw=True)
    memory = [Line(label, *s.series[name], style="smooth") for name, label in
              (("memory/ram_mb", "RAM"), ("memory/vram_mb", "VRAM"), ("memory/vram_peak_mb", "VRAM peak"))
              if name in s.series]
    return [
        Panel("Total loss", total, log_y=_spans_decades(total)),
        Panel("Diffusion and validation loss", diffusion, log_y=_spans_decades(diffusion)),
        Panel("Art losses", art, log_y=_spans_decades(art)),
        Panel("Expert auxiliary losses", aux),
        Panel("Expert routing weights", routing),
        Panel("Learning rate", lr, scientific=True),
        Panel("Gradient norm", grad, log_y=_spans_decades(grad)),
        Panel("Images per second", speed),
        Panel("Memory", memory, ylabel="MB"),
    ]


def _title(snapshot: MonitorSnapshot) -> str:
    parts = [snapshot.run_name]
    if snapshot.step is not None:
        total = f" / {snapshot.total_steps:,}" if snapshot.total_steps else ""
        parts.append(f"step {snapshot.step:,}{total}")
    if snapshot.epoch is not None:
        parts.append(f"epoch {snapshot.epoch:.2f}")
    return "  ·  ".join(parts)


def render_chart(snapshot: MonitorSnapshot, *, smoothing: float = 0.6, dpi: int = 100) -> bytes:
    """The 3×3 chart as PNG bytes, drawn from a snapshot (thread-safe: no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 10.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(_title(snapshot), fontsize=12)
    for panel, axes in zip(chart_panels(snapshot, smoothing=smoothing), figure.subplots(3, 3).flat):
        _draw(axes, panel)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _draw(axes: Any, panel: Panel) -> None:
    from matplotlib import colormaps
    from matplotlib.ticker import EngFormatter, MaxNLocator

    axes.set_title(panel.title, fontsize=10)
    if not panel.lines:
        axes.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=axes.transAxes, color="grey")
        axes.set_xticks([])
        axes.set_yticks([])
        return
    # A raw line and its EMA share a colour; tab20 only for the 14 experts.
    names = list(dict.fromkeys(line.label.split(" (EMA")[0] for line in panel.lines))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    for line in panel.lines:
        colour = palette(names.index(line.label.split(" (EMA")[0]) % palette.N)
        marker = "o" if len(line.xs) <= 20 else None  # a run's first lines: one point draws no line
        if line.style == "raw":
            if line.band is not None:
                axes.fill_between(line.xs, *line.band, color=colour, alpha=0.12, linewidth=0)
            axes.plot(line.xs, line.ys, color=colour, alpha=0.3, linewidth=0.8)
        elif line.style == "points":
            axes.plot(line.xs, line.ys, color="black", marker="o", markersize=3, linewidth=1,
                      label=line.label)
        else:
            axes.plot(line.xs, line.ys, color=colour, linewidth=1.3, label=line.label, marker=marker,
                      markersize=3)
    if panel.log_y:
        axes.set_yscale("log")
    else:
        axes.ticklabel_format(axis="y", useOffset=False, **({"style": "sci", "scilimits": (-2, 3)}
                                                           if panel.scientific else {}))
        limits = _steady_limits(panel.lines)
        if limits is not None:
            axes.set_ylim(*limits)
    steps = [x for line in panel.lines for x in line.xs]
    if max(steps) - min(steps) < 2:  # the first step or two: a window of whole steps around them
        axes.set_xlim(min(steps) - 1, max(steps) + 1)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: never 0.96
    axes.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, 1.5M: a long run's steps fit
    axes.set_xlabel("step", fontsize=8)
    if panel.ylabel:
        axes.set_ylabel(panel.ylabel, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.25)
    if len(names) > 1:
        # not "best": it tests candidate places against every point, 0.1-0.5 s more on a 14-expert run
        axes.legend(fontsize=6, ncol=2 if len(names) > 7 else 1, loc="upper right", framealpha=0.6)


def write_chart(run_dir: Path, output: Path, *, smoothing: float = 0.6,
                total_steps: Optional[int] = None) -> Path:
    """Draw the whole run's chart into ``output`` (a PNG, written atomically) and return its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise InvalidRequestError(f"The run folder {run_dir} has no metrics yet; pick a run that has trained "
                                  f"for at least one logged step.")
    if not 0.0 <= smoothing < 1.0:
        raise InvalidRequestError(f"The smoothing must be from 0 up to (not including) 1, not {smoothing:g}.")
    png = render_chart(RunMonitor(run_dir, total_steps=total_steps).refresh(), smoothing=smoothing)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Not fsynced: the chart is drawn again from metrics.jsonl whenever it is asked for; the rename
    # alone keeps a reader from ever seeing half a PNG.
    atomic_write_bytes(output, png, durable=False)
    return output
