"""Inkframe Studio: `python app.py` serves the studio; subcommands run the same engines from a terminal.

    python app.py [serve] [--host H] [--port P] [--share] [--auth USER:PASS] [--no-browser] ...
    python app.py doctor
    python app.py <command> --help

The machine and data flags (--data-dir, --cpu, --vram-limit, --ram-limit, --precision, --offline)
are accepted by every command, before or after its name.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from engines import __version__
from engines.errors import StudioError
from engines.settings import PRECISIONS, MachineSettings

# name -> (module, one-line help). A module has add_arguments(parser) and run(args, ctx) -> int,
# and imports nothing heavy at module level, so `--help` stays instant.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("studio.server", "start the studio in the browser (the default)"),
    "collect": ("engines.dataset.cli", "collect a training dataset from image sites or a folder"),
    "train": ("engines.origin.training.cli", "train an Origin model on your dataset"),
    "generate": ("engines.manga.cli", "generate manga panels with an Origin model or an SD 1.5 checkpoint"),
    "page": ("engines.manga.page_cli", "compose a manga page: layout, panels, speech bubbles, screentone"),
    "chapter": ("engines.manga.chapter_cli", "put pages in order into one CBZ or PDF for comic readers"),
    "live-action": ("engines.live_action.cli", "make a drawn character photoreal, keeping its pose and colours"),
    "animate": ("engines.animation.cli", "animate a character or a still with AnimateDiff (MP4, GIF, WebP, WebM)"),
    "doctor": ("engines.doctor", "show the device, memory, versions, folders and installed models"),
}


def _machine_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The shared flags; on subcommands they default to SUPPRESS so a value given before the
    command name is not overwritten by the subparser's default."""

    def default(value):
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("machine and data")
    group.add_argument("--data-dir", default=default(None), metavar="DIR",
                       help="where datasets, runs, models, cache and outputs live")
    group.add_argument("--cpu", action="store_true", default=default(False), help="never use the GPU")
    group.add_argument("--vram-limit", type=float, default=default(None), metavar="GB",
                       help="use at most this much GPU memory")
    group.add_argument("--ram-limit", type=float, default=default(None), metavar="GB",
                       help="use at most this much CPU RAM for models")
    group.add_argument("--precision", choices=PRECISIONS, default=default("auto"),
                       help="number format for the models (auto picks what the GPU runs well)")
    group.add_argument("--offline", action="store_true", default=default(False),
                       help="never touch the network; only use models already on disk")
    group.add_argument("--verbose", "-v", action="store_true", default=default(False), help="more log output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py", description="Inkframe Studio: a local AI studio for manga and anime artists.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run without a command to start the studio. `app.py COMMAND --help` explains a command.",
    )
    parser.add_argument("--version", action="version", version=f"Inkframe Studio {__version__}")
    _machine_flags(parser, suppress=False)
    importlib.import_module("studio.server").add_serve_arguments(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _machine_flags(cmd, suppress=True)
        importlib.import_module(module).add_arguments(cmd)
    return parser


def settings_from_args(args: argparse.Namespace) -> MachineSettings:
    kwargs = dict(cpu=args.cpu, vram_limit_gb=args.vram_limit, ram_limit_gb=args.ram_limit,
                  precision=args.precision, offline=args.offline)
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    return MachineSettings(**kwargs)


def _log_to_file(settings: MachineSettings) -> None:
    """Keep a rotating log in the data dir: days-long runs need a record that outlives the console."""
    from logging.handlers import RotatingFileHandler

    logs = settings.paths.logs
    logs.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(logs / "studio.log", maxBytes=5 * 2**20, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "serve"
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = settings_from_args(args)
        _log_to_file(settings)
        module = importlib.import_module(COMMANDS[command][0])
        return int(module.run(args, settings) or 0)
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
