"""Every example in docs/api.md, run as written against a real studio with tiny models.

The examples are written for an artist's machine (512×768, 25 steps, their own folders); the only
changes made here are the sizes, step counts and folders listed in ``TINY``, and each must still be
found in the page, so an example that drifts from these tests fails instead of going unchecked.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animation_models import save_tiny_motion_adapter
from engines.animation.request import AnimationRequest
from live_action_models import save_live_action_defaults
from test_app import Studio
from test_live_action_tab import drawing
from test_training_tab import tiny_base

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
LOGIN = ("me", "a-long-password")


def tiny(place: Path) -> dict[str, str]:
    """What the examples say -> what this test runs instead."""
    return {
        'Client("http://127.0.0.1:7860/", auth=("me", "a-long-password"))':
            'Client(STUDIO_URL, auth=("me", "a-long-password"), verbose=False)',
        "steps=25": "steps=2",
        "steps=30": "steps=2",
        "width=512, height=768": "width=64, height=64",
        "dpi=350": "dpi=72",
        "strength=0.65,": "strength=0.65, long_side=64,",
        "frames=16,": "frames=4, width=64, height=64, context=4, stride=2,",
        'handle_file("hero.png")': f'handle_file("{place / "hero.png"}")',
        'folder="/home/me/drawings"': f'folder="{place / "drawings"}"',
        "target=200": "target=6",
        "resolution=64, epochs=100": f'resolution=32, epochs=500, batch_size=4, config="{place / "tiny.json"}"',
        "time.sleep(5)": "time.sleep(0.5)",
    }


def examples(text: str, replacements: dict[str, str]) -> list[str]:
    for said, run in replacements.items():
        assert said in text, f"docs/api.md no longer says {said!r}: update this test's TINY with it"
        text = text.replace(said, run)
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    place = tmp_path_factory.mktemp("api-docs")
    models = place / "data" / "models"
    shutil.copytree(tiny_sd_dir, models / "anything-v5")
    # Live-Action's and Animation's defaults, where the model store finds a hub id offline.
    save_live_action_defaults(models, tiny_sd_dir)
    shutil.copytree(tiny_sd_dir, models / AnimationRequest.base_model.replace("/", "--"))
    save_tiny_motion_adapter(models / AnimationRequest.motion_adapter.replace("/", "--"))
    drawing(place / "hero.png")
    (place / "drawings").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # sharp, colourful and different enough for the collector's quality filters
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(place / "drawings" / f"d{i}.png")
    tiny_base(place / "tiny.json")
    return place


@pytest.fixture(scope="module")
def studio(place: Path):
    server = Studio(place / "data", "--cpu", "--offline", "--auth", ":".join(LOGIN))
    yield server
    server.stop()


def test_every_api_example_runs_as_written(studio, place: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.origin.training import runs

    blocks = examples(DOC.read_text(encoding="utf-8"), tiny(place))
    assert len(blocks) == 6  # connecting, pictures, pages, Live-Action, Animation, datasets and training
    monkeypatch.chdir(place)  # where an artist's script would run; back to the repository afterwards
    run = place / "data" / "runs" / "my-style-v1"
    try:
        for block in blocks:
            scope = {"STUDIO_URL": studio.url}
            exec(compile(block, str(DOC), "exec"), scope)  # noqa: S102 - our own documentation
            printed = capsys.readouterr().out
            if "/compose_page" in block:
                assert Path(scope["page"]["file"]).is_file() and Path(scope["book"]["file"]).suffix == ".cbz"
            elif "/generate" in block:
                assert len(scope["pictures"]) == 2 and Path(scope["pictures"][0]["file"]).is_file()
            if "/live_action" in block:
                assert Path(scope["real"]["file"]).is_file() and scope["real"]["summary"] in printed
            if "/animate" in block:
                assert Path(scope["clip"]["file"]).suffix == ".mp4" and scope["clip"]["frames"] == 4
            if "/train_start" in block:
                assert scope["dataset"]["images"] == 6 and scope["started"]["run"] == "my-style-v1"
                assert scope["status"]["status"] == "running" and "my-style-v1" in scope["stopped"]["message"]
                client, deadline = scope["client"], time.monotonic() + 120
                while client.predict(run="my-style-v1", api_name="/train_status")["status"] != "stopped":
                    assert time.monotonic() < deadline, "the run did not stop"
                    time.sleep(1)
    finally:
        info = runs.judge(run)
        if info.active and info.process is not None:
            os.kill(info.process.pid, signal.SIGKILL)
