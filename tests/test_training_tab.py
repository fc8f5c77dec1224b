"""The Training tab, headless and in Chromium, over real tiny training runs it starts itself."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from engines.origin.model import checkpoints
from engines.origin.model.config import LossConfig
from engines.origin.training import runs
from engines.settings import MachineSettings
from test_origin_train import make_dataset, small_config
from test_training_runs import wait_for


def tiny_base(path: Path) -> Path:
    """A config file for the tab's "start from a config file": the tiny network of the trainer's tests."""
    small_config(sample_every_steps=10**6, validate_every_steps=2, milestones=()).save(path)
    return path


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    import gradio as gr

    from studio import training_tab
    from studio.context import build_studio_context

    data_dir = tmp_path_factory.mktemp("training-tab")
    make_dataset(data_dir / "datasets" / "tiny")
    ctx = build_studio_context(MachineSettings(data_dir=data_dir, cpu=True, offline=True))
    with gr.Blocks() as demo:
        built = training_tab.build(ctx)
    built["demo"], built["ctx"], built["base"] = demo, ctx, tiny_base(data_dir / "tiny.json")
    return built


def values(tab, **overrides) -> list:
    found = {name: component.value for name, component in tab["fields"].items()}
    found.update({"data": "tiny", "run": "tab-run", "model.resolution": 32, "train.epochs": 500,
                  "train.batch_size": 4, "train.mixed_precision": "auto", "model.expert_count": 1,
                  "base_config": str(tab["base"])})
    found.update(overrides)
    return [found[name] for name in tab["fields"]]


PLOT_KEYS = ("loss", "validation", "art", "experts", "routing", "lr", "speed", "memory")


def refresh(tab, name=None, state=None):
    state = {} if state is None else state
    view = dict(zip(["runs", "selected", "progress", "findings", *PLOT_KEYS, "sample", "slider", "checkpoints", "log"],
                    tab["refresh"](state, name, 0.6, False, "main", "all")))
    for key in PLOT_KEYS:  # a chart whose lines changed comes as an update that forces a redraw
        value = view[key]
        if isinstance(value, dict) and "value" in value:
            view[key], view[f"{key}_update"] = value["value"], value
    return view


def test_the_widgets_cover_what_a_run_is_started_with(tab):
    names = set(tab["fields"])
    assert {"data", "run", "model.resolution", "train.epochs", "train.batch_size", "train.mixed_precision",
            "model.expert_count", "train.learning_rate", "train.sample_prompts", "train.checkpoint_every_epochs",
            "train.safety_checkpoint_minutes", "train.validate_every_steps"} <= names
    assert {f"loss.{n}" for n in LossConfig.__dataclass_fields__ if n != "min_snr_gamma"} <= names


@pytest.mark.parametrize("overrides, sentence", [
    ({"run": ""}, "Name the run"),
    ({"data": ""}, "Choose the dataset folder"),
    ({"data": "/nowhere/at/all"}, "does not exist"),
    ({"model.resolution": 33}, "resolution must be"),
    ({"train.learning_rate": 5}, "learning rate must be"),
    ({"base_config": "/nowhere.json"}, "config file /nowhere.json does not exist"),
])
def test_bad_values_are_one_sentence_and_start_nothing(tab, overrides, sentence):
    import gradio as gr

    with pytest.raises(gr.Error, match=sentence):
        tab["start"](None, *values(tab, **{"run": "bad-run", **overrides}))
    assert not (tab["ctx"].settings.paths.runs / "bad-run" / "status.json").exists()


def test_start_watch_sample_save_stop_and_reattach(tab, tmp_path):
    import gradio as gr

    paths = tab["ctx"].settings.paths
    run = paths.runs / "tab-run"
    # No epoch checkpoints: the ones below come from Save now and Stop, however fast the run goes.
    message, _ = tab["start"](None, *values(tab, **{"train.checkpoint_every_epochs": 10**6}))  # None: local
    assert "Started **tab-run**" in message
    try:
        wait_for(lambda: runs.judge(run).state == "running" and runs.judge(run).step >= 3, 120, "training steps")
        state: dict = {}
        view = refresh(tab, "tab-run", state)
        assert view["runs"][0][0] == "tab-run" and view["runs"][0][1].startswith("running: step")
        assert 'data-state="running"' in view["progress"]
        assert set(view["loss"]["series"]) == {"total"} and len(view["loss"]) >= 1
        assert "validation" in set(view["validation"]["series"])
        assert set(view["routing"]["series"]) == {"color"}
        assert view["loss_update"]["x_lim"][1] >= view["loss"]["step"].max()  # every step inside the limits
        # Nothing new logged since: the plots are not sent again.
        again = refresh(tab, "tab-run", state)
        if again["progress"] == view["progress"]:  # (unless the run logged a step in between)
            assert again["loss"] == gr.skip()
        assert view["sample"] is None  # samples are due only every 10^6 steps

        assert "draws its sample prompts" in tab["steer"]("sample", "tab-run")
        wait_for(lambda: list((run / "samples").glob("step-*.png")), 60, "Sample now")
        view = refresh(tab, "tab-run", {})
        assert view["sample"] is not None and view["sample"].size[1] == 256
        assert tab["show_sample"]("tab-run", 0) is not None

        assert "saves a checkpoint" in tab["steer"]("save", "tab-run")
        wait_for(lambda: checkpoints.find_latest(run), 60, "Save now")
        assert refresh(tab, "tab-run", {})["checkpoints"][0][0].startswith("step-")

        chart = Path(tab["chart"]("tab-run"))
        assert chart.is_file() and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # A restarted studio: a new tab over the same folder knows the run.
        from studio import training_tab
        from studio.context import build_studio_context

        with gr.Blocks():
            fresh = training_tab.build(build_studio_context(tab["ctx"].settings))
        assert refresh(fresh, None)["selected"]["value"] == "tab-run"

        # The same run through the public API, as a script follows and stops it.
        status = tab["train_status"]("tab-run")
        assert status["run"] == "tab-run" and status["status"] == "running" and status["step"] >= 3
        assert status["loss"] is not None and status["total_steps"] and status["checkpoints"] >= 1
        assert status["newest_checkpoint"].startswith(str(Path("runs", "tab-run", "checkpoints", "step-")))
        assert status["samples"] and status["samples"][0].startswith(str(Path("runs", "tab-run", "samples")))
        stopped = tab["train_stop"]("tab-run")
        assert stopped["run"] == "tab-run" and "Stopping tab-run after this step" in stopped["message"]
        wait_for(lambda: runs.judge(run).state == "stopped", 60, "the stop")
        info = runs.judge(run)
        assert checkpoints.find_latest(run).step == info.step  # stopped where its newest checkpoint is
        checkpoints.load_for_inference(run)  # a loadable checkpoint
        assert "stopped" in refresh(tab, "tab-run")["runs"][0][1]
        assert "is stopped, not running" in tab["steer"]("save", "tab-run")
    finally:
        info = runs.judge(run)
        if info.active and info.process is not None:
            os.kill(info.process.pid, signal.SIGKILL)


def test_logs_filter_by_level_and_findings_are_sentences(tmp_path):
    from studio.training_view import findings, log_tail

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "main.log").write_text("2026-01-01 INFO started\n2026-01-01 WARNING slow disk\n2026-01-01 ERROR boom\n")
    assert log_tail(tmp_path, "main", "WARNING") == "2026-01-01 WARNING slow disk\n2026-01-01 ERROR boom"
    assert log_tail(tmp_path, "performance") == "(performance.log is empty so far)"
    (logs / "diagnosis.log").write_text(
        "x INFO step 10 gradients CHECK: exploding in unet: unet=500\n"
        "x INFO step 20 gradients OK: unet=1\n"
        "x INFO step 20 routing CHECK: entropy 0.2 (1 = all experts used); dead experts: light, scene; "
        "the router is collapsing onto few experts\n")
    (logs / "error.log").write_text("x ERROR step 7 (epoch 1): loss nan, gradient norm nan are not finite; ...\n")
    found = findings(tmp_path)
    assert not any("Exploding" in f for f in found)  # step 10's problem is gone by step 20
    assert any(f.startswith("Dead experts at step 20 (light, scene)") for f in found)
    assert any("collapsing" in f for f in found)
    assert any("1 step(s) skipped recently, the newest at step 7" in f for f in found)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_browser_starts_a_run_sees_it_learn_and_stops_it(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from test_app import CHROMIUM, CHROMIUM_FLAGS, Studio

    data_dir = tmp_path / "data"
    make_dataset(data_dir / "datasets" / "tiny")
    base = tiny_base(tmp_path / "tiny.json")
    studio = Studio(data_dir, "--cpu")
    run = data_dir / "runs" / "browser-run"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1400})
                page.goto(studio.url)
                page.get_by_role("tab", name="Training").click()
                data = page.locator("#training-data input")
                data.fill("tiny")
                data.press("Enter")
                page.locator("#training-name").get_by_role("textbox").fill("browser-run")
                for element, value in (("#training-resolution", "32"), ("#training-epochs", "500"),
                                       ("#training-batch", "4")):
                    box = page.locator(element).get_by_role("spinbutton")
                    box.fill(value)
                    box.press("Tab")
                page.get_by_text("Advanced (the defaults are shown)").click()
                page.locator("#training-base-config").get_by_role("textbox").fill(str(base))
                page.locator("#training-start").click()
                expect(page.locator("#training-message")).to_contain_text("Started", timeout=30_000)
                progress = page.locator('#training-progress[data-state="running"]')
                progress.wait_for(timeout=120_000)
                # The loss chart draws once the run has logged a few steps.
                expect(page.locator("#training-plot-loss canvas, #training-plot-loss svg").first).to_be_visible(
                    timeout=60_000)
                first_step = int(progress.get_attribute("data-step"))
                page.locator("#training-sample").click()
                expect(page.locator("#training-samples img")).to_be_visible(timeout=90_000)
                wait_for(lambda: int(page.locator("#training-progress").get_attribute("data-step")) > first_step,
                         60, "the progress to move")
                page.locator("#training-stop").click()
                page.locator('#training-progress[data-state="stopped"]').wait_for(timeout=90_000)
                # Both lines of the diffusion/validation chart are in its legend (drawn, not only sent).
                legend = page.locator("#training-plot-validation")
                expect(legend).to_contain_text("diffusion (training)", timeout=30_000)
                expect(legend).to_contain_text("validation", timeout=30_000)
                page.locator("#training-plot-validation").screenshot(path=str(tmp_path / "validation-plot.png"))
                page.screenshot(path=str(tmp_path / "training-tab.png"))
            finally:
                browser.close()
        # The same runs through the studio's API (gradio_client), as a script would steer them.
        from gradio_client import Client

        client = Client(studio.url, verbose=False)
        status = client.predict(run="browser-run", api_name="/train_status")
        assert status["run"] == "browser-run" and status["status"] == "stopped" and status["newest_checkpoint"]
        assert "is stopped, not running" in client.predict(run="browser-run", api_name="/train_stop")["message"]
    finally:
        info = runs.judge(run)
        if info.active and info.process is not None:
            os.kill(info.process.pid, signal.SIGKILL)
        studio.stop()
    assert checkpoints.find_latest(run) is not None


def test_an_empty_plot_keeps_numeric_axes():
    """The browser keeps a chart's axis types from its first data: an empty first frame must be numeric."""
    import gradio as gr

    from studio.training_view import chart_frames
    from engines.origin.training.monitor import RunMonitor

    empty = chart_frames(RunMonitor(Path("/nowhere")).refresh(), smoothing=0.6, log=True)
    plot = gr.LinePlot(x="step", y="value", color="series")
    for frame in empty.values():
        assert plot.postprocess(frame).datatypes == {"step": "quantitative", "value": "quantitative",
                                                     "series": "nominal"}
