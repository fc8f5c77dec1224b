"""A shared studio as strangers meet it: confinement through gradio_client, demo mode, logins, the GPU line.

One exposed studio (``--exposed``: shared-link rules on loopback) serves every test here, in demo
mode, with an owner and a visitor login and a GPU line of four.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from test_app import CHROMIUM, CHROMIUM_FLAGS, Studio

OWNER = ("owner", "a-long-owner-password")
VISITOR = ("visitor", "short-pass")  # under 12 characters: the studio starts with a warning
LINE = 4
OUTSIDE = "outside the studio's data folder"
BUSY = "The studio is busy, try again in a minute."


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path):
    root = tmp_path_factory.mktemp("shared")
    data = root / "data"
    shutil.copytree(tiny_sd_dir, data / "models" / "tiny-anime")
    (root / "secret").mkdir()
    Image.new("RGB", (64, 64), "red").save(root / "secret" / "hero.png")
    (data / "outputs" / "visitors" / "visitor").mkdir(parents=True)
    os.symlink(root / "secret", data / "outputs" / "visitors" / "visitor" / "escape")  # in the visitor's own folder
    server = Studio(data, "--cpu", "--offline", "--exposed", "--demo", "--auth", ":".join(OWNER),
                    "--auth", ":".join(VISITOR), "--queue-size", str(LINE), "--verbose")
    yield server, data, root
    server.stop()


def client_for(server: Studio, who: tuple[str, str]):
    from gradio_client import Client

    return Client(server.url, auth=who, verbose=False)


def generate(client, **values):
    settings = dict(prompt="ink manga", model="tiny-anime", sampler="DDIM", steps=2, cfg=2.0, width=64, height=64)
    return client.predict(**{**settings, **values}, api_name="/generate")


def test_the_studio_starts_with_a_warning_about_the_short_password(shared) -> None:
    server, _, _ = shared
    log = server.log.read_text()
    assert "The password for visitor is shorter than 12 characters" in log
    assert "owner" not in log.split("shorter than 12")[0].rsplit("\n", 1)[-1]


def test_the_login_page_names_the_studio_and_nothing_else(shared) -> None:
    server, data, _ = shared
    assert httpx.get(server.url + "config", timeout=10).json()["detail"]["auth_message"] == "Inkframe Studio"
    page = httpx.get(server.url, timeout=10).text  # the login page, with its config inlined
    assert '"auth_required":true' in page and '"auth_message":"Inkframe Studio"' in page
    assert str(data) not in page and "--auth" not in page and "visitor" not in page


@pytest.mark.parametrize("reference", [
    "/etc/hostname",                       # an absolute path
    "../../secret/hero.png",               # climbing out
    "escape/hero.png",                     # a symlink out of the data dir (from the visitor's own folder)
    "C:\\Windows\\win.ini",                # a Windows-style path
    "..\\..\\secret\\hero.png",            # Windows separators climbing out
])
def test_a_visitor_cannot_reach_outside_the_data_folder(shared, reference: str) -> None:
    server, _, _ = shared
    with pytest.raises(Exception, match=OUTSIDE):
        generate(client_for(server, VISITOR), reference=reference)


def test_an_upload_with_a_crafted_name_stays_inside_the_data_folder(shared) -> None:
    server, data, root = shared
    client = client_for(server, VISITOR)
    picture = (data / "models" / "tiny-anime" / "model_index.json").read_bytes()
    response = httpx.post(server.url + "gradio_api/upload", cookies=client.cookies, timeout=20,
                          files={"files": ("../../../../secret/planted.json", picture, "application/json")})
    assert response.status_code == 200, response.text
    stored = Path(response.json()[0])
    assert stored.resolve().is_relative_to(data.resolve()) and stored.name == "planted.json"
    assert not (root / "secret" / "planted.json").exists()
    # The stored upload is a path a visitor may name (it is not a picture: the sentence says that instead).
    with pytest.raises(Exception) as caught:
        generate(client, reference=str(stored))
    assert OUTSIDE not in str(caught.value)


def test_demo_mode_keeps_collecting_and_training_for_the_owner(shared) -> None:
    server, data, _ = shared
    with pytest.raises(Exception, match="only the studio's owner can"):
        client_for(server, VISITOR).predict(folder=str(data / "outputs"), source=["folder"], out="mine",
                                            target=1, api_name="/collect")
    with pytest.raises(Exception, match="only the studio's owner can"):
        client_for(server, VISITOR).predict(run="style", api_name="/train_status")


def test_each_visitor_sees_only_their_own_results(shared) -> None:
    server, data, _ = shared
    mine = generate(client_for(server, VISITOR), seed=11)
    theirs = generate(client_for(server, OWNER), seed=12)
    assert Path(mine[0]["file"]).is_relative_to(data / "outputs" / "visitors" / "visitor")
    assert not Path(theirs[0]["file"]).is_relative_to(data / "outputs" / "visitors")


@pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(),
                    reason="Chromium is not installed (.ci/run installs it)")
def test_a_visitor_does_not_see_the_owner_tabs_and_the_owner_does(shared) -> None:
    from playwright.sync_api import expect, sync_playwright

    server, _, _ = shared
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            for (user, password), sees in ((VISITOR, False), (OWNER, True)):
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.goto(server.url)
                page.get_by_label("username").fill(user)
                page.get_by_label("password").fill(password)
                page.get_by_role("button", name="Login").click()
                expect(page.get_by_role("tab", name="Text-to-Manga")).to_be_visible(timeout=30_000)
                page.get_by_role("tab", name="System").click()
                expect(page.locator("#ink-device")).to_be_visible(timeout=30_000)
                for name in ("Dataset", "Training"):
                    expect(page.get_by_role("tab", name=name)).to_have_count(1 if sees else 0, timeout=10_000)
                expect(page.locator("#system-unload-all")).to_have_count(1 if sees else 0, timeout=10_000)
                expect(page.locator("#system-check")).to_have_count(1 if sees else 0, timeout=10_000)
        finally:
            browser.close()


def submit(server: Studio, who: tuple[str, str], prompt: str, seed: int, *, long: bool = False):
    """A /generate job: a short one, or one of 150 steps at 128 px (about forty seconds) already running."""
    size = dict(steps=150, width=128, height=128) if long else dict(steps=2, width=64, height=64)
    job = client_for(server, who).submit(prompt=prompt, model="tiny-anime", sampler="DDIM", seed=seed, **size,
                                         api_name="/generate")
    if long:
        started(job)
    return job


def prompts_drawn(data: Path) -> list[str]:
    """The parameters (prompt first) of every picture the studio saved."""
    return [Image.open(png).info.get("parameters", "") for png in (data / "outputs").rglob("*.png")]


def started(job, within: float = 60) -> None:
    """Wait until ``job`` runs (not only waits); a job that ended first is a failure, not a hang."""
    from gradio_client.utils import Status

    deadline = time.monotonic() + within
    while job.status().code not in (Status.PROCESSING, Status.ITERATING):
        assert not job.done(), f"the job ended before it was seen running: {job.exception()}"
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.02)


def _lock_holds(log: str) -> list[tuple[float, float]]:
    """(taken, released) of every GPU lock hold the server logged, in order."""
    events = re.findall(r"GPU lock (taken|released) by '[^']*' at ([0-9.]+)", log)
    holds, taken = [], None
    for kind, at in events:
        if kind == "taken":
            assert taken is None, "the GPU lock was taken while held"
            taken = float(at)
        else:
            assert taken is not None
            holds.append((taken, float(at)))
            taken = None
    return holds


def test_sixteen_visitors_at_once_complete_or_hear_the_studio_is_busy(shared) -> None:
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError, Status

    server, _, _ = shared
    clients = [client_for(server, VISITOR if i % 2 else OWNER) for i in range(16)]
    start = threading.Barrier(len(clients))
    outcome: dict[int, object] = {}
    waited: dict[int, float] = {}

    def visit(i: int) -> None:
        start.wait()
        submitted = time.monotonic()
        try:
            job = clients[i].submit(prompt=f"client {i}", model="tiny-anime", sampler="DDIM", steps=4, cfg=2.0,
                                    width=64, height=64, seed=1000 + i, api_name="/generate")
            while not job.done() and job.status().code not in (Status.PROCESSING, Status.ITERATING):
                time.sleep(0.02)
            waited[i] = time.monotonic() - submitted  # until the job left the line (its queue wait)
            outcome[i] = job.result(timeout=300)
        except QueueError as error:
            outcome[i] = error
        except AppError as error:  # a result that is an error is a failure of this test
            outcome[i] = error

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    done = {i: r for i, r in outcome.items() if isinstance(r, list)}
    busy = [i for i, r in outcome.items() if isinstance(r, QueueError)]
    assert len(outcome) == 16 and len(done) + len(busy) == 16, outcome  # none errors
    assert done and busy, outcome  # a line of four cannot hold sixteen
    for i, pictures in done.items():  # results go to the right client
        assert pictures[0]["seed"] == 1000 + i and f"Seed: {1000 + i}" in pictures[0]["parameters"]
    assert server.log.read_text().count("GPU line full") >= len(busy)
    holds = _lock_holds(server.log.read_text())
    assert len(holds) >= len(done)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(holds, holds[1:]))  # never held twice
    waits = sorted(waited[i] for i in done)
    p50 = statistics.median(waits)
    p95 = waits[min(len(waits) - 1, int(0.95 * len(waits)))]
    print(f"\n16 clients, line of {LINE}: {len(done)} done, {len(busy)} told busy; "
          f"queue wait p50 {p50:.2f} s, p95 {p95:.2f} s")


def test_a_full_gpu_line_answers_with_the_studio_sentence_and_other_events_pass(monkeypatch) -> None:
    """hold_the_line counts the GPU line only; the refusal is gradio's queue-full answer with our sentence."""
    import asyncio
    from types import SimpleNamespace

    from gradio import route_utils

    from studio.queue import GPU_QUEUE, hold_the_line

    pushed = []

    async def push(body, request, username):
        pushed.append(body.fn_index)
        return True, "event-id", "success"

    line = SimpleNamespace(queue=[object()] * LINE)
    queue = SimpleNamespace(push=push, event_queue_per_concurrency_id={GPU_QUEUE["concurrency_id"]: line})
    blocks = SimpleNamespace(_queue=queue)
    fns = {0: SimpleNamespace(concurrency_id="gpu", api_name="generate", name="generate"),
           1: SimpleNamespace(concurrency_id="timer", api_name=None, name="tick")}
    monkeypatch.setattr(route_utils, "get_fn", lambda blocks, api_name, body: fns[body.fn_index])
    hold_the_line(blocks, LINE)

    def join(fn_index):
        return asyncio.run(queue.push(body=SimpleNamespace(fn_index=fn_index), request=None, username="visitor"))

    assert join(0) == (False, BUSY, "queue_full") and join(1) == (True, "event-id", "success")
    line.queue.pop()
    assert join(0) == (True, "event-id", "success") and pushed == [1, 0]


