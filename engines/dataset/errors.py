"""The dataset engine's own failures, each one sentence (see engines/errors.py)."""

from __future__ import annotations

from engines.errors import StudioError


class SourceError(StudioError):
    """A site cannot be used right now: unreachable, refusing, or answering nonsense."""

    exit_code = 6


class AccessDeniedError(SourceError):
    """HTTP 401/403 on a site's API: a missing or wrong key."""

    exit_code = 7


class DiskFullError(StudioError):
    """The dataset folder's disk is full; everything written so far is intact."""

    exit_code = 8


class DownloadFailed(Exception):
    """One image could not be downloaded; the post is counted as failed and retried next run."""
