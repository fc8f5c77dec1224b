"""Failed logins are slowed, then locked out per client address, and logged without the password."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient

from studio.logins import (LoginGuard, LoginThrottle, address_key, client_address, middleware, weak_password_warning,
                           weak_passwords)

PASSWORD = "a-long-password-1"
ATTACKER = ("203.0.113.5", 40000)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ---------------------------------------------------------------- the guard


def test_delay_grows_with_failures_then_the_address_is_locked(clock):
    guard = LoginGuard(delays=(0, 1, 2, 4, 8), max_failures=8, lockout_s=600, clock=clock)
    waits = []
    for _ in range(8):
        assert guard.check("198.51.100.7") is None
        waits.append(guard.delay("198.51.100.7"))
        guard.failed("198.51.100.7", "ink")
    assert waits == [0, 1, 2, 4, 8, 8, 8, 8]
    assert guard.check("198.51.100.7") == "Too many failed logins from your address; try again in 10 minutes."
    assert guard.check("198.51.100.8") is None  # another address is not affected
    clock.advance(541)
    assert guard.check("198.51.100.7") == "Too many failed logins from your address; try again in 1 minute."


def test_the_lock_out_passes_but_recent_failures_still_count(clock):
    guard = LoginGuard(max_failures=3, lockout_s=600, window_s=900, clock=clock)
    for _ in range(3):
        guard.failed("198.51.100.7", "ink")
    clock.advance(600)
    assert guard.check("198.51.100.7") is None
    guard.failed("198.51.100.7", "ink")  # the first three are still within the window
    assert guard.check("198.51.100.7") is not None
    clock.advance(900)
    assert guard.check("198.51.100.7") is None
    assert guard.delay("198.51.100.7") == 0


def test_success_clears_the_address(clock):
    guard = LoginGuard(max_failures=3, clock=clock)
    guard.failed("198.51.100.7", "ink")
    guard.failed("198.51.100.7", "ink")
    assert guard.delay("198.51.100.7") == 2
    guard.succeeded("198.51.100.7")
    assert guard.delay("198.51.100.7") == 0
    assert len(guard) == 0


def test_stale_addresses_are_forgotten(clock):
    guard = LoginGuard(max_failures=2, lockout_s=1200, window_s=900, clock=clock)
    guard.failed("198.51.100.1", "a")
    guard.failed("198.51.100.2", "b")
    guard.failed("198.51.100.2", "b")  # locked for 1200 s, longer than the window
    clock.advance(1000)
    guard.failed("198.51.100.3", "c")
    assert len(guard) == 2  # .1 forgotten; .2 is still locked, so kept
    clock.advance(300)
    guard.failed("198.51.100.3", "c")
    assert len(guard) == 1


def test_the_table_is_capped(clock):
    guard = LoginGuard(max_entries=3, clock=clock)
    for last in range(1, 6):
        guard.failed(f"198.51.100.{last}", "ink")
        clock.advance(1)
    assert len(guard) == 3
    assert guard.delay("198.51.100.1") == 0  # the longest idle went first
    assert guard.delay("198.51.100.5") == 1


def test_ipv6_hosts_are_counted_by_their_64(clock):
    guard = LoginGuard(max_failures=2, clock=clock)
    guard.failed("2001:db8:1:2::a", "ink")
    guard.failed("2001:db8:1:2::b", "ink")
    assert guard.check("2001:db8:1:2:ffff::1") is not None
    assert guard.check("2001:db8:1:3::a") is None
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"


def test_a_guard_without_delays_is_refused():
    with pytest.raises(ValueError, match="needs delays"):
        LoginGuard(delays=())


# ---------------------------------------------------------------- client_address


def scope_from(peer, *forwarded: str) -> dict:
    return {"type": "http", "client": peer, "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded]}


@pytest.mark.parametrize("peer, forwarded, expected", [
    (("198.51.100.7", 5000), [], "198.51.100.7"),
    (("198.51.100.7", 5000), ["203.0.113.9"], "198.51.100.7"),  # never trusted from a remote peer
    (("127.0.0.1", 5000), [], "127.0.0.1"),  # the artist on their own machine
    (("127.0.0.1", 5000), ["203.0.113.9"], "203.0.113.9"),  # the share tunnel
    (("::1", 5000), ["203.0.113.9"], "203.0.113.9"),
    # The left entries are the client's own words; the proxy appends what it saw on the right.
    (("127.0.0.1", 5000), ["10.9.8.7, 203.0.113.9"], "203.0.113.9"),
    (("127.0.0.1", 5000), ["10.9.8.7", "203.0.113.9, 127.0.0.1"], "203.0.113.9"),
    (("127.0.0.1", 5000), ["[2001:db8::1]:443"], "2001:db8::1"),
    (("127.0.0.1", 5000), ["203.0.113.9:8080"], "203.0.113.9"),
    (None, [], "unknown"),
])
def test_client_address(peer, forwarded, expected):
    assert client_address(scope_from(peer, *forwarded)) == expected


# ---------------------------------------------------------------- passwords


def test_weak_passwords_are_named():
    credentials = [("ink", "short"), ("owner", PASSWORD), ("ink", "again"), ("bob", "12345678901")]
    assert weak_passwords(credentials) == ["ink", "bob"]
    assert weak_passwords([("owner", PASSWORD)]) == []
    assert weak_password_warning(["ink"]) == ("The password for ink is shorter than 12 characters: anyone with "
                                              "the link can try to guess it; use a longer one.")
    assert weak_password_warning(["ink", "bob", "sam"]).startswith("The passwords for ink, bob and sam are shorter")


# ---------------------------------------------------------------- the middleware


class FakeGradio:
    """A Starlette app whose /login answers like gradio's: 400 "Incorrect credentials." or 200."""

    def __init__(self, guard: LoginGuard) -> None:
        self.logins, self.slept, self.started = 0, [], False

        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)

        async def login(request):
            self.logins += 1
            form = await request.form()
            if form.get("username") == "owner" and form.get("password") == PASSWORD:
                return JSONResponse({"success": True})
            return JSONResponse({"detail": "Incorrect credentials."}, status_code=400)  # FastAPI's HTTPException

        async def other(request):
            return PlainTextResponse("ok")

        async def echo(websocket):
            await websocket.accept()
            await websocket.send_text(await websocket.receive_text())
            await websocket.close()

        @contextlib.asynccontextmanager
        async def lifespan(app):
            self.started = True
            yield

        self.app = Starlette(
            routes=[Route("/login", login, methods=["POST"]), Route("/login/", login, methods=["POST"]),
                    Route("/gradio_api/login_check", other), Route("/other", other, methods=["GET", "POST"]),
                    WebSocketRoute("/login", echo)],
            middleware=[Middleware(LoginThrottle, guard=guard, sleep=sleep)], lifespan=lifespan)


