"""`python app.py serve`: start the studio, safe by default.

The studio can read the artist's files and spend their GPU, so it listens on loopback only.
Exposing it (``--share`` or a non-loopback ``--host``) requires credentials: without ``--auth``
or ``--auth-file`` it refuses to start and says how to add them. We refuse rather than invent a
password, because a generated password printed once to a console that a double-clicked
launcher then closes is a password nobody has.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path
from typing import Optional

from engines.errors import InvalidRequestError
from engines.settings import MachineSettings

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


def check_exposure(host: str, share: bool, credentials: list[tuple[str, str]]) -> None:
    """Refuse to expose the studio without a login."""
    if credentials:
        return
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


def prepare_gradio_environment(settings: MachineSettings) -> None:
    """Set before gradio is imported: uploads and generated files stay in the data dir, no telemetry."""
    os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.paths.cache / "gradio"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    credentials = load_credentials(args.auth, args.auth_file)
    check_exposure(args.host, args.share, credentials)
    prepare_gradio_environment(settings)
    from studio.app import launch
    from studio.context import build_studio_context

    ctx = build_studio_context(settings)
    launch(ctx, host=args.host, port=args.port, share=args.share, credentials=credentials,
           open_browser=not args.no_browser)
    return 0
