"""The process-wide objects the tabs share; per-session values live in gr.State instead."""

from __future__ import annotations

from dataclasses import dataclass

from engines.context import EngineContext, build_engine_context
from engines.settings import MachineSettings
from studio.jobs import JobRunner


@dataclass
class StudioContext(EngineContext):
    jobs: JobRunner


def build_studio_context(settings: MachineSettings) -> StudioContext:
    base = build_engine_context(settings)
    return StudioContext(base.settings, base.hardware, base.models, JobRunner(base.hardware))
