"""What the Training tab shows, as plain data: no gradio here, so it is tested without a browser.

The tab's timer calls ``RunView.refresh``; everything it reads grows with the run (metrics, logs,
samples), so each piece reads incrementally or from the end: the metrics through one
``RunMonitor`` per run (downsampled to at most 2,000 points per series), the logs from their last
64 KB, the samples by listing one folder.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import Any, Optional

from engines.files import tail_lines
from engines.origin.model.config import EXPERT_NAMES, LossConfig, OriginConfig
from engines.origin.training.dashboard import duration

LOG_NAMES = ("main", "performance", "error", "diagnosis", "console")
LEVELS = ("all", "INFO", "WARNING", "ERROR")
PRECISION_CHOICES = [("automatic (the card's best)", "auto"), ("fp32", "no"), ("fp16", "fp16"), ("bf16", "bf16")]
ART_LOSSES = ("line_art", "color", "anatomy", "perspective", "color_harmony")


# -- starting a run ------------------------------------------------------------------------------------------
def expert_names_for(count: int) -> tuple[str, ...]:
    """The first ``count`` experts, the colour expert first: alone it measured best (docs/origin-model.md)."""
    count = max(1, min(len(EXPERT_NAMES), int(count)))
    return ("color",) + tuple(n for n in EXPERT_NAMES if n != "color")[: count - 1]


def prompts_from_text(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in str(text or "").splitlines() if line.strip())


def config_from_values(values: dict[str, Any]) -> OriginConfig:
    """The tab's fields (named like the config's: ``model.resolution``, ``loss.line_art``...) -> a config.

    ``base_config``: a config file to start from (a hyperparameter search's best_config.json);
    the fields override it. Numbers pass through unchanged, so ``check()`` names a bad one."""
    from engines.errors import InvalidRequestError

    file = str(values.get("base_config") or "").strip()
    if file and not Path(file).expanduser().is_file():
        raise InvalidRequestError(f"The config file {file} does not exist.")
    base = OriginConfig.load(Path(file).expanduser()) if file else OriginConfig()
    model = replace(base.model, resolution=_int(values["model.resolution"]),
                    expert_names=expert_names_for(_int(values["model.expert_count"]) or 1))
    loss = replace(base.loss, **{name: float(values[f"loss.{name}"]) for name in _loss_fields()})
    train = replace(
        base.train, epochs=_int(values["train.epochs"]), batch_size=_int(values["train.batch_size"]),
        mixed_precision=str(values["train.mixed_precision"]), learning_rate=float(values["train.learning_rate"]),
        sample_prompts=prompts_from_text(values["train.sample_prompts"]),
        checkpoint_every_epochs=_int(values["train.checkpoint_every_epochs"]),
        safety_checkpoint_minutes=float(values["train.safety_checkpoint_minutes"]),
        validate_every_steps=_int(values["train.validate_every_steps"]),
    )
    return replace(base, model=model, loss=loss, train=train)


# The flags of ``app.py train`` that start a run, by argparse name: the studio's ``/train_start`` takes these.
TRAIN_FLAGS = ("data", "run", "resolution", "space", "vae", "epochs", "batch_size", "config", "resume", "stage",
               "search", "max_steps", "sr_scale")
_PASSED_ON = ("resolution", "space", "vae", "epochs", "batch_size", "stage", "search", "max_steps", "sr_scale")


def start_from_flags(settings: Any, run_dir: Path, *, data: Optional[Path] = None, config: Optional[Path] = None,
                     resolution: Optional[int] = None, space: Optional[str] = None, vae: Optional[str] = None,
                     epochs: Optional[int] = None, batch_size: Optional[int] = None, resume: bool = False,
                     stage: str = "main", search: Optional[int] = None, max_steps: Optional[int] = None,
                     sr_scale: int = 2) -> Any:
    """``app.py train`` with these flags in its own process, as the Start button starts a run: checked first
    the way the command checks them, so anything wrong is one sentence now rather than a crashed run."""
    from engines.errors import InvalidRequestError
    from engines.origin.model import checkpoints
    from engines.origin.model.config import OriginConfig
    from engines.origin.training import runs
    from engines.origin.training.request import TrainRequest, check
    from engines.origin.training.run_control import read_run_record

    flags = dict(resolution=resolution, space=space or None, vae=vae or None, epochs=epochs, batch_size=batch_size,
                 stage=stage, search=search, max_steps=max_steps, sr_scale=sr_scale)
    if stage not in ("main", "sr"):
        raise InvalidRequestError(f"The stage must be main (the diffusion model) or sr (the enhancer), not {stage}.")
    if flags["space"] not in (None, "auto", "pixel", "latent"):
        raise InvalidRequestError(f"The space must be auto, pixel or latent, not {space}.")
    if sr_scale not in (2, 4):
        raise InvalidRequestError(f"The super-resolution scale must be 2 or 4, not {sr_scale}.")
    if search is not None and search < 1:
        raise InvalidRequestError(f"A search needs at least 1 trial, not {search}.")
    if config is not None and not Path(config).is_file():
        raise InvalidRequestError(f"The config file {config} does not exist.")
    info = runs.judge(run_dir)
    if info.active:
        raise InvalidRequestError(f"The run {info.name} is {info.state}; stop it first or choose another name.")
    if stage == "sr":
        if search is not None or resume:
            raise InvalidRequestError("The sr stage trains from scratch in minutes; leave out search and resume.")
        if data is None or not Path(data).is_dir():
            raise InvalidRequestError(f"The dataset folder {data} does not exist." if data else
                                      "Choose the dataset folder to train on.")
        if max_steps is not None and max_steps < 1:
            raise InvalidRequestError(f"The number of steps must be at least 1, not {max_steps}.")
    elif resume:
        latest = checkpoints.find_latest(run_dir)
        if latest is None and read_run_record(run_dir) is None:
            raise InvalidRequestError(f"The run {info.name} has no checkpoint and no record of its dataset; "
                                      "start it anew.")
        if info.state == "finished" and epochs is None and max_steps is None:
            raise InvalidRequestError(f"The run {info.name} has finished all its epochs; start a new run, or resume "
                                      "it with more epochs.")
        if latest is not None:
            trained_on = data or latest.meta.get("data")
            if not trained_on:
                raise InvalidRequestError("Choose the dataset folder to train on.")
            check(TrainRequest(data=Path(trained_on), run=run_dir, resume=True,
                               config=OriginConfig.load(config) if config else None, resolution=resolution,
                               epochs=epochs, batch_size=batch_size, space=flags["space"], vae=flags["vae"],
                               max_steps=max_steps))
    else:
        runs.check_new_run(run_dir)
        if data is None:
            raise InvalidRequestError("Choose the dataset folder to train on.")
        start_config = OriginConfig.load(config) if config else None
        check(TrainRequest(data=Path(data), run=run_dir, config=start_config, resolution=resolution, epochs=epochs,
                           batch_size=batch_size, space=flags["space"], vae=flags["vae"], max_steps=max_steps))
        if start_config is not None:  # kept with the run, as the Start button keeps its config
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            config = Path(run_dir) / "start-config.json"
            start_config.save(config)
    extra: list[str] = []
    for name in _PASSED_ON:
        if flags[name] is not None and (name, flags[name]) not in (("stage", "main"), ("sr_scale", 2), ("space", "auto")):
            extra += [f"--{name.replace('_', '-')}", str(flags[name])]
    command = runs.train_command(settings, run_dir, data=data, config=config, resume=resume, extra=extra)
    return runs.launch(command, run_dir)


def _loss_fields() -> list[str]:
    return [name for name in LossConfig.__dataclass_fields__ if name != "min_snr_gamma"]


def _int(value: Any) -> Any:
    if value is None or value == "":
        return value
    number = float(value)
    return int(number) if number == int(number) else number  # a fraction is left for check() to name


def dataset_choices(datasets_root: Path) -> list[str]:
    root = Path(datasets_root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def check_run_name(name: str) -> str:
    from engines.errors import InvalidRequestError

    name = str(name or "").strip()
    if not _RUN_NAME.match(name) or name in (".", ".."):
        raise InvalidRequestError("Name the run with up to 64 letters, digits, spaces, dots, dashes or underscores.")
    return name


# -- the live view -----------------------------------------------------------------------------------------
def series_frame(snapshot: Any, names: dict[str, str], *, smoothing: float = 0.0, log: bool = False) -> Any:
    """A long-format DataFrame (step, value, series) for one native line plot.

    ``names``: series name in the monitor -> its label. The smoothing (an EMA) runs over the
    plotted points; ``log`` plots log10 of the values (gradio's plots have no log axis)."""
    import pandas as pd

    from engines.origin.training.monitor import ema

    rows: list[tuple[float, float, str]] = []
    for name, label in names.items():
        if name not in snapshot.series:
            continue
        xs, ys = snapshot.series[name]
        ys = ema(list(ys), smoothing) if smoothing else list(ys)
        for x, y in zip(xs, ys):
            if y is None or not math.isfinite(y) or (log and y <= 0):
                continue
            rows.append((x, math.log10(y) if log else y, label))
    # Typed columns even when empty: the browser's chart keeps the axis types of its first data, and
    # an empty frame's object columns would make every later loss an unsorted category.
    return pd.DataFrame({"step": pd.Series([r[0] for r in rows], dtype="float64"),
                         "value": pd.Series([r[1] for r in rows], dtype="float64"),
                         "series": pd.Series([r[2] for r in rows], dtype="object")})


def chart_frames(snapshot: Any, *, smoothing: float, log: bool) -> dict[str, Any]:
    """The tab's plots: loss, diffusion vs validation, art losses, experts, routing, LR, speed, memory."""
    experts = snapshot.names("experts/", "/aux_loss")
    return {
        "loss": series_frame(snapshot, {"loss": "total"}, smoothing=smoothing, log=log),
        "validation": series_frame(snapshot, {"losses/diffusion": "diffusion (training)",
                                              "validation/loss": "validation"}, smoothing=smoothing, log=log),
        "art": series_frame(snapshot, {f"losses/{n}": n for n in ART_LOSSES}, smoothing=smoothing, log=log),
        "experts": series_frame(snapshot, {f"experts/{n}/aux_loss": n for n in experts}, smoothing=smoothing),
        "routing": series_frame(snapshot, {f"experts/{n}/routing": n for n in experts}),
        "lr": series_frame(snapshot, {"lr": "learning rate"}),
        "speed": series_frame(snapshot, {"samples_per_s": "images/s"}, smoothing=smoothing),
        "memory": series_frame(snapshot, {"memory/ram_mb": "RAM (MB)", "memory/vram_mb": "VRAM (MB)",
                                          "memory/vram_peak_mb": "VRAM peak (MB)"}),
    }


def progress_html(info: Any, snapshot: Any) -> str:
    """The run's state line, a bar, and epoch / step / images/s / ETA / time per epoch."""
    if info is None:
        return '<div class="ink-gauge ink-gauge--off" id="training-progress" data-state="none">' \
               '<div class="ink-gauge__label"><span>No run selected</span></div></div>'
    step = max(info.step, snapshot.step or 0) if snapshot is not None else info.step
    total = info.total_steps or (snapshot.total_steps if snapshot is not None else None)
    percent = 100.0 * step / total if total else 0.0
    kind = {"crashed": "ink-gauge--alert", "queued": "ink-gauge--warn"}.get(info.state, "ink-gauge--ok")
    facts = [f"epoch {info.epoch:.1f}" + (f" of {info.epochs}" if info.epochs else ""),
             f"step {step}" + (f" of {total}" if total else "")]
    if snapshot is not None:
        if snapshot.images_per_s:
            facts.append(f"{snapshot.images_per_s:.1f} images/s")
        if info.state == "running":
            facts.append(f"ETA {duration(snapshot.eta_s)}")
        if snapshot.epoch_s:
            facts.append(f"{duration(snapshot.epoch_s)} per epoch")
    return (
        f'<div class="ink-gauge {kind}" id="training-progress" data-state="{escape(info.state)}" '
        f'data-step="{step}"><div class="ink-gauge__label"><span>{escape(info.name)}: '
        f'{escape(info.describe())}</span><span>{percent:.0f}%</span></div>'
        f'<div class="ink-gauge__track"><div class="ink-gauge__fill" style="width:{min(100.0, percent):.1f}%">'
        f'</div></div><div class="ink-gauge__detail">{escape(" · ".join(facts))}</div></div>'
    )


def run_status(info: Any, snapshot: Any, data_root: Path) -> dict[str, Any]:
    """What ``/train_status`` answers: the run's state and progress, its newest losses, the ETA, and its
    newest checkpoint and samples (paths relative to the data folder when inside it)."""
    step = max(info.step, snapshot.step or 0) if snapshot is not None else info.step
    total = info.total_steps or (snapshot.total_steps if snapshot is not None else None)
    last = snapshot.last_values if snapshot is not None else {}
    samples = sample_steps(info.path)
    newest = list(samples)[-1] if samples else None
    checkpoint = info.path / "checkpoints" / info.newest_checkpoint if info.newest_checkpoint else None
    return {
        "run": info.name, "status": info.state, "description": info.describe(), "step": step, "total_steps": total,
        "epoch": info.epoch, "epochs": info.epochs, "loss": _finite(last.get("loss")),
        "validation_loss": _finite(last.get("validation/loss")),
        "images_per_s": _finite(snapshot.images_per_s) if snapshot is not None else None,
        "eta_s": _finite(snapshot.eta_s) if snapshot is not None and info.state == "running" else None,
        "error": info.error or None, "queue_position": info.queue_position, "checkpoints": info.checkpoints,
        "newest_checkpoint": shown(checkpoint, data_root) if checkpoint else None,
        "sample_step": newest, "samples": [shown(p, data_root) for p in samples.get(newest, [])],
    }


def shown(path: Path, root: Path) -> str:
    """A path as an API answer: relative to the data folder when inside it (no need to show the machine's layout)."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return str(path.relative_to(root)) if path == root or root in path.parents else str(path)


def _finite(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def run_rows(infos: list[Any]) -> list[list[Any]]:
    import time

    rows = []
    for info in infos:
        age = time.time() - info.updated_at if info.updated_at else None
        rows.append([info.name, info.describe(), info.checkpoints, f"{duration(age)} ago" if age is not None else "–"])
    return rows


def checkpoint_rows(run_dir: Path) -> list[list[Any]]:
    from engines.origin.model import checkpoints

    rows = []
    for info in reversed(checkpoints.list_checkpoints(run_dir)):
        loss = info.meta.get("loss")
        rows.append([info.path.name, info.kind, info.step, info.epoch,
                     f"{loss:.4f}" if isinstance(loss, (int, float)) and math.isfinite(loss) else "–"])
    return rows


# -- samples --------------------------------------------------------------------------------------------------
def sample_steps(run_dir: Path) -> dict[int, list[Path]]:
    """Step -> its sample images (one per prompt), oldest step first."""
    from engines.origin.training.samples import sample_step

    found: dict[int, list[Path]] = {}
    folder = Path(run_dir) / "samples"
    for path in sorted(folder.glob("step-*.png")) if folder.is_dir() else []:
        step = sample_step(path)
        if step is not None:
            found.setdefault(step, []).append(path)
    return dict(sorted(found.items()))


def sample_grid(paths: list[Path], tile: int = 256) -> Any:
    """One step's samples side by side (each scaled to ``tile`` px high), as a PIL image."""
    from PIL import Image

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                scale = tile / image.height
                images.append(image.resize((max(1, round(image.width * scale)), tile), Image.NEAREST))
        except OSError:
            continue
    if not images:
        return None
    grid = Image.new("RGB", (sum(i.width for i in images) + 4 * (len(images) - 1), tile), (255, 255, 255))
    x = 0
    for image in images:
        grid.paste(image, (x, 0))
        x += image.width + 4
    return grid


# -- logs and findings ------------------------------------------------------------------------------------------
def log_tail(run_dir: Path, name: str, level: str = "all", lines: int = 200) -> str:
    path = Path(run_dir) / "logs" / f"{name}.log"
    found = tail_lines(path)
    if level != "all":
        rank = {"INFO": 0, "WARNING": 1, "ERROR": 2}
        wanted = rank.get(level, 0)
        found = [line for line in found
                 if any(f" {lvl} " in line for lvl, r in rank.items() if r >= wanted) or " CRITICAL " in line]
    return "\n".join(found[-lines:]) if found else f"({name}.log is empty so far)"


_STEP = re.compile(r"step (\d+)")


def findings(run_dir: Path) -> list[str]:
    """The diagnosis log's problems, one sentence each: the newest check's, and skipped NaN steps."""
    diagnosis = tail_lines(Path(run_dir) / "logs" / "diagnosis.log")
    newest: Optional[str] = None
    for line in reversed(diagnosis):
        match = _STEP.search(line)
        if match:
            newest = match.group(1)
            break
    out = []
    for line in diagnosis:
        match = _STEP.search(line)
        if not match or match.group(1) != newest:
            continue
        step = match.group(1)
        if "CHECK: exploding in" in line:
            parts = line.split("CHECK: exploding in", 1)[1].split(":", 1)[0].strip()
            out.append(f"Exploding gradients in {parts} at step {step}: if it persists, resume with a lower "
                       "learning rate.")
        if "weights NaN/Inf in" in line:
            out.append(f"Some weights turned NaN at step {step}: resume from an earlier checkpoint with a lower "
                       "learning rate.")
        if "dead experts:" in line:
            dead = line.split("dead experts:", 1)[1].split(";", 1)[0].strip()
            out.append(f"Dead experts at step {step} ({dead}): the router no longer sends them anything; "
                       "fewer experts may train better.")
        if "router is collapsing" in line:
            out.append(f"The router is collapsing onto few experts (step {step}): training continues, but the "
                       "other experts stop learning.")
    skipped = [line for line in tail_lines(Path(run_dir) / "logs" / "error.log") if "are not finite" in line]
    if skipped:
        match = _STEP.search(skipped[-1])
        out.append(f"NaN/Inf losses: {len(skipped)} step(s) skipped recently, the newest at step "
                   f"{match.group(1) if match else '?'}; the weights were left unchanged.")
    return out


def findings_markdown(items: list[str]) -> str:
    return "\n".join(f"- ⚠ {escape(item)}" for item in items) if items else ""


# -- one monitor per run, shared by every browser session --------------------------------------------------
@dataclass
class _Watched:
    monitor: Any
    lock: threading.Lock


class RunViews:
    """The studio-wide cache of ``RunMonitor``s: a refresh reads only what is new since the last one."""

    def __init__(self, limit: int = 8) -> None:
        self._watched: dict[Path, _Watched] = {}
        self._lock = threading.Lock()
        self.limit = limit

    def snapshot(self, run_dir: Path) -> Any:
        from engines.origin.training.monitor import RunMonitor

        run_dir = Path(run_dir)
        with self._lock:
            watched = self._watched.pop(run_dir, None) or _Watched(RunMonitor(run_dir), threading.Lock())
            self._watched[run_dir] = watched  # newest last: the least recently viewed goes first
            while len(self._watched) > self.limit:
                self._watched.pop(next(iter(self._watched)))
        with watched.lock:
            return watched.monitor.refresh()
