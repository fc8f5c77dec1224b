"""The process-wide objects the tabs share; per-session values live in gr.State instead."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Optional

from engines.context import EngineContext, build_engine_context
from engines.settings import MachineSettings, StudioPaths
from studio.access import Access
from studio.jobs import JobRunner


@dataclass
class StudioContext(EngineContext):
    jobs: JobRunner
    access: Access  # who may do what, and where (studio/access.py)

    def with_outputs(self, outputs: Path) -> "StudioContext":
        """This context with its engines writing to ``outputs`` (a demo visitor's own folder: the engines
        read ``settings.paths.outputs``), sharing hardware, models and jobs; itself when unchanged."""
        if Path(outputs) == Path(self.settings.paths.outputs):
            return self
        settings = {f.name: getattr(self.settings, f.name) for f in fields(MachineSettings)}
        return replace(self, settings=_OwnOutputsSettings(**settings, own_outputs=Path(outputs)))


@dataclass(frozen=True)
class _OwnOutputsPaths(StudioPaths):
    own_outputs: Path

    @property
    def outputs(self) -> Path:
        return self.own_outputs


@dataclass(frozen=True)
class _OwnOutputsSettings(MachineSettings):
    own_outputs: Path = Path()

    @property
    def paths(self) -> StudioPaths:
        return _OwnOutputsPaths(self.data_dir, self.own_outputs)


def build_studio_context(settings: MachineSettings, access: Optional[Access] = None) -> StudioContext:
    base = build_engine_context(settings)
    return StudioContext(base.settings, base.hardware, base.models, JobRunner(base.hardware),
                         access or Access.local(settings.paths.root))
