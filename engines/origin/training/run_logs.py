"""Everything a training run writes about itself, under ``<run>/``:

    metrics.jsonl            one JSON line per logged step (what the studio's monitor plots)
    tensorboard/             the same scalars for ``tensorboard --logdir <run>/tensorboard``
    logs/main.log            what happened: start, epochs, checkpoints, LR decisions, the end
    logs/performance.log     per-batch time, samples/s and memory
    logs/error.log           every exception or skipped step, with its context and the recovery
    logs/diagnosis.log       per-component health checks (gradient norms, NaN, routing)

Four files instead of one because the artist, a bug report and a performance question each
want a different one, and a days-long main.log must stay readable. Only the main process of a
multi-GPU run writes, except error.log, where every process says what went wrong on it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

from engines.files import atomic_write_bytes

LOG_NAMES = ("main", "performance", "error", "diagnosis")
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def _scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested dicts of numbers into TensorBoard tags (``loss/line_art``)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_scalars(value, f"{tag}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
            out[tag] = float(value)
    return out


def _json_safe(value: Any) -> Any:
    """NaN and Inf are not JSON; a skipped step still gets its line, with null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def truncate_metrics(path: Path, after_step: int) -> int:
    """Drop lines past ``after_step`` (left by a run that crashed after its last checkpoint), so
    a resumed run's metrics read as one continuous run; returns how many lines went."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            dropped += 1  # a half-written last line from a kill
            continue
        if step <= after_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode("utf-8"))
    return dropped


class RunLogs:
    """The four log files, metrics.jsonl and TensorBoard of one run; ``close()`` when done."""

    def __init__(self, run_dir: Path, *, main_process: bool = True, rank: int = 0,
                 resume_step: Optional[int] = None) -> None:
        self.run_dir = Path(run_dir)
        self.main_process = main_process
        self.tensorboard_note = ""
        log_dir = self.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._handlers: list[logging.Handler] = []
        # Named after the run folder: what the console shows; each RunLogs replaces the handlers
        # of an earlier one of the same name (search trials, tests).
        tag = f"train.{self.run_dir.name}"
        self.main = self._logger(f"{tag}.main", log_dir / "main.log", propagate=True)
        self.performance = self._logger(f"{tag}.performance", log_dir / "performance.log")
        self.diagnosis = self._logger(f"{tag}.diagnosis", log_dir / "diagnosis.log")
        self.error = self._logger(f"{tag}.error", log_dir / "error.log", always=True,
                                  prefix=f"[process {rank}] " if rank else "")
        self._metrics_file = None
        self._writer = None
        if main_process:
            metrics = self.run_dir / "metrics.jsonl"
            if resume_step is not None:
                truncate_metrics(metrics, resume_step)
            self._metrics_file = open(metrics, "a", encoding="utf-8")
            self._writer = self._tensorboard(resume_step)

    def _logger(self, name: str, path: Path, *, propagate: bool = False, always: bool = False,
                prefix: str = "") -> logging.Logger:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        # main.log also reaches the console and the studio's log through the root logger.
        logger.propagate = propagate and self.main_process
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        if self.main_process or always:
            handler = logging.FileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter(_FORMAT.replace("%(message)s", prefix + "%(message)s")))
            logger.addHandler(handler)
            self._handlers.append(handler)
        else:
            logger.addHandler(logging.NullHandler())
        return logger

    def _tensorboard(self, resume_step: Optional[int]) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.tensorboard_note = ("TensorBoard is not installed (pip install tensorboard); "
                                     "metrics go to metrics.jsonl only.")
            self.main.info(self.tensorboard_note)
            return None
        # purge_step hides events a crashed run wrote after the checkpoint we resume from.
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"),
                             purge_step=resume_step + 1 if resume_step is not None else None)

    def metrics(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl and the same numbers in TensorBoard."""
        if self._metrics_file is None:
            return
        self._metrics_file.write(json.dumps(_json_safe(record), sort_keys=False) + "\n")
        self._metrics_file.flush()
        if self._writer is not None:
            step = int(record.get("step", 0))
            for tag, value in _scalars(record).items():
                if math.isfinite(value):
                    self._writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: Any, step: int) -> None:
        """A sample image in TensorBoard (PIL RGB)."""
        if self._writer is None:
            return
        import numpy as np

        self._writer.add_image(tag, np.asarray(image), step, dataformats="HWC")

    def flush(self) -> None:
        for handler in self._handlers:
            handler.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for handler in self._handlers:
            handler.close()
            for logger in (self.main, self.performance, self.diagnosis, self.error):
                logger.removeHandler(handler)
        self._handlers = []
