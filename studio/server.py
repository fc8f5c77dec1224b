"""`python app.py serve`: start the studio, safe by default.

The studio can read the artist's files and spend their GPU, so it listens on loopback only.
Exposing it (``--share``, a non-loopback ``--host``, or ``--exposed`` behind the artist's own tunnel)
requires credentials: without ``--auth`` or ``--auth-file`` it refuses to start and says how to add
them. We refuse rather than invent a password, because a generated password printed once to a
console that a double-clicked launcher then closes is a password nobody has.

Exposed, every path a visitor types must lie inside the data folder (studio/access.py), failed
logins are throttled (studio/logins.py), and the GPU line has a length (studio/queue.py). With
``--share`` the studio also runs as a demo unless ``--no-demo``: visitors generate, the owner (the
first login, or ``--admin``) also collects, trains and manages the machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from engines.errors import InvalidRequestError
from engines.settings import MachineSettings
from studio.access import Access
from studio.queue import DEFAULT_LINE

log = logging.getLogger(__name__)
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860


def add_serve_arguments(parser: argparse.ArgumentParser, suppress: bool) -> None:
    def default(value):
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("studio server")
    group.add_argument("--host", default=default(DEFAULT_HOST),
                       help="address to listen on (default 127.0.0.1: this computer only)")
    group.add_argument("--port", type=int, default=default(DEFAULT_PORT), help="port (default 7860)")
    group.add_argument("--share", action="store_true", default=default(False),
                       help="also publish a public gradio.live link (needs --auth)")
    group.add_argument("--auth", action="append", default=default(None), metavar="USER:PASS",
                       help="require this login; repeat for more users")
    group.add_argument("--auth-file", default=default(None), metavar="FILE",
                       help="a file of USER:PASS lines (# starts a comment)")
    group.add_argument("--exposed", action="store_true", default=default(False),
                       help="others reach the studio through your own tunnel or proxy: apply the shared-link rules")
    group.add_argument("--demo", action="store_true", default=default(False),
                       help="visitors can only make pictures: Dataset, Training and machine controls are the "
                            "owner's (on by default with --share)")
    group.add_argument("--no-demo", action="store_true", default=default(False),
                       help="with --share, show every tab to every login")
    group.add_argument("--admin", default=default(None), metavar="USER",
                       help="the owner's login (default: the first --auth user)")
    group.add_argument("--queue-size", type=int, default=default(DEFAULT_LINE), metavar="N",
                       help=f"GPU jobs that may wait in line; more are told the studio is busy (default {DEFAULT_LINE})")
    group.add_argument("--no-browser", action="store_true", default=default(False),
                       help="do not open a browser tab")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_serve_arguments(parser, suppress=True)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: could resolve to anything, treat as exposed


def _parse_credential(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise InvalidRequestError(f"{where} must look like USER:PASSWORD, got '{text.strip()}'.")
    return user, password


def load_credentials(auth: Optional[list[str]], auth_file: Optional[str]) -> list[tuple[str, str]]:
    creds = [_parse_credential(item, "--auth") for item in auth or []]
    if auth_file:
        path = Path(auth_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise InvalidRequestError(f"Cannot read the auth file {path}: {error.strerror}.") from error
        for number, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                creds.append(_parse_credential(line, f"Line {number} of {path}"))
        if not creds:
            raise InvalidRequestError(f"The auth file {path} has no USER:PASSWORD lines.")
    return creds


def is_exposed(args: argparse.Namespace) -> bool:
    return bool(args.share or args.exposed or not is_loopback(args.host))


def check_exposure(host: str, share: bool, credentials: list[tuple[str, str]], exposed: bool = False) -> None:
    """Refuse to expose the studio without a login."""
    if credentials:
        return
    if exposed and is_loopback(host) and not share:
        raise InvalidRequestError(
            "Refusing --exposed without a login: add --auth USER:PASSWORD (or --auth-file FILE).")
    if share:
        raise InvalidRequestError(
            "Refusing --share without a login: add --auth USER:PASSWORD (or --auth-file FILE) so "
            "strangers with the link cannot use your GPU and files."
        )
    if not is_loopback(host):
        raise InvalidRequestError(
            f"Refusing to listen on {host} without a login: add --auth USER:PASSWORD (or "
            "--auth-file FILE), or keep the default --host 127.0.0.1."
        )


def access_for(args: argparse.Namespace, settings: MachineSettings,
               credentials: list[tuple[str, str]]) -> Access:
    """Who may do what: exposed or not, demo or not, and whose login is the owner's."""
    if args.demo and args.no_demo:
        raise InvalidRequestError("Choose --demo or --no-demo, not both.")
    users = [user for user, _ in credentials]
    if args.admin and args.admin not in users:
        raise InvalidRequestError(f"--admin {args.admin} is not one of the logins given to --auth or --auth-file.")
    if args.queue_size < 1:
        raise InvalidRequestError("--queue-size must be at least 1.")
    demo = bool(args.demo or (args.share and not args.no_demo))
    return Access(settings.paths.root, exposed=is_exposed(args), demo=demo,
                  owner=args.admin or (users[0] if users else None))


def warn_about_passwords(credentials: list[tuple[str, str]]) -> Optional[str]:
    """The warning an exposed studio starts with when a password is short, or None."""
    from studio.logins import weak_password_warning, weak_passwords

    weak = weak_passwords(credentials)
    return weak_password_warning(weak) if weak else None


def prepare_gradio_environment(settings: MachineSettings, exposed: bool = False) -> None:
    """Set before gradio is imported: uploads and generated files stay in the data dir, no telemetry.

    Exposed, uploads must land inside the data folder whatever the environment says: a visitor's
    upload is then a path the confinement rules accept."""
    temp = str(settings.paths.cache / "gradio")
    if exposed:
        os.environ["GRADIO_TEMP_DIR"] = temp
    else:
        os.environ.setdefault("GRADIO_TEMP_DIR", temp)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    credentials = load_credentials(args.auth, args.auth_file)
    exposed = is_exposed(args)
    check_exposure(args.host, args.share, credentials, exposed)
    access = access_for(args, settings, credentials)
    if exposed and (warning := warn_about_passwords(credentials)):
        log.warning(warning)
        print(f"warning: {warning}", file=sys.stderr)
    prepare_gradio_environment(settings, exposed)
    from studio.app import launch
    from studio.context import build_studio_context

    ctx = build_studio_context(settings, access)
    if exposed:
        log.info("Shared: paths confined to %s%s; owner: %s", settings.paths.root,
                 ", demo mode" if access.demo else "", access.owner)
    launch(ctx, host=args.host, port=args.port, share=args.share, credentials=credentials,
           open_browser=not args.no_browser, queue_size=args.queue_size)
    return 0
