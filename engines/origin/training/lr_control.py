"""The learning rate: warm-up, cosine decay, and an adaptive controller on top.

The base schedule is diffusers' ``get_cosine_schedule_with_warmup`` (linear warm-up, then a
half cosine down to zero). The ``AdaptiveLRController`` multiplies it by a ``scale`` that it
moves from the training loss itself, because a days-long run on an artist's own dataset has no
validation set and nobody watching it at 3 a.m.:

The rule, evaluated once per window of optimizer steps (about an epoch, 50..500 steps), after
warm-up, on the window's mean loss ``m`` against the best window mean so far ``best``:

* progress ``p = (best - m) / best``;
* **plateau**: ``p < min_improvement`` (1 %) for ``patience`` (3) windows in a row, multiply
  ``scale`` by ``lower_factor`` (0.5), down to ``min_scale`` (0.05);
* **healthy**: ``p >= healthy_improvement`` (3 %) for ``patience`` windows in a row, with no
  NaN/Inf step skipped and at most half of the steps gradient-clipped in those windows, multiply
  ``scale`` by ``raise_factor`` (1.1), up to ``max_scale`` (2.0). Clipped steps mean the
  gradients are already at the limit, where a larger step would only add noise.
* anything in between resets both counters;
* **NaN/Inf**: three skipped steps in a row lower ``scale`` at once (an LR too high is the usual
  cause of overflow).

The controller's state (scale, best, counters, the running window) is checkpointed with the rest
of the training state, so a resumed run makes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LRControlSettings:
    min_improvement: float = 0.01
    healthy_improvement: float = 0.03
    patience: int = 3
    lower_factor: float = 0.5
    raise_factor: float = 1.1
    min_scale: float = 0.05
    max_scale: float = 2.0
    max_clipped_fraction: float = 0.5
    skips_before_lowering: int = 3


def window_for(steps_per_epoch: int) -> int:
    """About one epoch: long enough to average out the noise of random timesteps, short enough
    to react within a day on a large dataset."""
    return max(50, min(500, int(steps_per_epoch)))


@dataclass
class _Window:
    loss_sum: float = 0.0
    steps: int = 0
    skipped: int = 0
    clipped: int = 0


@dataclass
class AdaptiveLRController:
    """Scales the scheduled learning rate by a factor it adapts; see the module docstring for the rule."""

    window: int = 100
    warmup_steps: int = 0
    settings: LRControlSettings = field(default_factory=LRControlSettings)
    scale: float = 1.0
    best: float = math.inf
    stale_windows: int = 0
    healthy_windows: int = 0
    consecutive_skips: int = 0
    decisions: int = 0
    _current: _Window = field(default_factory=_Window)
    _healthy_clean: bool = True  # no skips / heavy clipping since the healthy streak began

    # 1. feed every optimizer step ------------------------------------------------------------
    def observe(self, step: int, loss: float, *, skipped: bool = False, clipped: bool = False) -> str:
        """Record one optimizer step; returns "lowered", "raised" or "" (what changed, for the log)."""
        if skipped:
            self._current.skipped += 1
            self.consecutive_skips += 1
            if self.consecutive_skips >= self.settings.skips_before_lowering:
                self.consecutive_skips = 0
                return self._lower()
            return ""
        self.consecutive_skips = 0
        if step <= self.warmup_steps:
            return ""  # the loss falls fast during warm-up whatever the LR; judge only after it
        self._current.loss_sum += float(loss)
        self._current.steps += 1
        self._current.clipped += int(clipped)
        if self._current.steps >= self.window:
            return self._decide()
        return ""

    # 2. once per window ------------------------------------------------------------------------
    def _decide(self) -> str:
        window, self._current = self._current, _Window()
        mean = window.loss_sum / window.steps
        s = self.settings
        progress = (self.best - mean) / abs(self.best) if math.isfinite(self.best) and self.best != 0 else 1.0
        self.best = min(self.best, mean)
        clean = window.skipped == 0 and window.clipped <= s.max_clipped_fraction * window.steps
        change = ""
        if progress >= s.healthy_improvement:
            self.stale_windows = 0
            self._healthy_clean = (self._healthy_clean or self.healthy_windows == 0) and clean
            self.healthy_windows += 1
            if self.healthy_windows >= s.patience:
                if self._healthy_clean:
                    change = self._raise()
                self.healthy_windows, self._healthy_clean = 0, True
        elif progress >= s.min_improvement:
            self.stale_windows, self.healthy_windows, self._healthy_clean = 0, 0, True
        else:
            self.healthy_windows, self._healthy_clean = 0, True
            self.stale_windows += 1
            if self.stale_windows >= s.patience:
                self.stale_windows = 0
                change = self._lower()
        return change

    def _lower(self) -> str:
        new = max(self.settings.min_scale, self.scale * self.settings.lower_factor)
        changed = new != self.scale
        self.scale = new
        self.decisions += int(changed)
        return "lowered" if changed else ""

    def _raise(self) -> str:
        new = min(self.settings.max_scale, self.scale * self.settings.raise_factor)
        changed = new != self.scale
        self.scale = new
        self.decisions += int(changed)
        return "raised" if changed else ""

    # 3. apply on top of the scheduler -----------------------------------------------------------
    def apply(self, optimizer: Any, scheduler: Any) -> float:
        """Set each param group's LR to the scheduled value times ``scale``; returns the first one."""
        for group, scheduled in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = scheduled * self.scale
        return float(optimizer.param_groups[0]["lr"])

    # 4. checkpointing (accelerate's register_for_checkpointing protocol) -----------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "warmup_steps": self.warmup_steps,
            "settings": asdict(self.settings),
            "scale": self.scale,
            "best": self.best,
            "stale_windows": self.stale_windows,
            "healthy_windows": self.healthy_windows,
            "consecutive_skips": self.consecutive_skips,
            "decisions": self.decisions,
            "current": asdict(self._current),
            "healthy_clean": self._healthy_clean,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window, self.warmup_steps = int(state["window"]), int(state["warmup_steps"])
        self.settings = LRControlSettings(**state["settings"])
        self.scale, self.best = float(state["scale"]), float(state["best"])
        self.stale_windows, self.healthy_windows = int(state["stale_windows"]), int(state["healthy_windows"])
        self.consecutive_skips, self.decisions = int(state["consecutive_skips"]), int(state["decisions"])
        self._current = _Window(**state["current"])
        self._healthy_clean = bool(state["healthy_clean"])


def make_scheduler(optimizer: Any, *, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up then cosine decay (diffusers' schedule), stepped once per optimizer step."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    warmup = max(0, min(int(warmup_steps), max(0, total_steps - 1)))
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup,
                                           num_training_steps=max(1, int(total_steps)))
