"""The Dataset tab built headless: its widgets cover every request field, and its handlers collect,
show and prune a dataset against the fake sites."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from engines.dataset.request import CollectRequest, NetworkSettings, QualityThresholds, SourceSpec
from engines.dataset.sources import SOURCES
from engines.settings import MachineSettings
from fake_sites import FakeSites, danbooru_scenario


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    import gradio as gr

    from studio import dataset_tab
    from studio.context import build_studio_context

    ctx = build_studio_context(MachineSettings(data_dir=tmp_path_factory.mktemp("tab-data")))
    with gr.Blocks() as demo:
        built = dataset_tab.build(ctx)
    built["demo"], built["ctx"] = demo, ctx
    return built


def expected_field_names() -> set[str]:
    names = {f.name for f in fields(CollectRequest)} - {"sources", "thresholds", "network"}
    names |= {f"thresholds.{f.name}" for f in fields(QualityThresholds)}
    names |= {f"network.{f.name}" for f in fields(NetworkSettings)}
    for name, info in SOURCES.items():
        names |= {f"sources.{name}.enabled"} | {f"sources.{name}.{f}" for f in info.fields}
    return names


def test_widgets_cover_every_request_field(tab):
    assert set(tab["fields"]) == expected_field_names()
    spec_fields = {f.name for f in fields(SourceSpec)} - {"name"}
    assert set().union(*(info.fields for info in SOURCES.values())) == spec_fields
    # The widgets' defaults are the engine's defaults.
    values = {name: widget.value for name, widget in tab["fields"].items()}
    from studio.dataset_tab import request_from_values

    request = request_from_values(values)
    assert request.thresholds == QualityThresholds() and request.network == NetworkSettings()
    assert request.source_names() == ["danbooru"] and request.target == 100
    assert request.caption_template == "{tags}" and request.min_score is None


def values_for(tab, **changes):
    values = {name: widget.value for name, widget in tab["fields"].items()}
    values.update(changes)
    return [values[name] for name in tab["fields"]]


def test_collect_through_the_tab_then_remove_an_image(tab, tmp_path):
    import gradio as gr

    out = tmp_path / "ds"
    with FakeSites() as sites:
        scenario = danbooru_scenario(sites, valid=4, with_slow=False)
        args = values_for(tab, out_dir=str(out), target=3, **{
            "sources.danbooru.endpoint": sites.endpoint("danbooru"), "network.rate_limit": 0,
            "network.timeout_s": 2, "network.retries": 1, "network.backoff_s": 0.01})
        updates = list(tab["collect"](None, {}, *args))  # None: a local request
    progress, gallery, stems, stats = updates[-1]
    assert 'data-state="done"' in progress and 'data-kept="3"' in progress
    assert len(gallery) == 3 and len(stems) == 3
    assert set(stems) == {f"danbooru_{scenario.ids[n]}" for n in ("ok0", "ok1", "ok2")}
    assert stems[0] == f"danbooru_{scenario.ids['ok2']}"  # newest first
    assert ["Images", 3] in stats and ["from Danbooru", 3] in stats
    assert any(row[0] == "rejected: exact duplicate" for row in stats)
    # Progress events came through the job runner before the result.
    assert any('data-state="running"' in u[0] for u in updates[:-1])

    note, selected, gallery, stems_after, stats = tab["remove"](str(out), stems[0])
    assert "Removed" in note and selected is None and len(gallery) == 2 and stems[0] not in stems_after
    assert ["removed by you", 1] in stats
    assert json.loads((out / "dataset.json").read_text())["removed"] == 1
    with pytest.raises(gr.Error, match="Click an image"):
        tab["remove"](str(out), None)


def test_bad_values_become_one_sentence_errors(tab, tmp_path):
    import gradio as gr

    with pytest.raises(gr.Error, match="Choose at least one source"):
        list(tab["collect"](None, {}, *values_for(tab, out_dir=str(tmp_path), **{"sources.danbooru.enabled": False})))
    with pytest.raises(gr.Error, match="Google Custom Search needs an API key"):
        list(tab["collect"](None, {}, *values_for(tab, out_dir=str(tmp_path), **{"sources.cse.enabled": True})))
    with pytest.raises(gr.Error, match="The minimum long edge must be"):
        list(tab["collect"](None, {}, *values_for(tab, out_dir=str(tmp_path), **{"thresholds.min_long_edge": -5})))
    assert tab["view"](str(tmp_path / "nothing-here")) == ([], [], [["Images", 0]])
    assert not (tmp_path / "nothing-here").exists()


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_browser_collects_shows_and_removes(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from test_app import CHROMIUM, CHROMIUM_FLAGS, Studio

    with FakeSites() as sites:
        scenario = danbooru_scenario(sites, valid=4, with_slow=False)
        studio = Studio(tmp_path / "data")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1200})
                    page.goto(studio.url)
                    page.get_by_role("tab", name="Dataset").click()
                    # The statistics load with the page (an empty dataset folder so far).
                    expect(page.locator("#dataset-stats")).to_contain_text("Images", timeout=30_000)
                    page.locator("#dataset-danbooru-endpoint").get_by_role("textbox").fill(sites.endpoint("danbooru"))
                    target = page.locator("#dataset-target").get_by_role("spinbutton")
                    target.fill("3")
                    target.press("Tab")
                    page.locator("#dataset-start").click()
                    done = page.locator('#dataset-progress-bar[data-state="done"]')
                    done.wait_for(timeout=60_000)
                    assert done.get_attribute("data-kept") == "3"
                    thumbs = page.locator("#dataset-gallery button.thumbnail-item")
                    expect(thumbs).to_have_count(3, timeout=15_000)
                    thumbs.first.click()
                    expect(page.locator("#dataset-selected")).to_contain_text("Selected", timeout=15_000)
                    page.locator("#dataset-remove").click()
                    expect(page.locator("#dataset-selected")).to_contain_text("Removed", timeout=15_000)
                    expect(thumbs).to_have_count(2, timeout=15_000)
                    page.screenshot(path=str(tmp_path / "dataset-tab.png"), full_page=True)
                finally:
                    browser.close()
        finally:
            studio.stop()
    out = tmp_path / "data" / "datasets" / "default"
    kept = {p.stem for p in out.glob("*.jpg")}
    assert len(kept) == 2 and kept < {f"danbooru_{scenario.ids[n]}" for n in ("ok0", "ok1", "ok2")}
    assert len(list((out / ".inkframe" / "removed").glob("*.jpg.removed"))) == 1
