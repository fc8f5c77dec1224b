"""Text-to-Manga and its Pages on a shared studio: only `/generate`, `/compose_page` and `/chapter` are public,
named like their CLI commands' flags; a visitor's paths stay inside the data folder, refused before any job
runs; in demo mode each visitor's pictures and pages go to, and their history is read from, their own folder.

The tab is built in-process with ``Access(exposed=True, demo=True, owner="owner")`` and its endpoint
functions are called with a stand-in for gradio's request (anything with ``.username``).
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import types
from dataclasses import fields
from pathlib import Path

import pytest
from PIL import Image

from api_calls import finished
from engines.manga import chapter_cli, page_cli
from engines.manga.panels import PanelRequest
from engines.settings import MachineSettings
from studio.access import Access
from tiny_models import save_tiny_ip_adapter

OUTSIDE = "outside the studio's data folder"
OWNER = types.SimpleNamespace(username="owner")
VISITOR = types.SimpleNamespace(username="visitor")
TINY = dict(model="tiny-anime", sampler="DDIM", steps=2, cfg=2.0, width=64, height=64)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path):
    import gradio as gr

    from studio import manga_tab
    from studio.context import build_studio_context

    root = tmp_path_factory.mktemp("share-manga")
    data = root / "data"
    shutil.copytree(tiny_sd_dir, data / "models" / "tiny-anime")
    save_tiny_ip_adapter(data / "models" / "h94--IP-Adapter")
    (data / "outputs").mkdir(parents=True)
    (data / "cache" / "gradio" / "upload").mkdir(parents=True)  # where gradio keeps a visitor's upload
    Image.new("RGB", (48, 48), (220, 30, 40)).save(data / "cache" / "gradio" / "upload" / "hero.png")
    (root / "secret").mkdir()
    Image.new("RGB", (48, 48), (30, 30, 220)).save(root / "secret" / "hero.png")
    os.symlink(root / "secret" / "hero.png", data / "outputs" / "escape.png")
    settings = MachineSettings(data_dir=data, cpu=True, offline=True)
    ctx = build_studio_context(settings, Access(data, exposed=True, demo=True, owner="owner"))
    with gr.Blocks() as demo:
        tab = manga_tab.build(ctx)
    return types.SimpleNamespace(data=data, demo=demo, tab=tab, pages=tab["pages"], ctx=ctx)


def cli_names(module) -> list[str]:
    """The command's flags as their argparse names, "output" (a file the studio chooses) as "output_format"."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    dests = dict.fromkeys(a.dest for a in parser._actions if a.dest != "help")  # --rtl/--ltr share "reading"
    return ["output_format" if dest == "output" else dest for dest in dests]


def test_only_the_three_jobs_are_public_with_the_cli_names(shared) -> None:
    endpoints = shared.demo.get_api_info()["named_endpoints"]
    names = {name: [p["parameter_name"] for p in e["parameters"]] for name, e in endpoints.items()}
    assert set(names) == {"/generate", "/compose_page", "/chapter"}
    assert names["/compose_page"] == cli_names(page_cli)
    assert names["/chapter"] == cli_names(chapter_cli)
    assert set(names["/generate"]) == ({f.name for f in fields(PanelRequest)} - {"preview_every", "batch_count",
                                                                                 "hires_scale"} | {"batch", "hires"})
    public = [d["api_name"] for d in shared.demo.config["dependencies"] if d["api_visibility"] != "private"]
    assert sorted(public) == ["chapter", "compose_page", "generate"]  # no /dict from a State's default either


def test_gradio_hands_every_handler_its_request_and_event(shared) -> None:
    import gradio as gr
    from gradio.utils import get_type_hints

    handlers = [f.fn for f in shared.demo.fns.values() if f.fn]
    asking = [fn for fn in handlers if "request" in inspect.signature(fn).parameters]
    assert len(asking) > 10
    for fn in asking:  # found by its annotation, which must resolve to the class itself
        assert get_type_hints(fn)["request"] is gr.Request, fn.__name__
    for fn in (fn for fn in handlers if "event" in inspect.signature(fn).parameters):
        assert get_type_hints(fn)["event"] is gr.SelectData, fn.__name__


