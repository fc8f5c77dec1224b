"""The one progress protocol every engine speaks.

An engine call takes ``on_step`` (step, total, message, optional preview image) and a
``CancelToken``. The CLI adapts ``on_step`` to a tqdm bar, the studio to ``gr.Progress`` and a
live preview, so both show the same progress from the same code. Modelled on diffusers'
``callback_on_step_end`` and its ``_interrupt`` flag, checked at the top of each step.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Protocol

from engines.errors import Cancelled


class OnStep(Protocol):
    def __call__(self, step: int, total: int, message: str = "", preview: Any = None) -> None: ...


def no_progress(step: int, total: int, message: str = "", preview: Any = None) -> None:
    """The default ``on_step`` when nobody is watching."""


class CancelToken:
    """A thread-safe stop flag; the Stop button sets it, the engine checks it each step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("Stopped by the artist; everything saved so far is kept.")


class TqdmProgress:
    """An ``on_step`` that drives a tqdm bar (the CLI's adapter)."""

    def __init__(self, desc: str = "", unit: str = "step", *, lazy: bool = False, **tqdm_kwargs: Any) -> None:
        """``lazy``: the bar appears with the first step, so a job refused or failing while it loads prints
        its one sentence without an empty bar above it."""
        self._options = dict(desc=desc, unit=unit, **tqdm_kwargs)
        self._bar: Any = None
        if not lazy:
            self._open()

    def _open(self) -> Any:
        from tqdm.auto import tqdm

        self._bar = tqdm(**self._options)
        return self._bar

    def __call__(self, step: int, total: int, message: str = "", preview: Any = None) -> None:
        if self._bar is None:
            self._open()
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.n = step
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def diffusers_step_callback(
    on_step: OnStep,
    cancel: Optional[CancelToken],
    total: int,
    message: str = "Denoising",
    preview: Optional[Callable[[Any, int, Any], Any]] = None,
    preview_every: int = 0,
):
    """A ``callback_on_step_end`` for diffusers pipelines that reports progress and honours cancel.

    Setting ``pipe._interrupt`` is diffusers' own way to stop the denoising loop between steps.
    """

    def callback(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        image = None
        if preview is not None and preview_every and (step + 1) % preview_every == 0:
            image = preview(pipe, step, kwargs)
        on_step(step + 1, total, message, image)
        if cancel is not None and cancel.cancelled:
            pipe._interrupt = True
        return {}

    return callback
