"""`python app.py doctor`: what this machine offers the studio, for a bug report or a sanity check."""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata

from engines.context import EngineContext, build_engine_context
from engines.settings import MachineSettings

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "gradio",
            "sentence-transformers", "huggingface_hub", "safetensors", "nvidia-ml-py")
GB = 2**30


@dataclass
class DoctorReport:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, key: str, value: object) -> None:
        self.lines.append((key, str(value)))

    def format(self) -> str:
        width = max((len(k) for k, _ in self.lines), default=0)
        return "\n".join(f"{k.ljust(width)}  {v}" if k else "" for k, v in self.lines)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect_report(ctx: EngineContext) -> DoctorReport:
    report = DoctorReport()
    report.add("Python", f"{platform.python_version()} ({sys.executable})")
    report.add("System", f"{platform.system()} {platform.release()} {platform.machine()}")
    hw = ctx.hardware
    device = hw.device
    report.add("Device", f"{device.type}: {device.name} ({device.reason})")
    if device.gpu is not None:
        report.add("GPU", f"{device.gpu.name}, compute {device.gpu.capability[0]}.{device.gpu.capability[1]}, "
                          f"{device.gpu.total_bytes / GB:.1f} GB VRAM")
    else:
        report.add("GPU", "none found")
    precision = hw.precision
    report.add("Precision", f"{precision.inference} inference, {precision.training} training ({precision.reason})")
    memory = hw.read_memory()
    report.add("RAM", f"{memory.ram_total / GB:.1f} GB total, {memory.ram_available / GB:.1f} GB available")
    if memory.vram_total:
        report.add("VRAM", f"{memory.vram_total / GB:.1f} GB total, {(memory.vram_used or 0) / GB:.1f} GB in use")
    budget = hw.budget()
    report.add("Budget", f"{budget.models / GB:.2f} GB for models on {device.type} ({budget.source}), "
                         f"{budget.host / GB:.1f} GB CPU RAM for offloaded models")
    for package in PACKAGES:
        report.add(package, _version(package))
    report.add("", "")
    for name, path in ctx.settings.paths.all().items():
        report.add(f"{name} dir", path)
    report.add("Offline", "yes" if ctx.settings.offline else "no")
    report.add("", "")
    for known, path in ctx.models.presence():
        report.add(known.name, f"present at {path}" if path else f"missing ({known.repo_id})")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """doctor takes only the shared machine flags."""


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    ctx = build_engine_context(settings)
    print(collect_report(ctx).format())
    return 0
