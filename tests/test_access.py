"""studio/access.py: what a visitor of a shared studio may name, and what demo mode keeps for the owner."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from engines.errors import InvalidRequestError
from studio.access import Access, NotAllowedError, confine

VISITOR = SimpleNamespace(username="visitor")
OWNER = SimpleNamespace(username="owner")
OUTSIDE = "outside the studio's data folder"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for folder in ("datasets/mine", "models/tiny-anime", "outputs", "runs/style"):
        (root / folder).mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "notes.txt").write_text("private")
    os.symlink(tmp_path / "secret", root / "datasets" / "escape")
    os.symlink(tmp_path / "secret", root / "models" / "stolen")
    return root


@pytest.mark.parametrize("typed", [
    "/etc/passwd",                      # absolute
    "../secret/notes.txt",              # climbs out
    "datasets/../../secret",            # climbs out from inside
    "datasets/escape/notes.txt",        # a symlink out of the data dir
    "C:\\Windows\\System32",            # Windows-style, absolute
    "..\\..\\secret",                   # Windows separators climbing out
    "\\\\server\\share\\x",             # a UNC path
    "~/notes.txt",                      # the studio user's home
])
def test_a_visitor_of_an_exposed_studio_cannot_name_anything_outside(data: Path, typed: str) -> None:
    access = Access(data, exposed=True, owner="owner")
    with pytest.raises(InvalidRequestError, match=OUTSIDE) as caught:
        access.path(typed, VISITOR, what="The dataset folder")
    assert str(caught.value).startswith("The dataset folder '")
    assert str(data) not in str(caught.value)  # the sentence does not tell a stranger where the data lives


def test_names_and_paths_inside_the_data_folder_are_used(data: Path) -> None:
    access = Access(data, exposed=True, owner="owner")
    assert access.path("mine", VISITOR, base=data / "datasets") == str((data / "datasets" / "mine").resolve())
    assert access.path(str(data / "outputs" / "a.png"), VISITOR) == str((data / "outputs" / "a.png").resolve())
    assert access.path("datasets/x/../mine", VISITOR) == str((data / "datasets" / "mine").resolve())
    upload = {"path": str(data / "cache" / "gradio" / "abc" / "hero.png"), "meta": {"_type": "gradio.FileData"}}
    assert access.path(upload, VISITOR) == str((data / "cache" / "gradio" / "abc" / "hero.png").resolve())
    assert access.path("", VISITOR) == ""


def test_local_use_and_the_owner_keep_full_freedom(data: Path) -> None:
    assert Access.local(data).path("/etc/passwd", VISITOR) == "/etc/passwd"
    assert Access(data, demo=True).path("/etc/passwd", None) == "/etc/passwd"  # a local demo is not exposed
    assert Access(data, exposed=True, owner="owner").path("/etc/passwd", OWNER) == "/etc/passwd"
    assert Access(data, exposed=True, owner="owner").model("/srv/big.safetensors", OWNER) == "/srv/big.safetensors"


def test_model_references_are_names_ids_or_confined_paths(data: Path, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    access = Access(data, exposed=True, owner="owner")
    assert access.model("tiny-anime", VISITOR) == "tiny-anime"
    assert access.model("runwayml/stable-diffusion-v1-5", VISITOR) == "runwayml/stable-diffusion-v1-5"
    assert access.model("style", VISITOR) == "style"  # an Origin run
    for typed in ("stolen", "/srv/big.safetensors", "../../secret/x.safetensors", "C:\\models\\x.safetensors"):
        with pytest.raises(InvalidRequestError, match=OUTSIDE):
            access.model(typed, VISITOR)
    # The model store tries the working folder first: a name that exists there (outside) is refused.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidRequestError, match=OUTSIDE):
        access.model("secret", VISITOR)


def test_confine_follows_the_symlinks_of_the_root_itself(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "outputs").mkdir(parents=True)
    os.symlink(real, tmp_path / "linked")
    assert confine("outputs", tmp_path / "linked") == (real / "outputs").resolve()


def test_demo_mode_keeps_the_machine_for_the_owner(data: Path) -> None:
    demo = Access(data, exposed=True, demo=True, owner="owner")
    with pytest.raises(NotAllowedError, match="only the studio's owner can collect datasets"):
        demo.require_owner(VISITOR, "collect datasets")
    demo.require_owner(OWNER, "collect datasets")
    assert demo.sees_everything(OWNER) and not demo.sees_everything(VISITOR)
    assert not Access(data, demo=True).sees_everything(None)  # a local demo without logins has no owner
    Access(data, exposed=True, owner="owner").require_owner(VISITOR, "train")  # --no-demo: every login


def test_each_demo_visitor_has_their_own_outputs(data: Path) -> None:
    demo = Access(data, exposed=True, demo=True, owner="owner")
    outputs = data / "outputs"
    assert demo.outputs(OWNER, outputs) == outputs
    assert demo.outputs(VISITOR, outputs) == outputs / "visitors" / "visitor"
    assert demo.outputs(SimpleNamespace(username="../../etc"), outputs) == outputs / "visitors" / "etc"
    assert demo.outputs(None, outputs) == outputs / "visitors" / "guest"
    assert Access.local(data).outputs(VISITOR, outputs) == outputs


def test_a_demo_visitor_may_name_only_their_own_results_and_uploads(data: Path) -> None:
    demo = Access(data, exposed=True, demo=True, owner="owner")
    own = data / "outputs" / "visitors" / "visitor" / "manga" / "a.png"
    upload = data / "cache" / "gradio" / "f00d" / "hero.png"
    assert demo.path(str(own), VISITOR) == str(own.resolve())
    assert demo.path(str(upload), VISITOR) == str(upload.resolve())
    for typed in (str(data / "datasets" / "mine"), str(data / "outputs" / "manga" / "owner.png"),
                  str(data / "outputs" / "visitors" / "someone-else" / "b.png")):
        with pytest.raises(InvalidRequestError, match=OUTSIDE):
            demo.path(typed, VISITOR)
    # The studio's models and runs are there to be used by name or path, but not downloaded anew.
    assert demo.model("tiny-anime", VISITOR) == "tiny-anime"
    assert demo.model(str(data / "models" / "tiny-anime"), VISITOR) == str((data / "models" / "tiny-anime").resolve())
    with pytest.raises(NotAllowedError, match="only the studio's owner can download new models"):
        demo.model("someone/new-model", VISITOR)
    (data / "models" / "someone--new-model").mkdir()
    assert demo.model("someone/new-model", VISITOR) == "someone/new-model"  # already on this machine
    assert demo.model("other/model", OWNER) == "other/model"


def test_a_jobs_values_are_checked_with_the_loras_its_prompts_name(data: Path) -> None:
    access = Access(data, exposed=True, owner="owner")
    pictures, models = {"image": "The drawing"}, {"base_model": "The base model"}
    values = {"image": "outputs/a.png", "base_model": "tiny-anime", "prompt": "ink <lora:style:0.8>", "steps": 3}
    checked = access.values(values, VISITOR, pictures=pictures, models=models)
    assert checked == {**values, "image": str((data / "outputs" / "a.png").resolve())}
    for prompt in ("ink <lora:/etc/x:1>", "ink <lora:../../secret/x:1>"):
        with pytest.raises(InvalidRequestError, match="The LoRA '.*' is outside"):
            access.values({**values, "prompt": prompt}, VISITOR, pictures=pictures, models=models)
    with pytest.raises(InvalidRequestError, match="The drawing '/etc/passwd' is outside"):
        access.values({**values, "image": "/etc/passwd"}, VISITOR, pictures=pictures, models=models)
    assert Access.local(data).values({**values, "image": "/etc/passwd"}, VISITOR, pictures=pictures,
                                     models=models)["image"] == "/etc/passwd"


@pytest.mark.parametrize("argv, sentence", [
    (["--exposed"], "Refusing --exposed without a login"),
    (["--share"], "Refusing --share without a login"),
    (["--host", "0.0.0.0"], "Refusing to listen on 0.0.0.0 without a login"),
    (["--exposed", "--auth", "me:a-long-password", "--admin", "you"], "--admin you is not one of the logins"),
    (["--demo", "--no-demo"], "Choose --demo or --no-demo"),
    (["--queue-size", "0"], "--queue-size must be at least 1"),
])
def test_the_server_refuses_unsafe_or_contradictory_flags(argv: list[str], sentence: str, tmp_path: Path) -> None:
    import app

    assert app.main(["--data-dir", str(tmp_path), *argv, "--no-browser"]) != 0
    from studio import server

    args = app.build_parser().parse_args(["--data-dir", str(tmp_path), *argv])
    settings = app.settings_from_args(args)
    with pytest.raises(InvalidRequestError, match=re.escape(sentence)):
        credentials = server.load_credentials(args.auth, args.auth_file)
        server.check_exposure(args.host, args.share, credentials, server.is_exposed(args))
        server.access_for(args, settings, credentials)


def test_the_flags_say_who_owns_a_shared_studio(tmp_path: Path) -> None:
    import app
    from studio import server

    def access(*argv: str) -> Access:
        args = app.build_parser().parse_args(["--data-dir", str(tmp_path), *argv])
        return server.access_for(args, app.settings_from_args(args), server.load_credentials(args.auth, None))

    shared = access("--share", "--auth", "me:a-long-password", "--auth", "guest:another-long-one")
    assert shared.exposed and shared.demo and shared.owner == "me"  # --share is a demo unless --no-demo
    assert not access("--share", "--no-demo", "--auth", "me:a-long-password").demo
    assert access("--exposed", "--auth", "me:x", "--auth", "you:y", "--admin", "you").owner == "you"
    local = access()
    assert not local.exposed and not local.demo and local.trusted(None)
    assert server.warn_about_passwords([("me", "a-long-password"), ("guest", "short")]).startswith(
        "The password for guest is shorter than 12 characters")
