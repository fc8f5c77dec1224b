"""Calling the studio's API endpoint functions directly, as gradio does."""

from __future__ import annotations

import inspect
from typing import Any


def finished(answer: Any) -> Any:
    """What gradio_client's ``predict`` returns: a streaming endpoint's last value (progress updates come first)."""
    if inspect.isgenerator(answer):
        last = None
        for last in answer:
            pass
        return last
    return answer
