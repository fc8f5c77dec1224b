"""Live-Action and Animation on a shared studio (issue #14): every picture, folder and model a visitor names
must lie inside the data folder, or it is refused with one sentence before any model loads; a demo visitor's
results go to, and their history is read from, outputs/visitors/<user>/.

The endpoints and handlers are called in this process with a fake gr.Request (only its username is read);
tests/test_share.py meets the same rules through a running server. Local use is tested, unchanged, in
tests/test_live_action_tab.py and tests/test_animation_tab.py."""

from __future__ import annotations

import inspect
import os
import shutil
import types
from pathlib import Path

import pytest
from PIL import Image

from api_calls import finished
from animation_models import save_tiny_motion_adapter
from engines.settings import MachineSettings
from live_action_models import save_live_action_defaults
from studio.access import Access
from test_live_action_tab import drawing

VISITOR = types.SimpleNamespace(username="visitor")
OWNER = types.SimpleNamespace(username="owner")
OUTSIDE = "is outside the studio's data folder; on a shared studio, use a name inside it."
LIVE_QUICK = dict(steps=2, strength=0.5, cfg=2.0, sampler="DDIM", width=64, height=64, seed=3)
ANIM_QUICK = dict(base_model="tiny-sd", motion_adapter="tiny-motion", frames=4, width=64, height=64, steps=2,
                  cfg=2.0, strength=1.0, prompt="1girl, wind in hair", negative="", context=4, stride=2, seed=3)


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    """<place>/data: the studio's data folder, with the tiny models; <place>/secret: a folder beside it."""
    place = tmp_path_factory.mktemp("shared-live-anim")
    data, secret = place / "data", place / "secret"
    models = data / "models"
    save_live_action_defaults(models, tiny_sd_dir)
    shutil.copytree(tiny_sd_dir, models / "tiny-sd")
    save_tiny_motion_adapter(models / "tiny-motion")
    secret.mkdir()
    drawing(secret / "hero.png")
    drawing(data / "hero.png")  # inside the data folder, but no visitor's own: refused in demo mode
    upload = data / "cache" / "gradio" / "0123abcd"  # where gradio keeps an upload: inside the data folder
    upload.mkdir(parents=True)
    drawing(upload / "hero.png")
    os.symlink(secret / "hero.png", data / "escape.png")  # inside by name, outside once followed
    os.symlink(secret, data / "escape-folder")
    # The owner's results, which a demo visitor's history must not show.
    for folder, name in (("live-action", "owner.png"), ("animation", "owner.first.png")):
        (data / "outputs" / folder / "2026-12-05").mkdir(parents=True)
        drawing(data / "outputs" / folder / "2026-12-05" / name)
    return place


@pytest.fixture(scope="module")
def tabs(place: Path):
    import gradio as gr

    from studio import animation_tab, live_action_tab
    from studio.context import build_studio_context

    data = place / "data"
    access = Access(data, exposed=True, demo=True, owner="owner")
    ctx = build_studio_context(MachineSettings(data_dir=data, cpu=True, offline=True), access)
    with gr.Blocks() as demo:
        selected = gr.State(None)
        live = live_action_tab.build(ctx, {"selected": selected})
        anim = animation_tab.build(ctx, {"selected": selected}, live)
    return types.SimpleNamespace(demo=demo, ctx=ctx, live=live, anim=anim, data=data, secret=place / "secret",
                                 upload=data / "cache" / "gradio" / "0123abcd")