def test_a_visitor_who_leaves_the_line_frees_their_place(shared) -> None:
    from gradio_client.utils import Status

    server, _, _ = shared
    running = submit(server, OWNER, "long", 1, long=True)
    leaving, staying = submit(server, VISITOR, "leaves", 2), submit(server, VISITOR, "stays", 3)

    def rank(job) -> int | None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = job.status()
            if status.code == Status.IN_QUEUE and status.rank is not None:
                return status.rank
            time.sleep(0.05)
        return None

    assert rank(leaving) == 0 and rank(staying) == 1  # each waiting visitor is told their place
    leaving.cancel()
    time.sleep(0.5)
    # gradio tells the others their new place when the line next moves; a newcomer is told at once.
    probe = submit(server, VISITOR, "probe", 4)
    assert rank(probe) == 1 and not running.done()  # behind "stays" only: the leaver's place is free
    running.cancel()  # the long job stops at its next step (test_a_cancelled_job_frees_the_gpu_within_a_step)
    assert staying.result(timeout=120)[0]["seed"] == 3 and probe.result(timeout=120)[0]["seed"] == 4
    _, data, _ = shared
    drawn = prompts_drawn(data)
    assert any(text.startswith("stays") for text in drawn) and not any(text.startswith("leaves") for text in drawn)


