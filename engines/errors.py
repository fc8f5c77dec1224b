"""Errors a user can cause, each carrying one clear sentence for the UI and the CLI.

The UI shows ``str(error)`` in a ``gr.Error``; the CLI prints it and exits with ``exit_code``.
"""

from __future__ import annotations


class StudioError(Exception):
    """Base class: the message is one sentence an artist can act on."""

    exit_code = 1


class InvalidRequestError(StudioError, ValueError):
    """A request field has a bad value (raised by an engine's ``check``)."""

    exit_code = 2


class ModelNotFoundError(StudioError):
    """The model is neither on disk nor downloadable right now."""

    exit_code = 3


class OfflineError(ModelNotFoundError):
    """The model must be downloaded but the studio is offline or the network is down."""


class CorruptModelError(StudioError):
    """A model file exists but cannot be read (truncated, wrong format, unsafe pickle)."""

    exit_code = 4


class OutOfMemoryError(StudioError):
    """The job does not fit in the memory budget even after every fallback."""

    exit_code = 5


class Cancelled(StudioError):
    """The artist pressed Stop; not a failure, nothing saved is lost."""

    exit_code = 130


def is_torch_oom(error: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors, whichever torch class raised them."""
    name = type(error).__name__
    if name in {"OutOfMemoryError", "OutOfMemory"}:
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "mps backend out of memory" in text
    )
