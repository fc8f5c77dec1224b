"""The objects every engine call needs, built once per process by ``app.py``."""

from __future__ import annotations

from dataclasses import dataclass

from engines.hardware import HardwareManager
from engines.models import ModelStore
from engines.settings import MachineSettings


@dataclass
class EngineContext:
    settings: MachineSettings
    hardware: HardwareManager
    models: ModelStore


def build_engine_context(settings: MachineSettings) -> EngineContext:
    """Create the data folders, the one HardwareManager and the model store (no torch import yet)."""
    paths = settings.paths.ensure()
    hardware = HardwareManager(settings)
    models = ModelStore(paths.models, offline=settings.offline)
    return EngineContext(settings, hardware, models)