def test_a_visitor_whose_connection_drops_frees_their_place(shared) -> None:
    """No cancel sent: the browser tab is closed or the network goes. gradio notices the closed stream."""
    from gradio_client.utils import Status

    server, data, _ = shared
    running = submit(server, OWNER, "long again", 21, long=True)
    # A visitor joins the line by hand (as the page does), reads their place, and vanishes.
    visitor = client_for(server, VISITOR)
    endpoint = next(d for d in visitor.config["dependencies"] if d.get("api_name") == "generate")
    parameters = visitor.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    values = {p["parameter_name"]: p["parameter_default"] for p in parameters}
    values.update(prompt="vanishes", model="tiny-anime", sampler="DDIM", steps=2, width=64, height=64, seed=22)
    session = "vanishing-visitor"
    with httpx.Client(base_url=server.url, cookies=visitor.cookies, timeout=20) as http:
        joined = http.post("gradio_api/queue/join", json={
            "data": [values[p["parameter_name"]] for p in parameters], "fn_index": endpoint["id"],
            "session_hash": session, "event_data": None, "trigger_id": None})
        assert joined.status_code == 200, joined.text
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if '"rank"' in line:
                    assert '"rank":0' in line.replace(" ", "")
                    break
    staying = submit(server, VISITOR, "stays again", 23)
    deadline, rank = time.monotonic() + 20, None
    while time.monotonic() < deadline:
        status = staying.status()
        if status.code == Status.IN_QUEUE and status.rank is not None:
            rank = status.rank
            if rank == 0:
                break
        time.sleep(0.05)
    assert rank == 0 and not running.done()  # first in line: the vanished visitor's place is free
    running.cancel()
    assert staying.result(timeout=120)[0]["seed"] == 23
    drawn = prompts_drawn(data)
    assert not any(text.startswith("vanishes") for text in drawn)


def test_a_cancelled_api_job_frees_the_gpu_within_a_step(shared) -> None:
    server, data, _ = shared
    running = submit(server, OWNER, "cancelled", 31, long=True)  # a step takes a few tenths of a second
    time.sleep(1.0)
    cancelled_at = time.monotonic()
    running.cancel()
    after = generate(client_for(server, VISITOR), prompt="right after", seed=32)
    waited = time.monotonic() - cancelled_at
    assert after[0]["seed"] == 32 and waited < 8, f"the GPU came free {waited:.1f} s after the cancel"
    drawn = prompts_drawn(data)
    assert not any(text.startswith("cancelled") for text in drawn)
