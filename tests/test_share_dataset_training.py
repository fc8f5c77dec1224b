"""Sharing the studio (#14), Dataset and Training tabs: their public API is /collect, /train_start,
/train_status and /train_stop, named like the CLI's flags; a demo link keeps them for the owner, and
on a shared studio a visitor's folders must lie inside the data folder."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from api_calls import finished
import app
from engines.origin.training import runs
from engines.settings import MachineSettings
from studio.access import OWNER_ONLY, Access
from studio.training_view import TRAIN_FLAGS
from test_origin_train import make_dataset, small_config

OWNER, VISITOR = SimpleNamespace(username="owner"), SimpleNamespace(username="visitor")
OUTSIDE = "is outside the studio's data folder"
QUICK = {"min_edge": 16, "min_short_edge": 16, "min_sharpness": 0.0, "min_colour_std": 0.0}


def cli_flags(add_arguments) -> list[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return [action.dest for action in parser._actions if action.dest != "help"]


def noise_images(folder: Path, count: int = 3) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"mine_{i}.png")
    return folder


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """Both tabs in one Blocks over a data folder with a tiny dataset, a folder of images and a tiny config."""
    import gradio as gr

    from studio import dataset_tab, training_tab
    from studio.context import build_studio_context

    data_dir = tmp_path_factory.mktemp("share-data")
    make_dataset(data_dir / "datasets" / "tiny")
    noise_images(data_dir / "datasets" / "drawings")
    small_config(sample_every_steps=10**6, validate_every_steps=0, milestones=()).save(data_dir / "tiny.json")
    outside = tmp_path_factory.mktemp("share-outside")
    for folder in (data_dir, data_dir / "datasets", data_dir / "runs"):  # "link" leads out from every base
        folder.mkdir(exist_ok=True)
        (folder / "link").symlink_to(outside, target_is_directory=True)
    ctx = build_studio_context(MachineSettings(data_dir=data_dir, cpu=True, offline=True))
    with gr.Blocks() as demo:
        with gr.Tabs():
            dataset = dataset_tab.build(ctx)
            training = training_tab.build(ctx)
    return SimpleNamespace(demo=demo, ctx=ctx, data_dir=data_dir, dataset=dataset, training=training)


def shared(studio, *, demo: bool) -> SimpleNamespace:
    """The same tabs, rebuilt over the same data folder for a studio shown to others."""
    import gradio as gr

    from studio import dataset_tab, training_tab

    ctx = dataclasses.replace(studio.ctx, access=Access(studio.data_dir, exposed=True, demo=demo, owner="owner"))
    with gr.Blocks():
        return SimpleNamespace(ctx=ctx, dataset=dataset_tab.build(ctx), training=training_tab.build(ctx))


@pytest.fixture(scope="module")
def demo_link(studio):
    return shared(studio, demo=True)


@pytest.fixture(scope="module")
def shared_studio(studio):
    return shared(studio, demo=False)


def test_the_public_api_is_the_cli_by_name(studio):
    from engines.dataset.cli import add_arguments as collect_arguments
    from engines.origin.training.cli import add_arguments as train_arguments

    endpoints = studio.demo.get_api_info()["named_endpoints"]
    assert set(endpoints) == {"/collect", "/train_start", "/train_status", "/train_stop"}
    names = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()}
    assert names["/collect"] == cli_flags(collect_arguments)
    assert set(names["/train_start"]) == set(TRAIN_FLAGS) == set(cli_flags(train_arguments)) - {"dashboard", "chart",
                                                                                                  "output"}
    assert names["/train_status"] == names["/train_stop"] == ["run"]
    defaults = {p["parameter_name"]: p.get("parameter_default") for p in endpoints["/collect"]["parameters"]}
    assert defaults["target"] == 100 and defaults["min_edge"] == 512 and defaults["caption_template"] == "{tags}"
    assert studio.dataset["tab"].id == "dataset" and studio.training["tab"].id == "training"


def test_collect_from_a_folder_through_the_api(studio):
    api = studio.dataset["collect_api"]
    answer = finished(api(["folder"], folder="drawings", out="api-set", target=2, **QUICK))
    assert answer["images"] == 2 and answer["target"] == 2 and answer["out"] == str(Path("datasets", "api-set"))
    assert "holds 2 of 2 images" in answer["summary"]
    assert len(list((studio.data_dir / "datasets" / "api-set").glob("*.png"))) == 2


def test_bad_api_values_are_one_sentence(studio):
    import gradio as gr

    with pytest.raises(gr.Error, match="Choose a source"):
        finished(studio.dataset["collect_api"]([]))
    with pytest.raises(gr.Error, match="The minimum long edge must be"):
        finished(studio.dataset["collect_api"](["folder"], folder="drawings", out="bad", min_edge=-5))
    with pytest.raises(gr.Error, match="There is no run nowhere"):
        studio.training["train_status"]("nowhere")
    with pytest.raises(gr.Error, match="resolution must be"):
        studio.training["train_start"]("bad-api-run", data="tiny", resolution=33)
    with pytest.raises(gr.Error, match="sr stage trains from scratch"):
        studio.training["train_start"]("bad-api-run", data="tiny", stage="sr", resume=True)
    assert not (studio.data_dir / "runs" / "bad-api-run" / "status.json").exists()


def test_train_start_passes_the_flags_on_to_app_py_train(studio, monkeypatch):
    started = []
    monkeypatch.setattr(runs, "launch", lambda command, run_dir, **_: started.append(command))
    answer = studio.training["train_start"]("flag-run", data="tiny", resolution=32, epochs=3, batch_size=2,
                                            config=str(studio.data_dir / "tiny.json"), max_steps=4, space="pixel")
    assert answer["run"] == "flag-run"
    command = started[0]
    flag = lambda name: command[command.index(name) + 1]  # noqa: E731
    assert flag("--run") == str(studio.data_dir / "runs" / "flag-run")
    assert flag("--data") == str(studio.data_dir / "datasets" / "tiny")
    assert flag("--config") == str(studio.data_dir / "runs" / "flag-run" / "start-config.json")
    assert [flag(f) for f in ("--resolution", "--epochs", "--batch-size", "--max-steps", "--space")] == \
        ["32", "3", "2", "4", "pixel"]
    assert "--stage" not in command and "--resume" not in command and "--search" not in command
    args = app.build_parser().parse_args(command[2:])  # what app.py train will read
    assert (args.command, args.resolution, args.max_steps, args.space, args.stage) == ("train", 32, 4, "pixel", "main")
    # The run itself (a real process) is followed and stopped through /train_status and /train_stop in
    # test_training_tab.py's run, which the Training tab starts anyway.


# -- a demo link: the owner only ------------------------------------------------------------------------------
def owner_only_calls(tabs) -> dict:
    d, t = tabs.dataset, tabs.training
    return {
        "collect": lambda r: finished(d["collect_api"](["folder"], folder="drawings", out="demo-set", target=1, request=r,
                                              **QUICK)),
        "collect button": lambda r: list(d["collect"](r, {}, *[w.value for w in d["fields"].values()])),
        "view": lambda r: d["view"]("tiny", r),
        "remove": lambda r: d["remove"]("tiny", "panel_0", r),
        "stop collecting": lambda r: d["stop"]({}, r),
        "select an image": lambda r: d["select"](["panel_0"], SimpleNamespace(index=0), r),
        "train_start": lambda r: t["train_start"]("demo-run", data="tiny", resolution=33, request=r),
        "train_status": lambda r: t["train_status"]("nowhere", request=r),
        "train_stop": lambda r: t["train_stop"]("nowhere", request=r),
        "start button": lambda r: t["start"](r, *[w.value for w in t["fields"].values()]),
        "steer": lambda r: t["steer"]("save", "nowhere", r),
        "chart": lambda r: t["chart"]("nowhere", r),
        "show sample": lambda r: t["show_sample"]("nowhere", 0, r),
        "generate with": lambda r: t["model_for"]("nowhere", None, r),
        "pick a checkpoint": lambda r: t["pick_checkpoint"]([], SimpleNamespace(row_value=["step-1"]), r),
    }


@pytest.mark.parametrize("name", list(owner_only_calls(SimpleNamespace(dataset={}, training={}))))
def test_a_demo_link_keeps_the_tabs_for_the_owner(demo_link, name):
    import gradio as gr

    tabs = demo_link
    call = owner_only_calls(tabs)[name]
    what = "collect datasets" if name in ("collect", "collect button", "view", "remove", "stop collecting",
                                          "select an image") else "train models"
    for visitor in (VISITOR, SimpleNamespace(username=None), None):
        with pytest.raises(gr.Error, match=OWNER_ONLY.format(what=what).replace(".", r"\.")):
            call(visitor)
    try:  # the owner gets past the door: the call works, or fails on its values (made bad on purpose)
        call(OWNER)
    except gr.Error as error:
        assert "only the studio's owner" not in str(error)



def test_a_demo_visitors_page_timer_shows_nothing_and_raises_nothing(demo_link):
    import gradio as gr

    view = demo_link.training["refresh"]({}, None, 0.6, False, "main", "all", VISITOR)
    assert len(view) == len(demo_link.training["live"]) and all(v == gr.skip() for v in view)
    owner_view = demo_link.training["refresh"]({}, None, 0.6, False, "main", "all", OWNER)
    assert owner_view[0] != gr.skip()


# -- a shared studio: a visitor's folders stay inside the data folder --------------------------------------------
@pytest.mark.parametrize("value", ["/tmp/x", "../../x", "C:\\x", "..\\..\\x", "~/x", "link", "link/deeper"])
def test_a_visitor_cannot_name_a_folder_outside(studio, shared_studio, value):
    import gradio as gr

    d, t = shared_studio.dataset, shared_studio.training
    for call in (lambda: finished(d["collect_api"](["folder"], folder="drawings", out=value, request=VISITOR, **QUICK)),
                 lambda: finished(d["collect_api"](["folder"], folder=value, out="visitor-set", request=VISITOR, **QUICK)),
                 lambda: d["view"](value, VISITOR),
                 lambda: d["remove"](value, "panel_0", VISITOR),
                 lambda: t["train_start"](value, data="tiny", request=VISITOR),
                 lambda: t["train_start"]("visitor-run", data=value, request=VISITOR),
                 lambda: t["train_start"]("visitor-run", data="tiny", config=value, request=VISITOR),
                 lambda: t["train_status"](value, request=VISITOR),
                 lambda: t["train_stop"](value, request=VISITOR)):
        with pytest.raises(gr.Error, match=OUTSIDE):
            call()
    with pytest.raises(gr.Error, match="The VAE .* is outside"):
        t["train_start"]("visitor-run", data="tiny", vae="/tmp/vae.safetensors", request=VISITOR)
    assert not (studio.data_dir / "runs" / "visitor-run").exists()
    # The owner of a shared studio uses paths as typed, as a local artist does.
    with pytest.raises(gr.Error, match="There is no run"):
        t["train_status"]("/nowhere/x", request=OWNER)


def test_a_visitor_works_inside_the_data_folder(studio, shared_studio):
    tabs = shared_studio
    assert tabs.dataset["fields"]["out_dir"].value == "default"  # the page does not show the machine's folders
    answer = finished(tabs.dataset["collect_api"](["folder"], folder="drawings", out="visitor-set", target=1,
                                         request=VISITOR, **QUICK))
    assert answer["images"] == 1 and answer["out"] == str(Path("datasets", "visitor-set"))
    items, stems, rows = tabs.dataset["view"]("visitor-set", VISITOR)
    assert len(items) == len(stems) == 1 and ["Images", 1] in rows
    note, *_ = tabs.dataset["remove"](str(studio.data_dir / "datasets" / "visitor-set"), stems[0], VISITOR)
    assert note.startswith("Removed")
    import gradio as gr

    with pytest.raises(gr.Error, match="resolution must be"):  # past the folder checks, stopped by its values
        tabs.training["train_start"]("visitor-run", data="tiny", config="tiny.json", resolution=33, request=VISITOR)


def test_a_served_demo_link_knows_who_calls(studio):
    """Through a real server and gradio_client: gradio fills in each caller's login as the request."""
    import gradio as gr
    from gradio_client import Client

    from studio import dataset_tab, training_tab

    ctx = dataclasses.replace(studio.ctx, access=Access(studio.data_dir, exposed=True, demo=True, owner="owner"))
    with gr.Blocks() as demo:
        with gr.Tabs():
            dataset_tab.build(ctx)
            training_tab.build(ctx)
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                auth=[("owner", "owner-pw"), ("visitor", "visitor-pw")])
    try:
        visitor = Client(demo.local_url, auth=("visitor", "visitor-pw"), verbose=False)
        for call in (lambda: visitor.predict(run="nowhere", api_name="/train_status"),
                     lambda: visitor.predict(source=["folder"], folder="drawings", api_name="/collect")):
            with pytest.raises(Exception, match="only the studio's owner can"):
                call()
        owner = Client(demo.local_url, auth=("owner", "owner-pw"), verbose=False)
        with pytest.raises(Exception, match="There is no run nowhere"):
            owner.predict(run="nowhere", api_name="/train_status")
    finally:
        demo.close()
