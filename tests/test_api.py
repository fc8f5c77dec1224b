"""The studio's public API: the jobs only, named like the CLI's flags, and changed only on purpose.

``tests/api_snapshot.json`` is the API as gradio_client sees it (names, parameters, types, defaults).
After a deliberate change, rewrite it with ``INKFRAME_UPDATE_API=1 pytest tests/test_api.py`` and say
so in docs/api.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).with_name("api_snapshot.json")
# endpoint -> the `app.py` command whose flags its parameters are named after
COMMANDS = {"/generate": "generate", "/compose_page": "page", "/chapter": "chapter", "/live_action": "live-action",
            "/animate": "animate", "/collect": "collect", "/train_start": "train", "/train_status": "train",
            "/train_stop": "train"}
# Parameters with no flag of that name, and why: the CLI folds two numbers into one flag (--size WxH,
# --depth-window START:END) or names an output file where the endpoint takes its format; batch_size
# (pictures drawn at once, A1111's) has no flag.
NOT_FLAGS = {
    "/generate": {"width", "height", "batch_size"},
    "/live_action": {"width", "height", "depth_start", "depth_end", "pose_start", "pose_end", "canny_start",
                     "canny_end"},
    "/animate": {"width", "height", "output_format", "save_frames"},
    "/compose_page": {"output_format"},
    "/chapter": {"output_format"},
}


def api_of(info: dict) -> dict:
    return {name: {"parameters": [{"name": p["parameter_name"], "type": p["python_type"]["type"],
                                   **({"default": p["parameter_default"]} if p["parameter_has_default"] else {})}
                                  for p in endpoint["parameters"]],
                   "returns": [r["python_type"]["type"] for r in endpoint["returns"]]}
            for name, endpoint in sorted(info["named_endpoints"].items())}


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> dict:
    from engines.settings import MachineSettings
    from studio.app import build_app
    from studio.context import build_studio_context

    settings = MachineSettings(data_dir=tmp_path_factory.mktemp("api-data"), cpu=True, offline=True)
    info = build_app(build_studio_context(settings)).get_api_info()
    assert not info.get("unnamed_endpoints")
    return api_of(info)


def test_the_api_is_the_studio_jobs_and_nothing_else(api: dict) -> None:
    assert set(api) == set(COMMANDS)  # no /dict, /list, no UI wiring: every other event is private


def test_parameters_are_named_like_the_cli_flags(api: dict) -> None:
    import app

    parser = app.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for endpoint, command in COMMANDS.items():
        flags = {a.dest for a in commands[command]._actions}
        names = {p["name"] for p in api[endpoint]["parameters"]}
        assert names - flags <= NOT_FLAGS.get(endpoint, set()), (endpoint, sorted(names - flags))


def test_the_api_matches_its_snapshot(api: dict) -> None:
    if os.environ.get("INKFRAME_UPDATE_API"):
        SNAPSHOT.write_text(json.dumps(api, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert api == expected, "the public API changed: if on purpose, rewrite the snapshot (see this file's docstring)"
