"""Logins on a shared studio: failed attempts are slowed, then refused for a while, and logged.

Gradio checks the password in its own ``POST /login`` route (400 "Incorrect credentials." or 200 with a
cookie) and has no throttle, so a ``--share`` link would let anyone try passwords as fast as the tunnel
carries them. ``LoginThrottle`` sits in front of that route as ASGI middleware and asks one ``LoginGuard``:

1. A locked-out client address gets 429 and one sentence; gradio never sees the attempt, so even the
   right password is refused until the lock-out passes.
2. Otherwise the answer waits ``delay(address)`` seconds, growing with the address's recent failures.
   Attempts from one address are answered one at a time, so sending them in parallel gains nothing.
3. Gradio's answer is read from the response status: 400 is a failure (counted and logged with the
   address and the user name, never the password), 200 clears the address.

Wired in with ``demo.launch(..., app_kwargs={"middleware": middleware(LoginGuard())})``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import parse_qs

from starlette.middleware import Middleware

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 16 * 1024  # a login form is two short fields; a bigger body is passed on unread
MAX_NAME_CHARS = 64  # a user name in a log line; longer ones are cut


# ---------------------------------------------------------------- helpers


def _parse_ip(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The IP address in ``text`` ("1.2.3.4", "1.2.3.4:80", "::1", "[::1]:80"), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_loopback(host: str) -> bool:
    ip = _parse_ip(host)
    return ip is not None and ip.is_loopback


def address_key(address: str) -> str:
    """What the guard counts by: the address itself, or its /64 for IPv6 (one host usually owns a whole /64)."""
    ip = _parse_ip(address)
    if isinstance(ip, ipaddress.IPv6Address) and not ip.is_loopback:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip) if ip is not None else address


def client_address(scope: dict) -> str:
    """The address of the client behind a request.

    The direct peer, unless it is loopback: a ``--share`` tunnel or the artist's own reverse proxy
    forwards from 127.0.0.1 and names the real client in ``X-Forwarded-For``. Each proxy *appends*
    the address it saw, so the entries on the left are whatever the client chose to send; we take
    the right-most entry that is not loopback (uvicorn's rule too). A non-loopback peer's header is
    never read: anyone can send one.
    """
    peer = (scope.get("client") or ("unknown", 0))[0] or "unknown"
    if not _is_loopback(peer):
        return peer
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"]
    for entry in reversed(",".join(forwarded).split(",")):
        entry = entry.strip()
        if entry and not _is_loopback(entry):
            ip = _parse_ip(entry)
            return str(ip) if ip is not None else entry[:MAX_NAME_CHARS]
    return peer


def weak_passwords(credentials: list[tuple[str, str]], minimum: int = 12) -> list[str]:
    """The users whose password is shorter than ``minimum`` characters, in order, each once."""
    return list(dict.fromkeys(user for user, password in credentials if len(password) < minimum))


def weak_password_warning(users: list[str], minimum: int = 12) -> str:
    """One sentence for the console when ``--share`` meets short passwords."""
    if len(users) == 1:
        return (f"The password for {users[0]} is shorter than {minimum} characters: anyone with the link "
                "can try to guess it; use a longer one.")
    names = ", ".join(users[:-1]) + " and " + users[-1]
    return (f"The passwords for {names} are shorter than {minimum} characters: anyone with the link "
            "can try to guess them; use longer ones.")


# ---------------------------------------------------------------- the guard


@dataclass
class _Record:
    failures: deque  # times of the recent failures, at most max_failures of them
    locked_until: float = field(default=float("-inf"))


class LoginGuard:
    """Counts failed logins per client address: a growing delay, then a lock-out.

    ``delays[n]`` is the wait before answering an address with ``n`` recent failures (the last
    value repeats). ``max_failures`` failures within ``window_s`` lock the address for ``lockout_s``.
    Failures stay counted for ``window_s`` after they happen, so an address that comes back from a
    lock-out and fails again is locked again at once. The table holds at most ``max_entries``
    addresses; stale ones are forgotten first, then the longest idle.
    """

    def __init__(self, delays: tuple[float, ...] = (0, 1, 2, 4, 8), max_failures: int = 8,
                 lockout_s: float = 600, window_s: float = 900, *, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not delays or max_failures < 1 or max_entries < 1:
            raise ValueError(f"LoginGuard needs delays, max_failures >= 1 and max_entries >= 1, got "
                             f"{delays!r}, {max_failures}, {max_entries}.")
        self.delays, self.max_failures = tuple(delays), max_failures
        self.lockout_s, self.window_s, self.max_entries = lockout_s, window_s, max_entries
        self.clock = clock
        # Ordered by last failure, oldest first: the stale ones are always at the front.
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def locked_for(self, address: str) -> float:
        """Seconds until this address may try again; 0 when it is not locked out."""
        with self._lock:
            record = self._records.get(address_key(address))
            return max(0.0, record.locked_until - self.clock()) if record else 0.0

    def check(self, address: str) -> Optional[str]:
        """The refusal for a locked-out address, or None when it may try."""
        seconds = self.locked_for(address)
        if seconds <= 0:
            return None
        minutes = max(1, math.ceil(seconds / 60))
        unit = "minute" if minutes == 1 else "minutes"
        return f"Too many failed logins from your address; try again in {minutes} {unit}."

    def delay(self, address: str) -> float:
        """Seconds to wait before answering this address's next attempt."""
        with self._lock:
            count = self._recent_failures(address_key(address), self.clock())
        return float(self.delays[min(count, len(self.delays) - 1)])

    def failed(self, address: str, user: Optional[str] = None) -> None:
        """Count a failed login and log it (address, user name, failures so far; never the password)."""
        key, now = address_key(address), self.clock()
        with self._lock:
            self._forget_stale(now)
            record = self._records.pop(key, None) or _Record(deque(maxlen=self.max_failures))
            self._records[key] = record  # to the back: the newest failure
            record.failures.append(now)
            count = self._recent_failures(key, now)
            if count >= self.max_failures:
                record.locked_until = now + self.lockout_s
            while len(self._records) > self.max_entries:
                self._records.popitem(last=False)
        name = "?" if user is None else repr(user[:MAX_NAME_CHARS])  # repr: no newlines in the log
        log.warning("Failed login from %s as %s: %d failed in the last %d minutes.",
                    address, name, count, round(self.window_s / 60))
        if count >= self.max_failures:
            log.warning("Logins from %s are refused for %d minutes.", address, math.ceil(self.lockout_s / 60))

    def succeeded(self, address: str) -> None:
        """A correct login: forget this address's failures."""
        with self._lock:
            self._records.pop(address_key(address), None)

    def _recent_failures(self, key: str, now: float) -> int:
        record = self._records.get(key)
        if record is None:
            return 0
        while record.failures and record.failures[0] <= now - self.window_s:
            record.failures.popleft()
        return len(record.failures)

    def _forget_stale(self, now: float) -> None:
        """Drop records whose failures have all expired and whose lock-out is over."""
        while self._records:
            record = next(iter(self._records.values()))
            last = record.failures[-1] if record.failures else float("-inf")
            if last > now - self.window_s or record.locked_until > now:
                return
            self._records.popitem(last=False)


# ---------------------------------------------------------------- the middleware


class _Lanes:
    """One asyncio lock per client, held while its attempt is answered; removed when nobody waits."""

    def __init__(self) -> None:
        self._lanes: dict[str, list] = {}  # key -> [lock, number of requests using it]

    @contextlib.asynccontextmanager
    async def __call__(self, key: str):
        lane = self._lanes.setdefault(key, [asyncio.Lock(), 0])
        lane[1] += 1
        try:
            async with lane[0]:
                yield
        finally:
            lane[1] -= 1
            if lane[1] == 0:
                del self._lanes[key]


def _is_login(scope: dict) -> bool:
    return scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path", "").endswith(
        ("/login", "/login/"))


