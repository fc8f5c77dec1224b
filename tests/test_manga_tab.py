"""The Text-to-Manga tab: its data views, the backend-neutral request, the `/generate` endpoint through
gradio_client, and a browser that types a prompt, generates, sees the preview and result, and reuses settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from engines.errors import InvalidRequestError
from engines.manga.panels import PanelRequest, check
from engines.sd15.png_params import GenerationParameters, save_png
from engines.settings import MachineSettings
from studio.manga_view import (fields_from_png, history, model_choices, parameters_text, request_from_values,
                               with_lora, with_word)
from tiny_models import save_tiny_ip_adapter


@pytest.fixture
def paths(tmp_path: Path, tiny_sd_dir: Path):
    settings = MachineSettings(data_dir=tmp_path / "data", cpu=True, offline=True)
    p = settings.paths.ensure()
    shutil.copytree(tiny_sd_dir, p.models / "tiny-anime")
    (p.models / "loras").mkdir()
    (p.runs / "my-style" / "checkpoints" / "epoch-000001").mkdir(parents=True)
    (p.runs / "my-style" / "checkpoints" / "epoch-000001" / "meta.json").write_text("{}")
    (p.runs / "untrained" / "checkpoints").mkdir(parents=True)
    return p


def test_the_model_picker_lists_origin_runs_with_checkpoints_and_sd_checkpoints(paths) -> None:
    assert model_choices(paths) == [("Origin · my-style", "my-style"), ("SD 1.5 · tiny-anime", "tiny-anime")]


def test_lora_and_embedding_buttons_write_a1111_syntax() -> None:
    assert with_lora("1girl", "lineart", 0.8) == "1girl, <lora:lineart:0.8>"
    assert with_lora("", "flat", 1.0) == "<lora:flat:1>"
    assert with_word("lowres", "easyneg") == "lowres, easyneg" and with_word("x", None) == "x"


def test_widget_values_become_a_request_and_bad_ones_a_sentence(paths) -> None:
    request = request_from_values({"model": "tiny-anime", "prompt": "ink", "seed": -1, "steps": 20.0, "cfg": 7,
                                   "width": 512, "height": 768, "vae": None, "hires_scale": 1})
    assert request == PanelRequest(model="tiny-anime", prompt="ink", steps=20, cfg=7.0, width=512, height=768)
    assert check(request, paths) == "sd15"
    assert check(PanelRequest(model="my-style", prompt="ink"), paths) == "origin"
    for wrong, words in ((PanelRequest(model="my-style", prompt="ink", hires_scale=2.0), "SD 1.5 checkpoints"),
                         (PanelRequest(model="my-style", prompt="ink", second_reference="b.png"), "takes one"),
                         (PanelRequest(model="tiny-anime", upscale=2), "Origin models"),
                         (PanelRequest(model="tiny-anime", prompt="(ink"), "never closed"),
                         (PanelRequest(model=""), "Choose a model")):
        with pytest.raises(InvalidRequestError, match=words):
            check(wrong, paths)


def test_history_is_newest_first_and_a_png_fills_the_fields(paths, tmp_path: Path) -> None:
    import os

    folder = paths.outputs / "panels" / "2026-12-05"
    a1111 = GenerationParameters(prompt="1girl, (ink:1.2)", negative="lowres", steps=28, sampler="Euler a", cfg=6.5,
                                 seed=77, width=512, height=640, model="tiny-anime", clip_skip=2)
    older = save_png(Image.new("RGB", (8, 8)), folder / "older.png", a1111, {})
    os.utime(older, (1, 1))
    newer = save_png(Image.new("RGB", (8, 8)), folder / "newer.png", a1111, {"backend": "sd15", "request": {
        "model": "tiny-anime", "prompt": "cat", "seed": 9, "steps": 3, "batch_count": 1, "vae": None}})
    assert [Path(p).name for p, _ in history(paths.outputs)] == ["newer.png", "older.png"]
    values = fields_from_png(str(older), paths)
    assert values == {"prompt": "1girl, (ink:1.2)", "negative": "lowres", "steps": 28, "sampler": "Euler a",
                      "cfg": 6.5, "seed": 77, "width": 512, "height": 640, "clip_skip": 2, "hires_scale": 1.0,
                      "model": "tiny-anime"}
    assert fields_from_png(str(newer), paths)["prompt"] == "cat"  # Inkframe's own JSON wins
    assert "Seed: 77" in parameters_text(str(older))
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert parameters_text(str(plain)) == "This picture carries no generation settings."


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path):
    from test_app import Studio

    data = tmp_path_factory.mktemp("manga-studio") / "data"
    shutil.copytree(tiny_sd_dir, data / "models" / "tiny-anime")
    save_tiny_ip_adapter(data / "models" / "h94--IP-Adapter")
    (data / "outputs").mkdir(parents=True)
    Image.new("RGB", (48, 48), (220, 30, 40)).save(data / "outputs" / "hero.png")
    server = Studio(data, "--cpu", "--offline")
    yield server, data
    server.stop()


def test_generate_endpoint_through_gradio_client(studio) -> None:
    from gradio_client import Client

    server, data = studio
    client = Client(server.url, verbose=False)
    made = client.predict(prompt="ink manga", model="tiny-anime", sampler="DDIM", steps=2, cfg=2.0, width=64,
                          height=64, seed=5, batch=2, api_name="/generate")
    assert [m["seed"] for m in made] == [5, 6]
    assert all(Path(m["file"]).is_file() and Path(m["file"]).is_relative_to(data / "outputs") for m in made)
    assert "Seed: 5" in made[0]["parameters"] and "Sampler: DDIM" in made[0]["parameters"]
    hero = client.predict(prompt="ink manga", model="tiny-anime", sampler="DDIM", steps=2, width=64, height=64,
                          seed=5, reference=str(data / "outputs" / "hero.png"), reference_scale=0.8,
                          api_name="/generate")
    assert "IP-Adapter scale: 0.8" in hero[0]["parameters"]
    with pytest.raises(Exception, match="never closed"):
        client.predict(prompt="(ink", model="tiny-anime", api_name="/generate")


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_browser_generates_with_a_preview_and_reuses_settings_from_history(studio, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from test_app import CHROMIUM, CHROMIUM_FLAGS

    server, _ = studio
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(server.url)
            page.get_by_role("tab", name="Text-to-Manga").click()
            # The only model is chosen already; the note says which backend's settings apply.
            expect(page.locator("#manga-model input")).to_have_value("SD 1.5 · tiny-anime", timeout=15_000)
            expect(page.locator("#manga-backend")).to_contain_text("SD 1.5 checkpoint", timeout=15_000)
            page.locator("#manga-prompt textarea").fill("ink manga, browser test")
            page.locator("#manga-sampler input").click()
            page.get_by_role("option", name="Euler a", exact=True).click()
            for element, value in (("#manga-steps", "4"), ("#manga-width", "64"), ("#manga-height", "64"),
                                   ("#manga-seed", "11")):
                box = page.locator(f"{element} input[type=number]")
                box.fill(value)
                box.press("Tab")
            page.locator("#manga-generate").click()
            page.locator('#manga-progress-bar[data-state="done"]').wait_for(timeout=90_000)
            expect(page.locator("#manga-preview img")).to_be_visible(timeout=15_000)
            expect(page.locator("#manga-results img").first).to_be_visible(timeout=15_000)
            expect(page.locator("#manga-parameters textarea")).to_have_value(
                __import__("re").compile("Seed: 11"), timeout=15_000)
            page.screenshot(path=str(tmp_path / "manga-tab.png"), full_page=True)
            # Reuse: change the prompt, pick the picture in the history, take its settings back.
            page.locator("#manga-prompt textarea").fill("something else")
            page.locator("#manga-history button.thumbnail-item").first.click()
            page.locator("#manga-reuse").click()
            expect(page.locator("#manga-prompt textarea")).to_have_value("ink manga, browser test", timeout=15_000)
            expect(page.locator("#manga-seed input")).to_have_value("11", timeout=15_000)
        finally:
            browser.close()


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_generate_with_this_opens_a_training_checkpoint_in_text_to_manga(studio) -> None:
    import json

    from playwright.sync_api import expect, sync_playwright

    from test_app import CHROMIUM, CHROMIUM_FLAGS

    server, data = studio
    checkpoint = data / "runs" / "drawn" / "checkpoints" / "epoch-000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "meta.json").write_text(json.dumps({"epoch": 2, "step": 24, "kind": "epoch", "loss": 0.1}))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(server.url)
            page.get_by_role("tab", name="Training").click()
            page.get_by_role("button", name="Checkpoints").click()
            expect(page.locator("#training-checkpoints")).to_contain_text("epoch-000002", timeout=30_000)
            page.locator("#training-checkpoints").get_by_text("epoch-000002").last.click()
            expect(page.locator("#training-picked")).to_contain_text("epoch-000002 chosen", timeout=15_000)
            page.locator("#training-generate-with").click()
            expect(page.get_by_role("tab", name="Text-to-Manga")).to_have_attribute("aria-selected", "true",
                                                                                    timeout=15_000)
            expect(page.locator("#manga-model input")).to_have_value(str(checkpoint), timeout=15_000)
            expect(page.locator("#manga-backend")).to_contain_text("Origin model", timeout=15_000)
        finally:
            browser.close()
