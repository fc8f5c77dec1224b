"""The studio's adapter of the engines' progress protocol to ``gr.Progress``."""

from __future__ import annotations

from typing import Any


class GradioProgress:
    """An ``on_step`` (step, total, message, preview) that drives a ``gr.Progress`` bar."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress

    def __call__(self, step: int, total: int, message: str = "", preview: Any = None) -> None:
        self._progress((step, total) if total else None, desc=message or None)