@pytest.mark.parametrize("outside", ["/etc/hostname", "../../x.png", "C:\\Windows\\x.png", "symlink"])
def test_a_path_outside_the_data_folder_is_refused_before_any_job(shared, outside: str, monkeypatch) -> None:
    import gradio as gr

    outside = str(shared.data / "outputs" / "escape.png") if outside == "symlink" else outside
    ran = []
    monkeypatch.setattr(shared.ctx.jobs, "run", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(shared.ctx.jobs, "stream", lambda *a, **k: ran.append(a))
    tab, pages = shared.tab, shared.pages
    calls = [lambda: finished(tab["generate"](prompt="ink", reference=outside, **TINY, request=VISITOR)),
             lambda: finished(tab["generate"](prompt="ink", second_reference=outside, **TINY, request=VISITOR)),
             lambda: finished(tab["generate"](prompt="ink", **{**TINY, "model": outside}, request=VISITOR)),
             lambda: tab["fill_from"](outside, VISITOR),
             lambda: finished(pages["compose_page"](panel=[f"1={outside}"], request=VISITOR)),
             lambda: finished(pages["compose_page"](panel=[str(shared.data / "cache" / "gradio" / "upload" / "hero.png")], reference=outside,
                                           request=VISITOR)),
             lambda: finished(pages["compose_page"](project=outside, request=VISITOR)),
             lambda: pages["chapter"](page=[outside], request=VISITOR)]
    if ":" not in outside:  # a LoRA tag's name ends at its first colon
        calls.append(lambda: finished(tab["generate"](prompt=f"ink, <lora:{outside}:0.8>", **TINY, request=VISITOR)))
    for call in calls:
        with pytest.raises(gr.Error, match=OUTSIDE):
            call()
    assert ran == []


def test_each_demo_user_has_their_own_pictures_pages_and_history(shared) -> None:
    import gradio as gr

    data, tab, pages = shared.data, shared.tab, shared.pages
    load, components = tab["on_load"]
    assert components[0].value == [] and components[1].choices == []  # a demo page starts empty, load fills it
    own = data / "outputs" / "visitors" / "visitor"
    owners = finished(tab["generate"](prompt="ink manga", seed=1, **TINY, request=OWNER))
    hero = str(data / "cache" / "gradio" / "upload" / "hero.png")  # an upload: allowed
    visitors = finished(tab["generate"](prompt="ink manga", seed=2, reference=hero, reference_scale=0.8, **TINY,
                               request=VISITOR))
    assert "IP-Adapter scale: 0.8" in visitors[0]["parameters"]
    assert Path(visitors[0]["file"]).is_relative_to(own) and not Path(owners[0]["file"]).is_relative_to(own)
    assert [p for p, _ in load(OWNER)[0]] == [owners[0]["file"]]
    assert [p for p, _ in load(VISITOR)[0]] == [visitors[0]["file"]]

    theirs = finished(pages["compose_page"](layout="1 1", panel=[hero], dpi=72, name="theirs", request=OWNER))
    mine = finished(pages["compose_page"](layout="1 1", panel=[hero], dpi=72, name="mine", request=VISITOR))
    assert Path(mine["project"]) == own / "pages" / "mine"
    assert [name for name, _ in load(OWNER)[1]["choices"]] == ["theirs"]
    assert [name for name, _ in load(VISITOR)[2]["choices"]] == ["mine"]
    book = pages["chapter"](page=["mine"], title="vol1", request=VISITOR)  # a name: the visitor's own page
    assert Path(book["file"]) == own / "pages" / "chapters" / "vol1.cbz" and book["pages"] == 1
    # The studio would write into the owner's page: on a demo link it is outside what a visitor may name.
    with pytest.raises(gr.Error, match="not one of your pages|outside the studio's data folder"):
        finished(pages["compose_page"](project=theirs["project"], bubble=["1:mine now"], request=VISITOR))
