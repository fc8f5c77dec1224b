"""Shared fixtures: tiny models saved in the real formats, and an isolated data folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Lets test modules import the shared builders as ``tiny_models`` without making tests a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import save_tiny_sd_pipeline, save_tiny_sd_single_file


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded Stable Diffusion pipeline saved as a diffusers folder; copy it before changing it."""
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny_sd_single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pipeline as one original-layout .safetensors checkpoint (needs ``tiny_sd_dir`` as config)."""
    return save_tiny_sd_single_file(tmp_path_factory.mktemp("tiny-sd-file") / "tiny-sd.safetensors", seed=0)


@pytest.fixture
def isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data folder, used by everything that reads INKFRAME_DATA_DIR."""
    data_dir = tmp_path / "inkframe-data"
    data_dir.mkdir()
    monkeypatch.setenv("INKFRAME_DATA_DIR", str(data_dir))
    return data_dir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run only where CUDA is available (a lent GPU machine, an artist's PC)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