async def _read_form(scope: dict, receive: Callable) -> tuple[Optional[str], list[dict]]:
    """The user name of an urlencoded login form, and the messages read, to hand on unchanged."""
    headers = dict(scope.get("headers", []))
    if not headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded"):
        return None, []
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        size += len(message.get("body", b""))
        if size > MAX_FORM_BYTES:
            return None, messages
        if not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages).decode("utf-8", "replace")
    names = parse_qs(body).get("username")
    return (names[0].strip() if names else None), messages


class LoginThrottle:
    """ASGI middleware: slows and locks out failed ``POST .../login`` attempts; passes everything else on."""

    def __init__(self, app: Callable, guard: LoginGuard, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        self.app, self.guard, self.sleep = app, guard, sleep
        self._lanes = _Lanes()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if not _is_login(scope):
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        async with self._lanes(address_key(address)):
            refusal = self.guard.check(address)
            if refusal is not None:
                await self._refuse(send, refusal, self.guard.locked_for(address))
                return
            await self.sleep(self.guard.delay(address))
            user, messages = await _read_form(scope, receive)

            async def replay() -> dict:
                return messages.pop(0) if messages else await receive()

            status = 0

            async def watch(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, replay, watch)
            if status == 200:
                self.guard.succeeded(address)
            elif status == 400:
                self.guard.failed(address, user)

    @staticmethod
    async def _refuse(send: Callable, sentence: str, retry_after_s: float) -> None:
        body = json.dumps({"detail": sentence}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(max(1, math.ceil(retry_after_s))).encode())]})
        await send({"type": "http.response.body", "body": body})


def middleware(guard: LoginGuard) -> list[Middleware]:
    """What to pass as ``app_kwargs={"middleware": ...}`` to ``Blocks.launch``."""
    return [Middleware(LoginThrottle, guard=guard)]