@pytest.fixture
def nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model loading fails the test: a refusal must come before the first load."""
    from engines.models.store import ModelStore
    from engines.sd15.checkpoint import Sd15Models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a request that should have been refused")

    for owner, name in ((ModelStore, "load_pipeline"), (ModelStore, "load_model"), (Sd15Models, "ensure"),
                        (Sd15Models, "_load")):
        monkeypatch.setattr(owner, name, refuse)


def refusal(call, *args, **kwargs) -> str:
    """The one sentence a refused call shows (a gr.Error's message); a handler's first step for a generator."""
    import gradio as gr

    with pytest.raises(gr.Error) as refused:
        result = call(*args, **kwargs)
        if inspect.isgenerator(result):
            next(result)
    return refused.value.message


def values_for(tab: dict, **changes) -> list:
    values = {name: widget.value for name, widget in tab["fields"].items()}
    values.update(changes)
    return [values[name] for name in tab["fields"]]


def outside_pictures(tabs) -> list[str]:
    return ["/etc/hostname", "../../x.png", "C:\\Windows\\x.png", str(tabs.data / "escape.png"),
            str(tabs.secret / "hero.png")]


# --- the public API stays as it was: two endpoints, the request hidden; everything else private --------------


def test_only_the_two_jobs_are_public_and_the_request_is_not_a_parameter(tabs) -> None:
    public = {fn.api_name for fn in tabs.demo.fns.values() if fn.api_visibility != "private"}
    assert public == {"live_action", "animate"}
    info = tabs.demo.get_api_info()["named_endpoints"]
    for name, tab, endpoint in (("/live_action", tabs.live, "live_action"), ("/animate", tabs.anim, "animate")):
        parameters = list(inspect.signature(tab[endpoint]).parameters)
        assert parameters[-1] == "request"  # gradio's, filled in by the server
        assert [p["parameter_name"] for p in info[name]["parameters"]] == parameters[:-1]
    import gradio as gr

    states = [block for block in tabs.demo.blocks.values() if isinstance(block, gr.State)]
    assert states and not any(callable(state.value) for state in states)  # {} and [], never dict or list


# --- pictures and models outside the data folder: one sentence, nothing loaded -------------------------------


def test_a_visitors_drawing_or_still_outside_the_data_folder_is_refused(tabs, nothing_loads) -> None:
    for value in outside_pictures(tabs):
        assert refusal(tabs.live["live_action"], image=value, request=VISITOR, **LIVE_QUICK) == (
            f"The drawing '{value}' {OUTSIDE}")
        assert refusal(tabs.anim["animate"], image=value, request=VISITOR, **ANIM_QUICK) == (
            f"The still '{value}' {OUTSIDE}")
        # The tabs' buttons: the same rule, the same sentence.
        assert refusal(tabs.live["make_handler"], {}, VISITOR, *values_for(tabs.live, image=value, **LIVE_QUICK)) == (
            f"The drawing '{value}' {OUTSIDE}")
        assert refusal(tabs.anim["make_handler"], {}, VISITOR, *values_for(tabs.anim, image=value, **ANIM_QUICK)) == (
            f"The still '{value}' {OUTSIDE}")
    hero = str(tabs.upload / "hero.png")
    assert refusal(tabs.live["live_action"], image=hero, depth_map="/etc/hostname", request=VISITOR) == (
        f"The depth map '/etc/hostname' {OUTSIDE}")
    assert refusal(tabs.live["live_action"], image=hero, pose_map="../pose.png", request=VISITOR) == (
        f"The pose map '../pose.png' {OUTSIDE}")


@pytest.mark.parametrize("field", ["base_model", "vae", "controlnet_depth", "controlnet_pose", "controlnet_canny",
                                   "depth_model", "pose_model", "prompt"])
def test_a_visitors_live_action_model_outside_the_data_folder_is_refused(tabs, nothing_loads, field: str) -> None:
    outside = str(tabs.secret / "model.safetensors")
    value = f"ink <lora:{outside}:0.8>" if field == "prompt" else outside
    what = {"prompt": "The LoRA", "base_model": "The base model", "vae": "The VAE",
            "depth_model": "The depth estimator", "pose_model": "The pose estimator"}.get(field)
    what = what or f"The {field.split('_')[1]} ControlNet"
    assert refusal(tabs.live["live_action"], image=str(tabs.upload / "hero.png"), request=VISITOR,
                   **{field: value}) == f"{what} '{outside}' {OUTSIDE}"


@pytest.mark.parametrize("field", ["base_model", "vae", "motion_adapter", "motion_lora", "sparsectrl_model",
                                   "negative"])
def test_a_visitors_animation_model_outside_the_data_folder_is_refused(tabs, nothing_loads, field: str) -> None:
    value = "../../x.ckpt" if field != "negative" else "blurry <LoRA: ../../x.ckpt >"
    assert refusal(tabs.anim["animate"], request=VISITOR, **{**ANIM_QUICK, field: value}).endswith(
        f" '../../x.ckpt' {OUTSIDE}")


def test_inside_the_data_folder_passes_and_the_owner_is_trusted(tabs, nothing_loads) -> None:
    empty = tabs.data / "cache" / "gradio" / "0123abcd" / "empty.png"
    empty.write_bytes(b"")
    # An upload passes the check: what refuses it is the engine's own sentence about the file.
    assert "empty.png is empty (0 bytes)" in refusal(tabs.live["live_action"], image=str(empty), request=VISITOR,
                                                     **LIVE_QUICK)
    assert "empty (0 bytes)" in refusal(tabs.anim["animate"], image=str(empty), request=VISITOR, **ANIM_QUICK)
    # The owner's login is trusted like an artist at home: a path outside is read, not refused.
    sentence = refusal(tabs.live["live_action"], image=str(tabs.secret / "nowhere.png"), request=OWNER,
                       **LIVE_QUICK)
    assert OUTSIDE not in sentence and "does not exist" in sentence


def test_pictures_picked_in_a_history_or_another_tab_are_confined(tabs) -> None:
    outside = str(tabs.secret / "hero.png")
    for handler in (tabs.live["from_manga"], tabs.anim["from_manga"], tabs.anim["from_live"],
                    tabs.live["reuse"], tabs.anim["reuse"]):
        assert refusal(handler, outside, VISITOR).endswith(f" '{outside}' {OUTSIDE}")
    inside = str(tabs.data / "cache" / "gradio" / "0123abcd" / "hero.png")
    assert tabs.live["from_manga"](inside, VISITOR) == inside and tabs.anim["from_live"](inside, VISITOR) == inside
    # A history click whose caption climbs out falls back to the gallery's file, which is confined too.
    click = types.SimpleNamespace(index=0)
    assert refusal(tabs.live["select"], [(outside, "../../../secret/hero")], click, VISITOR).endswith(OUTSIDE)


def test_the_batch_folders_are_confined(tabs, nothing_loads, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.live_action import batch

    own = tabs.data.resolve() / "outputs" / "visitors" / "visitor"
    drawings = own / "drawings"  # on a demo link a visitor's folders are their own results (or uploads)
    drawings.mkdir(parents=True, exist_ok=True)
    drawing(drawings / "a-hero.png")
    values = values_for(tabs.live, **LIVE_QUICK)
    for source, target, what in ((str(tabs.secret), "out", "The input folder"),
                                 (str(tabs.data / "escape-folder"), "out", "The input folder"),
                                 (str(tabs.data), "out", "The input folder"),  # the data folder, not theirs
                                 ("../secret", "out", "The input folder"),
                                 (str(drawings), str(tabs.secret / "out"), "The output folder"),
                                 (str(drawings), "../../../../secret", "The output folder")):
        assert refusal(tabs.live["batch_handler"], {}, VISITOR, source, target, *values) == (
            f"{what} '{source if what == 'The input folder' else target}' {OUTSIDE}")
    # A link in the input folder to a picture elsewhere is refused like a typed path.
    linked = own / "linked-drawings"
    linked.mkdir(exist_ok=True)
    if not (linked / "b-secret.png").is_symlink():
        os.symlink(tabs.secret / "hero.png", linked / "b-secret.png")
    assert refusal(tabs.live["batch_handler"], {}, VISITOR, str(linked), "out", *values) == (
        f"The picture '{linked / 'b-secret.png'}' {OUTSIDE}")
    # Inside, the batch runs; a relative output folder is the visitor's own, as the page's default is.
    asked = {}

    def run_batch(request, input_dir, output_dir, *args, **kwargs):
        asked.update(input_dir=input_dir, output_dir=output_dir)
        return batch.BatchResult((), ())

    monkeypatch.setattr(batch, "run_batch", run_batch)
    updates = list(tabs.live["batch_handler"]({}, VISITOR, str(drawings), "my-batch", *values))
    assert 'data-state="done"' in updates[-1][0]
    assert asked == {"input_dir": drawings.resolve(), "output_dir": own / "my-batch"}
    assert tabs.live["on_load"][0](VISITOR)[1] == str(tabs.data / "outputs" / "visitors" / "visitor" /
                                                      "live-action" / "batch")


# --- a demo visitor's own results, and their own history -------------------------------------------------


def test_a_visitors_live_action_lands_in_their_folder_and_history(tabs) -> None:
    load, outputs = tabs.live["on_load"]
    # In demo mode every page starts with no history (the owner's is not in its first settings); its load
    # event fills in the user's own.
    assert len(outputs) == 2 and outputs[0].value == [] and tabs.anim["on_load"][1][0].value == []
    before, _ = load(VISITOR)
    assert before == []  # the owner's pictures are not the visitor's history
    made = finished(tabs.live["live_action"](image=str(tabs.upload / "hero.png"), request=VISITOR, **LIVE_QUICK))
    own = tabs.data / "outputs" / "visitors" / "visitor" / "live-action"
    assert Path(made["file"]).is_relative_to(own) and Path(made["file"]).is_file()
    history, _ = load(VISITOR)
    assert [Path(file) for file, _ in history] == [Path(made["file"])]
    owners, folder = load(OWNER)
    assert [Path(file).name for file, _ in owners] == ["owner.png"]  # the owner's: not a visitor's
    assert folder == str(tabs.data / "outputs" / "live-action" / "batch")
    # Clicking it in the history finds the original beside its report.
    picked, *_ = tabs.live["select"](history, types.SimpleNamespace(index=0), VISITOR)
    assert Path(picked) == Path(made["file"])


def test_a_visitors_animation_lands_in_their_folder_and_history(tabs) -> None:
    load, outputs = tabs.anim["on_load"]
    assert len(outputs) == 1 and load(VISITOR) == []
    made = finished(tabs.anim["animate"](image=str(tabs.upload / "hero.png"), output_format="gif", request=VISITOR,
                                **ANIM_QUICK))
    own = tabs.data / "outputs" / "visitors" / "visitor" / "animation"
    assert Path(made["file"]).is_relative_to(own) and Path(made["first_frame"]).is_file()
    assert [Path(file) for file, _ in load(VISITOR)] == [Path(made["first_frame"])]
    assert [Path(file).name for file, _ in load(OWNER)] == ["owner.first.png"]
    with Image.open(made["file"]) as gif:
        assert gif.n_frames == 4