def test_wrong_passwords_are_slowed_then_refused_without_reaching_the_app(clock, caplog):
    guard = LoginGuard(delays=(0, 1, 2), max_failures=3, lockout_s=600, clock=clock)
    fake = FakeGradio(guard)
    client = TestClient(fake.app, client=ATTACKER)
    with caplog.at_level(logging.WARNING, logger="studio.logins"):
        answers = [client.post("/login", data={"username": "owner", "password": "guess-1234"}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [400, 400, 400]
    assert answers[0].json() == {"detail": "Incorrect credentials."}
    assert fake.slept == [0, 1, 2]

    refused = client.post("/login/", data={"username": "owner", "password": PASSWORD})
    assert refused.status_code == 429
    assert refused.json() == {"detail": "Too many failed logins from your address; try again in 10 minutes."}
    assert refused.headers["retry-after"] == "600"
    assert fake.logins == 3  # gradio never saw the attempt

    failures = [record.getMessage() for record in caplog.records]
    assert failures[0] == "Failed login from 203.0.113.5 as 'owner': 1 failed in the last 15 minutes."
    assert "Logins from 203.0.113.5 are refused for 10 minutes." in failures
    assert "guess-1234" not in caplog.text

    clock.advance(600)
    assert client.post("/login", data={"username": "owner", "password": PASSWORD}).status_code == 200
    assert guard.check(ATTACKER[0]) is None and len(guard) == 0


def test_other_requests_pass_untouched(clock):
    guard = LoginGuard(max_failures=1, clock=clock)
    guard.failed(ATTACKER[0], "owner")  # locked
    fake = FakeGradio(guard)
    with TestClient(fake.app, client=ATTACKER) as client:
        assert fake.started  # the lifespan scope went through
        assert client.get("/other").text == "ok"
        assert client.post("/other", data={"username": "owner", "password": "x"}).text == "ok"
        assert client.get("/gradio_api/login_check").text == "ok"
        with client.websocket_connect("/login") as websocket:
            websocket.send_text("hello")
            assert websocket.receive_text() == "hello"
    assert fake.slept == []


def test_a_login_without_a_readable_form_is_still_counted(clock, caplog):
    guard = LoginGuard(max_failures=5, clock=clock)
    fake = FakeGradio(guard)
    client = TestClient(fake.app, client=ATTACKER)
    with caplog.at_level(logging.WARNING, logger="studio.logins"):
        answer = client.post("/login", files={"username": (None, "owner"), "password": (None, "guess-1234")})
    assert answer.status_code == 400
    assert caplog.records[0].getMessage().startswith("Failed login from 203.0.113.5 as ?:")
    assert guard.delay(ATTACKER[0]) == 1


def test_parallel_attempts_from_one_address_are_answered_one_at_a_time(clock):
    guard = LoginGuard(delays=(0, 1), max_failures=3, clock=clock)
    fake = FakeGradio(guard)

    async def attack() -> list[int]:
        transport = httpx.ASGITransport(app=fake.app, client=ATTACKER)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            answers = await asyncio.gather(*[
                client.post("/login", data={"username": "owner", "password": f"guess-{n}"}) for n in range(8)])
        return sorted(answer.status_code for answer in answers)

    assert asyncio.run(attack()) == [400, 400, 400, 429, 429, 429, 429, 429]
    assert fake.logins == 3


# ---------------------------------------------------------------- through gradio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gradio_login_is_throttled(clock, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    guard = LoginGuard(delays=(0, 0.01, 0.02), max_failures=3, lockout_s=600, clock=clock)
    with gr.Blocks(title="Inkframe Studio", analytics_enabled=False) as demo:
        gr.Markdown("studio")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, auth=[("owner", PASSWORD)], prevent_thread_lock=True,
                quiet=True, app_kwargs={"middleware": middleware(guard)})
    try:
        url = f"http://127.0.0.1:{port}/login"
        wrong = {"username": "owner", "password": "guess-1234"}
        with caplog.at_level(logging.WARNING, logger="studio.logins"):
            assert [httpx.post(url, data=wrong).status_code for _ in range(3)] == [400, 400, 400]
        assert "Failed login from 127.0.0.1 as 'owner': 1 failed" in caplog.text  # gradio's own form, read and replayed
        assert "guess-1234" not in caplog.text
        refused = httpx.post(url, data={"username": "owner", "password": PASSWORD})
        assert refused.status_code == 429
        assert refused.json() == {"detail": "Too many failed logins from your address; try again in 10 minutes."}
        # Behind the share tunnel (a loopback peer naming the client) another client is not locked out.
        assert httpx.post(url, data=wrong, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 400

        clock.advance(600)
        accepted = httpx.post(url, data={"username": "owner", "password": PASSWORD})
        assert accepted.status_code == 200
        assert any(name.startswith("access-token") for name in accepted.cookies)
    finally:
        demo.close()
