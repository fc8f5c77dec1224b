"""What the studio knows about the machine and where the artist's data lives.

One ``MachineSettings`` is built from the command line in ``app.py`` and handed to every
engine; nothing here reads global state after construction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engines.errors import InvalidRequestError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
APP_NAME = "InkframeStudio"


def size_argument(text: str) -> tuple[int, int]:
    """The ``--size WIDTHxHEIGHT`` flag of the picture and video commands (``512x768``, ``512×768``)."""
    import argparse

    try:
        width, height = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give the size as WIDTHxHEIGHT, e.g. 512x768, not '{text}'") from None
    return width, height


def default_data_dir() -> Path:
    """platformdirs' per-user data dir, overridable by INKFRAME_DATA_DIR (tests, portable installs)."""
    env = os.environ.get("INKFRAME_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class StudioPaths:
    """The folders under the data dir; ``ensure()`` creates them."""

    root: Path

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def runtime(self) -> Path:
        """Lock and reservation files shared by the studio and CLI processes."""
        return self.root / "runtime"

    def all(self) -> dict[str, Path]:
        names = ("datasets", "runs", "models", "cache", "outputs", "logs", "runtime")
        return {name: getattr(self, name) for name in names}

    def ensure(self) -> "StudioPaths":
        for path in self.all().values():
            path.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class MachineSettings:
    """The flags every subcommand accepts: the machine and the data."""

    data_dir: Path = field(default_factory=default_data_dir)
    cpu: bool = False
    vram_limit_gb: Optional[float] = None
    ram_limit_gb: Optional[float] = None
    precision: str = "auto"
    offline: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())
        if self.precision not in PRECISIONS:
            raise InvalidRequestError(
                f"Precision '{self.precision}' is not one of {', '.join(PRECISIONS)}."
            )
        for name in ("vram_limit_gb", "ram_limit_gb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidRequestError(
                    f"--{name[:-3].replace('_', '-')} must be a positive number of GB, not {value}."
                )

    @property
    def paths(self) -> StudioPaths:
        return StudioPaths(self.data_dir)
