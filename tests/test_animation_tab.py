"""The Animation tab: its widgets cover the request, its views and "Use these settings" through its handlers,
a cancel, the `/animate` endpoint through gradio_client, and a browser that uploads a still and animates it.

The tiny SD checkpoint sits in models/ as "tiny-sd" (Text-to-Manga's first checkpoint, so the tab's base model
starts there) and the tiny motion adapter as "tiny-motion". The engine itself is tested in
tests/test_animation.py."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import shutil
import types
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from animation_models import save_tiny_motion_adapter
from engines.animation.output import request_fields
from engines.animation.request import AnimationRequest
from engines.live_action.photoreal import OUTPUT_FOLDER as LIVE_FOLDER
from engines.manga.panels import PANELS as MANGA_FOLDER
from engines.settings import MachineSettings
from studio.animation_view import (FORMAT_NAMES, NOT_WIDGETS, history, history_video, output_for,
                                   plays_as_video, read_sidecar, report_rows, request_from_values,
                                   summary_html, values_from_sidecar, widget_fields)

QUICK = dict(base_model="tiny-sd", motion_adapter="tiny-motion", frames=8, width=64, height=64, steps=2,
             cfg=2.0, strength=1.0, prompt="1girl, wind in hair", negative="")
LOCAL = types.SimpleNamespace(username=None)  # the gr.Request of an artist on their own machine


def still(path: Path) -> Path:
    """A drawn 'character' on white: a red body and a skin-coloured head."""
    image = Image.new("RGB", (96, 128), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((29, 45, 67, 115), fill=(200, 60, 50))
    draw.ellipse((34, 10, 62, 45), fill=(240, 200, 170))
    image.save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    data = tmp_path_factory.mktemp("anim-studio") / "data"
    models = data / "models"
    shutil.copytree(tiny_sd_dir, models / "tiny-sd")
    save_tiny_motion_adapter(models / "tiny-motion")
    (data / "outputs").mkdir(parents=True)
    still(data / "hero.png")
    for folder, name in ((MANGA_FOLDER, "picked-panel.png"), (LIVE_FOLDER, "real-hero.png")):
        # A picture in Text-to-Manga's history and one in Live-Action's, to take as the still.
        (data / "outputs" / folder / "2026-12-05").mkdir(parents=True)
        still(data / "outputs" / folder / "2026-12-05" / name)
    return data


@pytest.fixture(scope="module")
def tab(data: Path):
    import gradio as gr

    from studio import animation_tab
    from studio.context import build_studio_context

    ctx = build_studio_context(MachineSettings(data_dir=data, cpu=True, offline=True))
    with gr.Blocks() as demo:
        selected, picked = gr.State(None), gr.State(None)
        built = animation_tab.build(ctx, {"selected": selected}, {"picked": picked})
    built["demo"], built["ctx"] = demo, ctx
    return built


def values_for(tab, **changes) -> list:
    values = {name: widget.value for name, widget in tab["fields"].items()}
    values.update(changes)
    return [values[name] for name in tab["fields"]]


def engine_ready() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(f"engines.animation.{name}") for name in ("consistency", "video_io"))


needs_engine = pytest.mark.skipif(not engine_ready(), reason="the Animation engine is not complete yet")


# --- the widgets and the views -----------------------------------------------------------------------------


def test_widgets_and_the_endpoint_cover_every_request_field_with_its_default(tab) -> None:
    # A field added to AnimationRequest without a widget (or a NOT_WIDGETS entry saying why) fails here.
    request_names = {f.name for f in fields(AnimationRequest)}
    assert set(tab["fields"]) == set(widget_fields()) == request_names - set(NOT_WIDGETS) | {"output_format",
                                                                                            "save_frames"}
    values = {name: widget.value for name, widget in tab["fields"].items()}
    assert request_from_values(values) == AnimationRequest()  # the widgets start at the engine's defaults
    assert values["output_format"] == "mp4" and values["save_frames"] is False and values["seed"] == -1
    # `/animate` takes the same names (the CLI's flags), with the same defaults (image "" = text-to-video);
    # the request is gradio's, hidden from the API (tests/test_share_live_animation.py).
    parameters = dict(inspect.signature(tab["animate"]).parameters)
    assert parameters.pop("request").default is None
    assert list(parameters) == list(widget_fields())
    given = {name: p.default for name, p in parameters.items()}
    assert inspect.Parameter.empty not in given.values() and tab["animate"].__doc__
    assert request_from_values(given) == AnimationRequest()


def test_base_model_follows_the_sd_checkpoint_chosen_in_text_to_manga(data: Path) -> None:
    import gradio as gr

    from studio import animation_tab
    from studio.context import build_studio_context

    (data / "runs" / "origin-run" / "checkpoints").mkdir(parents=True, exist_ok=True)
    ctx = build_studio_context(MachineSettings(data_dir=data, cpu=True, offline=True))
    with gr.Blocks():
        model = gr.Dropdown(choices=["tiny-sd"], value="tiny-sd")
        built = animation_tab.build(ctx, {"selected": gr.State(None), "fields": {"model": model}})
    assert built["fields"]["base_model"].value == "tiny-sd"
    assert built["follow_manga"]("other-sd.safetensors")["value"] == "other-sd.safetensors"
    assert "value" not in built["follow_manga"]("origin-run")  # an Origin run cannot animate: left as it is
    assert "value" not in built["follow_manga"](None)


def test_widget_values_become_a_request(tmp_path: Path) -> None:
    values = {"image": str(tmp_path / "hero.png"), "seed": 12.0, "frames": 8.0, "steps": 20.0, "cfg": 6,
              "vae": None, "identity": 1, "width": None, "motion_lora": None, "output_format": "gif",
              "save_frames": True, "preview_every": 2}
    request = request_from_values(values, tmp_path)
    folder = tmp_path / "animation" / datetime.now().strftime("%Y-%m-%d")
    assert request.output.suffix == ".gif" and request.output.parent == folder
    assert request.output.stem.endswith("-12")  # <time>-<seed>, as the engine names an MP4
    assert request.frames_dir == folder / f"{request.output.stem}-frames"  # beside the video, under its name
    assert dataclasses.replace(request, output=None, frames_dir=None) == AnimationRequest(
        image=tmp_path / "hero.png", seed=12, frames=8, steps=20, cfg=6.0, vae=None, identity=True,
        preview_every=2)
    # Seed -1 is random (the file then has no seed in its name); no still is text-to-video; no frames unasked.
    random = request_from_values({"image": "", "seed": -1, "output_format": "webm"}, tmp_path)
    assert random.seed is None and random.image is None and random.frames_dir is None
    assert random.output.suffix == ".webm" and "-" not in random.output.stem
    assert request_from_values({"output_format": "mp4"}).output is None  # no outputs: the engine's choice
    # A name already taken (by any format, a sidecar or a first frame) is never reused.
    now = datetime(2026, 12, 5, 14, 30, 12)
    first = output_for(tmp_path, "webp", 7, now)
    assert first == tmp_path / "animation" / "2026-12-05" / "143012-7.webp"
    first.parent.mkdir(parents=True)
    first.with_suffix(".json").write_text("{}")
    assert output_for(tmp_path, "mp4", 7, now).name == "143012-7-2.mp4"
    assert FORMAT_NAMES == ("mp4", "gif", "webp", "webm")


def test_history_report_rows_and_a_sidecar_back_into_the_widgets(tab, tmp_path: Path) -> None:
    folder = tmp_path / "animation" / "2026-12-05"
    (folder / "new-frames").mkdir(parents=True)
    names = ("old.gif", "old.first.png", "new.mp4", "new.first.png", "new-frames/new-0000.png")
    for index, name in enumerate(names):
        path = folder / name
        Image.new("RGB", (8, 8)).save(path) if name.endswith(".png") else path.write_bytes(b"video")
        os.utime(path, (index, index))
    assert history(tmp_path) == [(str(folder / "new.first.png"), "2026-12-05/new"),
                                 (str(folder / "old.first.png"), "2026-12-05/old")]
    assert history_video(tmp_path, "2026-12-05/old") == str(folder / "old.gif")  # the caption: the video
    assert history_video(tmp_path, "../../../etc/passwd") is None
    assert history_video(tmp_path, "2026-12-05/gone") is None
    assert plays_as_video("a.mp4") and plays_as_video("a.WEBM") and not plays_as_video("a.gif")
    # The sidecar the engine writes: its request, made again, is the request that made the video (seed too).
    made = AnimationRequest(image=Path("/gone/hero.png"), prompt="1girl\n0: closed eyes\n8: smile", frames=24,
                            fps=12, steps=9, sampler="Euler a", still_mode="sparsectrl", identity=True,
                            loop="ping-pong", free_init=True, free_init_iters=3, vae="my-vae", seed=77,
                            output=folder / "new.mp4", frames_dir=folder / "new-frames", width=320,
                            height=448)
    document = {"video": "new.mp4", "first_frame": "new.first.png", "seed": 77, "size": [320, 448],
                "frames": 24, "frames_in_file": 46, "fps": 12, "loop": "ping-pong", "mode": "sparsectrl",
                "summary": "Steady motion (stability 0.91); keeps the character (identity 0.80: ...)",
                "consistency": {"stability": 0.9132, "identity": 0.8, "identity_colour": 0.9,
                                "colour_drift": 11.11, "biggest_jump": None, "weakest_frame": 5,
                                "reference": "still", "mask_source": "alpha", "mask_coverage": 0.4,
                                "working_size": [160, 224]},
                "notes": ["Decoded 4 frames at a time to fit the memory left."],
                "request": request_fields(made, 77), "frames_dir": str(folder / "new-frames")}
    (folder / "new.json").write_text(json.dumps(document), encoding="utf-8")
    assert read_sidecar(str(folder / "new.mp4")) == document == read_sidecar(str(folder / "new.first.png"))
    values = values_from_sidecar(document)
    assert "image" not in values and values["output_format"] == "mp4" and values["save_frames"] is True
    again = request_from_values({**values, "image": "/gone/hero.png"}, tmp_path)
    assert dataclasses.replace(again, output=None, frames_dir=None) == dataclasses.replace(
        made, output=None, frames_dir=None)
    rows = dict(report_rows(document))
    assert rows["Stability (each frame with the next)"] == "0.91"
    assert rows["Identity (against the still)"] == "0.80" and rows["Colour drift (Lab units)"] == "11.1"
    assert rows["Shape kept"] == "–" and rows["Biggest jump"] == "–"  # a number missing, or none
    assert rows["The character"] == "40 % of the picture, the still's transparency"
    assert rows["Frames in the file"] == "46" and rows["Frame rate"] == "12 fps" and rows["Size"] == "320x448"
    assert rows["Mode"] == "SparseCtrl from the still" and rows["Notes"].startswith("Decoded")
    assert "Steady motion" in summary_html(document["summary"]) and "<b>" not in summary_html("<b>")
    # "Use these settings" on that video gives every setting to the widgets, the still left as it is.
    updates = dict(zip(tab["fields"], tab["reuse"](str(folder / "new.mp4"), LOCAL)))
    assert updates["steps"]["value"] == 9 and updates["sampler"]["value"] == "Euler a"
    assert updates["seed"]["value"] == 77 and updates["loop"]["value"] == "ping-pong"
    assert updates["vae"]["value"] == "my-vae" and updates["still_mode"]["value"] == "sparsectrl"
    assert "value" not in updates["image"]  # gr.skip()
    assert set(tab["fields"]) - {"image"} <= {n for n, u in updates.items() if "value" in u}
    with pytest.raises(Exception, match="no sidecar JSON"):
        tab["reuse"](str(folder / "old.gif"), LOCAL)
    # A GIF plays in the picture, an MP4 in the video player.
    video, image = tab["players"](str(folder / "old.gif"))
    assert video["visible"] is False and image["visible"] is True and image["value"].endswith("old.gif")


def test_a_bad_still_is_one_sentence_before_anything_loads(tab, tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match=r"empty \(0 bytes\)"):
        next(tab["make_handler"]({}, LOCAL, *values_for(tab, image=str(empty), **QUICK)))
    with pytest.raises(Exception, match="stride"):
        next(tab["make_handler"]({}, LOCAL, *values_for(tab, context=8, stride=8, **QUICK)))


# --- the handlers with the engine, in this process ---------------------------------------------------------


@needs_engine
def test_cancel_stops_the_job_and_saves_nothing(tab, data: Path) -> None:
    before = history(data / "outputs")
    state: dict = {}
    run = tab["make_handler"](state, LOCAL, *values_for(tab, image=str(data / "hero.png"), **{**QUICK, "steps": 20}))
    updates = [next(run)]
    while "Starting" in updates[-1][0]:  # cancel once the job runs, not before it starts
        updates.append(next(run))
    tab["cancel"](state)
    updates += list(run)
    assert 'data-state="running"' in updates[1][0]
    assert 'data-state="stopped"' in updates[-1][0] and "nothing was saved" in updates[-1][0]
    assert history(data / "outputs") == before
    with tab["ctx"].hardware.gpu_job("after-cancel", timeout=1):  # the GPU lock was given back
        pass


# --- through the server: gradio_client and a browser ------------------------------------------------------


@pytest.fixture(scope="module")
def studio(data: Path):
    from test_app import Studio

    server = Studio(data, "--cpu", "--offline")
    yield server
    server.stop()


@needs_engine
def test_animate_endpoint_through_gradio_client(studio, data: Path, tmp_path: Path) -> None:
    from gradio_client import Client

    client = Client(studio.url, verbose=False)
    made = client.predict(image=str(data / "hero.png"), seed=5, output_format="gif", save_frames=True,
                          api_name="/animate", **QUICK)
    video = Path(made["file"])
    assert video.is_relative_to(data / "outputs" / "animation") and video.suffix == ".gif"
    assert made["seed"] == 5
    with Image.open(video) as gif:
        assert gif.format == "GIF" and gif.size == (64, 64) and gif.n_frames == made["frames"] == 8
    sidecar = json.loads(Path(made["sidecar_file"]).read_text(encoding="utf-8"))
    assert sidecar["summary"] == made["summary"] and made["summary"]
    assert sidecar["consistency"] == made["consistency"]
    assert sidecar["request"]["seed"] == 5 and sidecar["request"]["frames"] == 8
    assert Path(made["first_frame"]).is_file() and len(made["frame_files"]) == 8
    assert all(Path(p).parent == video.with_name(f"{video.stem}-frames") for p in made["frame_files"])
    assert history(data / "outputs")[0][0] == made["first_frame"]
    # A bad still is its one sentence, before any model loads.
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match=r"empty \(0 bytes\)"):
        client.predict(image=str(empty), api_name="/animate", **QUICK)


@needs_engine
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_browser_uploads_a_still_and_animates_it(studio, data: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from test_app import CHROMIUM, CHROMIUM_FLAGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(studio.url)
            page.get_by_role("tab", name="Animation").click()
            page.locator("#anim-image input[type=file]").set_input_files(str(data / "hero.png"))
            expect(page.locator("#anim-image img")).to_be_visible(timeout=15_000)
            models = page.locator("#anim-models").get_by_text("Models").first
            models.scroll_into_view_if_needed()
            models.click()
            # The base model starts at the SD 1.5 checkpoint Text-to-Manga chose.
            expect(page.locator("#anim-base-model input")).to_have_value("tiny-sd", timeout=15_000)
            adapter = page.locator("#anim-motion-adapter textarea, #anim-motion-adapter input").first
            adapter.scroll_into_view_if_needed()
            adapter.fill("tiny-motion")
            for element, value in (("#anim-frames", "8"), ("#anim-steps", "2"), ("#anim-width", "64"),
                                   ("#anim-height", "64"), ("#anim-seed", "11")):
                box = page.locator(f"{element} input[type=number]")
                box.scroll_into_view_if_needed()
                box.fill(value)
                box.press("Tab")
            animate = page.locator("#anim-animate")
            animate.scroll_into_view_if_needed()
            animate.click()
            page.locator('#anim-progress-bar[data-state="done"]').wait_for(timeout=60_000)
            expect(page.locator("#anim-result-video video")).to_be_visible(timeout=15_000)
            newest = history(data / "outputs")[0][0]
            summary = read_sidecar(newest)["summary"]
            expect(page.locator("#anim-summary .ink-summary__line")).to_have_text(summary, timeout=15_000)
            expect(page.locator("#anim-report-table")).to_contain_text("Frame rate", timeout=15_000)
            expect(page.locator("#anim-history .thumbnail-item").first).to_be_visible(timeout=15_000)
            page.screenshot(path=str(tmp_path / "animation-tab.png"), full_page=True)
            # An animation in the history gives its settings back.
            page.locator("#anim-random-seed").click()
            expect(page.locator("#anim-seed input")).to_have_value("-1", timeout=15_000)
            page.locator("#anim-history button.thumbnail-item").first.click()
            page.locator("#anim-reuse").click()
            expect(page.locator("#anim-seed input")).to_have_value("11", timeout=15_000)
            # The picture picked in Text-to-Manga, then the one shown in Live-Action, becomes the still.
            for tab_name, history_id, button, name in (
                    ("Text-to-Manga", "#manga-history", "#anim-from-manga", "picked-panel"),
                    ("Live-Action", "#live-history", "#anim-from-live", "real-hero")):
                page.get_by_role("tab", name=tab_name).click()
                page.locator(f"{history_id} button.thumbnail-item").first.click()
                page.get_by_role("tab", name="Animation").click()
                page.locator(button).scroll_into_view_if_needed()
                page.locator(button).click()
                expect(page.locator("#anim-image img")).to_have_attribute("src", re.compile(name),
                                                                           timeout=15_000)
        finally:
            browser.close()
