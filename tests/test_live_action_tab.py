"""The Live-Action tab: its widgets cover the request, its views, a batch and a cancel through its handlers, the
`/live_action` endpoint through gradio_client, and a browser that uploads a drawing and makes it real.

The tiny models sit in models/ under the folder names of the request's default Hugging Face ids, so the
tab's defaults find them offline; the endpoint test names them by path instead, as a script would.
The engine itself is tested in tests/test_live_action.py."""

from __future__ import annotations

import inspect
import json
import os
import re
import types
from dataclasses import fields
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from engines.live_action.request import LiveActionRequest
from engines.settings import MachineSettings
from live_action_models import default_folder, save_live_action_defaults
from studio.live_action_view import (history, history_file, report_rows, request_from_values, summary_html,
                                     values_from_report, widget_fields)

DEFAULTS = {f.name: f.default for f in fields(LiveActionRequest)}
QUICK = dict(steps=4, strength=0.5, cfg=2.0, sampler="DDIM", width=64, height=64)
LOCAL = types.SimpleNamespace(username=None)  # the gr.Request of an artist on their own machine


hub_folder = default_folder  # where the store looks for a hub id offline


def drawing(path: Path) -> Path:
    """A drawn 'character' on white: a red body and a skin-coloured head."""
    image = Image.new("RGB", (96, 128), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((29, 45, 67, 115), fill=(200, 60, 50))
    draw.ellipse((34, 10, 62, 45), fill=(240, 200, 170))
    image.save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    data = tmp_path_factory.mktemp("live-studio") / "data"
    models = data / "models"
    save_live_action_defaults(models, tiny_sd_dir)
    (data / "outputs").mkdir(parents=True)
    drawing(data / "hero.png")
    (data / "outputs" / "panels" / "2026-12-05").mkdir(parents=True)
    drawing(data / "outputs" / "panels" / "2026-12-05" / "picked-panel.png")  # in Text-to-Manga's history
    return data


@pytest.fixture(scope="module")
def tab(data: Path):
    import gradio as gr

    from studio import live_action_tab
    from studio.context import build_studio_context

    ctx = build_studio_context(MachineSettings(data_dir=data, cpu=True, offline=True))
    with gr.Blocks() as demo:
        selected = gr.State(None)
        built = live_action_tab.build(ctx, {"selected": selected})
    built["demo"], built["ctx"] = demo, ctx
    return built


def values_for(tab, **changes) -> list:
    values = {name: widget.value for name, widget in tab["fields"].items()}
    values.update(changes)
    return [values[name] for name in tab["fields"]]


# --- the widgets and the views ---------------------------------------------------------------------------------


def test_widgets_and_the_endpoint_cover_every_request_field_with_its_default(tab) -> None:
    assert set(tab["fields"]) == set(widget_fields()) == {f.name for f in fields(LiveActionRequest)} - {
        "output", "preview_every"}
    values = {name: widget.value for name, widget in tab["fields"].items()}
    assert request_from_values(values) == LiveActionRequest(image="")  # the widgets start at the engine's defaults
    # `/live_action` takes the same names, with the same defaults (maps "" = none, seed -1 = random); the
    # request is gradio's, hidden from the API (tests/test_share_live_animation.py).
    parameters = dict(inspect.signature(tab["live_action"]).parameters)
    assert parameters.pop("request").default is None
    assert set(parameters) == set(widget_fields())
    given = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    assert request_from_values({**given, "image": ""}) == LiveActionRequest(image="")
    assert parameters["image"].default is inspect.Parameter.empty and tab["live_action"].__doc__


def test_widget_values_become_a_request(tmp_path: Path) -> None:
    request = request_from_values({"image": str(tmp_path / "hero.png"), "seed": 12.0, "steps": 20.0, "cfg": 6,
                                   "depth_map": "", "pose_map": None, "vae": None, "identity": 1, "width": None,
                                   "controlnet_canny": None, "preview_every": 2})
    assert request == LiveActionRequest(image=tmp_path / "hero.png", seed=12, steps=20, cfg=6.0, vae="",
                                        identity=True, preview_every=2)
    assert request_from_values({"image": None, "seed": -1}).seed is None


def test_history_report_rows_and_saved_settings(tmp_path: Path) -> None:
    folder = tmp_path / "live-action" / "2026-12-05"
    folder.mkdir(parents=True)
    for index, name in enumerate(("old.png", "old.depth.png", "old.pose.png", "new.png", "new.canny.png")):
        Image.new("RGB", (8, 8)).save(folder / name)
        os.utime(folder / name, (index, index))
    assert history(tmp_path) == [(str(folder / "new.png"), "2026-12-05/new"),
                                 (str(folder / "old.png"), "2026-12-05/old")]
    assert history_file(tmp_path, "2026-12-05/old") == str(folder / "old.png")  # a caption leads back to the file
    assert history_file(tmp_path, "../../../etc/passwd") is None and history_file(tmp_path, "2026-12-05/gone") is None
    document = {"seed": 7, "background": "transparent", "size": [64, 64], "notes": ["Transparency restored."],
                "summary": "Structure kept 80 % · colours 90 % faithful", "report": {
                    "fidelity": 0.8, "edge_correlation": 0.9, "variance_ratio": 0.88, "colour_score": 0.9,
                    "colour_score_before_correction": 0.7, "colour_drift": 11.1, "colour_drift_before_correction": 42.9,
                    "entropy_ratio": 1.25, "mask_coverage": 0.4}, "request": {
                    "image": "/gone/hero.png", "steps": 4, "seed": 7, "vae": None, "output": None, "prompt": "x"}}
    rows = dict(report_rows(document))
    assert rows["Structure kept (fidelity)"] == "80 %" and rows["Colour score before correction"] == "70 %"
    assert rows["Colour drift (Lab units)"] == "11.1 (before correction 42.9)" and rows["Background"] == "transparent"
    assert rows["Texture (entropy ratio)"] == "1.25x" and rows["Notes"] == "Transparency restored."
    assert values_from_report(document) == {"steps": 4, "seed": 7, "vae": "", "prompt": "x"}  # settings, no pictures
    assert "Structure kept 80 %" in summary_html(document["summary"]) and "<b>" not in summary_html("<b>")


# --- the handlers, in this process ---------------------------------------------------------------------------


def test_a_batch_makes_the_good_pictures_and_lists_the_broken_one(tab, data: Path, tmp_path: Path) -> None:
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    drawing(drawings / "a-hero.png")
    (drawings / "b-broken.png").write_bytes(b"")
    out = tmp_path / "real"
    updates = list(tab["batch_handler"]({}, LOCAL, str(drawings), str(out), *values_for(tab, **QUICK)))
    progress, rows, _ = updates[-1]
    assert 'data-state="done"' in progress and "1 picture made, 1 skipped (b-broken.png)" in progress
    assert rows[0][0] == "a-hero.png" and rows[0][1].startswith("Structure kept")
    assert rows[1][0] == "b-broken.png" and "empty (0 bytes)" in rows[1][1]
    assert (out / "a-hero.png").is_file() and (out / "a-hero.json").is_file()
    # "Use these settings" on a result gives its settings back to the widgets, the pictures left as they are.
    updates = dict(zip(tab["fields"], tab["reuse"](str(out / "a-hero.png"), LOCAL)))
    assert updates["steps"]["value"] == 4 and updates["sampler"]["value"] == "DDIM"
    assert "value" not in updates["image"] and "value" not in updates["depth_map"]  # gr.skip()
    with pytest.raises(Exception, match="does not exist"):
        list(tab["batch_handler"]({}, LOCAL, str(tmp_path / "nowhere"), str(out), *values_for(tab, **QUICK)))


def test_cancel_stops_the_job_and_saves_nothing(tab, data: Path) -> None:
    before = history(data / "outputs")
    state: dict = {}
    run = tab["make_handler"](state, LOCAL, *values_for(tab, image=str(data / "hero.png"), **QUICK))
    updates = [next(run)]
    while "Starting" in updates[-1][0]:  # cancel once the job runs, not before it starts
        updates.append(next(run))
    tab["cancel"](state)
    updates += list(run)
    assert 'data-state="running"' in updates[1][0]
    assert 'data-state="stopped"' in updates[-1][0] and "nothing was saved" in updates[-1][0]
    assert history(data / "outputs") == before


# --- through the server: gradio_client and a browser ----------------------------------------------------------


@pytest.fixture(scope="module")
def studio(data: Path):
    from test_app import Studio

    server = Studio(data, "--cpu", "--offline")
    yield server
    server.stop()


def test_live_action_endpoint_through_gradio_client(studio, data: Path, tmp_path: Path) -> None:
    from gradio_client import Client

    models = data / "models"
    client = Client(studio.url, verbose=False)
    made = client.predict(image=str(data / "hero.png"), prompt="ink manga", negative="", seed=5,
                          base_model=str(hub_folder(models, "base_model")), vae="",
                          controlnet_depth=str(hub_folder(models, "controlnet_depth")),
                          controlnet_pose=str(hub_folder(models, "controlnet_pose")),
                          depth_model=str(hub_folder(models, "depth_model")),
                          pose_model=str(hub_folder(models, "pose_model")), long_side=64, steps=2, strength=0.5,
                          sampler="DDIM", colour_transfer="histogram", api_name="/live_action")
    picture = Path(made["file"])
    assert picture.is_relative_to(data / "outputs" / "live-action") and made["seed"] == 5
    assert Image.open(picture).format == "PNG" and Image.open(picture).size == (64, 64)
    report = json.loads(Path(made["report_file"]).read_text(encoding="utf-8"))
    assert report["summary"] == made["summary"] and made["summary"].startswith("Structure kept")
    assert report["report"] == made["report"] and made["report"]["colour_score_before_correction"] is not None
    assert set(made["maps"]) == {"depth", "pose"} and all(Path(p).is_file() for p in made["maps"].values())
    # A bad picture is its one sentence, before any model loads.
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match=r"The picture empty.png is empty \(0 bytes\): export it again."):
        client.predict(image=str(empty), api_name="/live_action")


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_browser_uploads_a_drawing_and_makes_it_real(studio, data: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from test_app import CHROMIUM, CHROMIUM_FLAGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(studio.url)
            page.get_by_role("tab", name="Live-Action").click()
            page.locator("#live-image input[type=file]").set_input_files(str(data / "hero.png"))
            expect(page.locator("#live-image img")).to_be_visible(timeout=15_000)
            page.locator("#live-models").get_by_text("Models").first.click()
            for element, value in (("#live-steps", "4"), ("#live-width", "64"), ("#live-height", "64"),
                                   ("#live-seed", "11")):
                box = page.locator(f"{element} input[type=number]")
                box.scroll_into_view_if_needed()
                box.fill(value)
                box.press("Tab")
            make = page.locator("#live-make")
            make.scroll_into_view_if_needed()
            make.click()
            page.locator('#live-progress-bar[data-state="done"]').wait_for(timeout=60_000)
            expect(page.locator("#live-result img")).to_be_visible(timeout=15_000)
            expect(page.locator("#live-summary")).to_contain_text("Structure kept", timeout=15_000)
            expect(page.locator("#live-maps .thumbnail-item")).to_have_count(2, timeout=15_000)
            expect(page.locator("#live-report-table")).to_contain_text("Colour score", timeout=15_000)
            expect(page.locator("#live-history .thumbnail-item").first).to_be_visible(timeout=15_000)
            page.screenshot(path=str(tmp_path / "live-action-tab.png"), full_page=True)
            # A picture in the history gives its settings back.
            page.locator("#live-random-seed").click()
            expect(page.locator("#live-seed input")).to_have_value("-1", timeout=15_000)
            page.locator("#live-history button.thumbnail-item").first.click()
            page.locator("#live-reuse").click()
            expect(page.locator("#live-seed input")).to_have_value("11", timeout=15_000)
            # The picture picked in Text-to-Manga's history becomes the drawing.
            page.get_by_role("tab", name="Text-to-Manga").click()
            page.locator("#manga-history button.thumbnail-item").first.click()
            page.get_by_role("tab", name="Live-Action").click()
            page.locator("#live-from-manga").scroll_into_view_if_needed()
            page.locator("#live-from-manga").click()
            expect(page.locator("#live-image img")).to_have_attribute("src", re.compile("picked-panel"),
                                                                       timeout=15_000)
        finally:
            browser.close()
