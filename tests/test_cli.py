"""The command line: --help, doctor, the shared flags anywhere, and the loopback/auth rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import app
from engines.errors import InvalidRequestError
from studio.server import check_exposure, is_loopback, load_credentials

ROOT = Path(__file__).resolve().parent.parent


def run_app(*args, data_dir):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_help_lists_commands_and_flags(tmp_path):
    result = run_app("--help", data_dir=tmp_path)
    assert result.returncode == 0
    for text in ("serve", "doctor", "--vram-limit", "--precision", "--auth", "--offline", "--no-browser"):
        assert text in result.stdout


def test_doctor_reports_the_machine(tmp_path):
    result = run_app("doctor", "--cpu", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("Device", "cpu", "RAM", "torch", "diffusers", "gradio", "models dir", "cache dir",
                 "stable-diffusion-v1-5/stable-diffusion-v1-5"):
        assert text in out
    assert str(tmp_path / "models") in out


def test_machine_flags_before_or_after_the_command(tmp_path):
    parser = app.build_parser()
    before = parser.parse_args(["--cpu", "--vram-limit", "6", "--precision", "fp16", "doctor"])
    after = parser.parse_args(["doctor", "--cpu", "--vram-limit", "6", "--precision", "fp16"])
    for args in (before, after):
        settings = app.settings_from_args(args)
        assert (settings.cpu, settings.vram_limit_gb, settings.precision) == (True, 6.0, "fp16")
    plain = parser.parse_args(["--port", "7861", "--no-browser"])
    assert (plain.command, plain.port, plain.no_browser) == (None, 7861, True)


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0", "--no-browser"], "Refusing to listen on 0.0.0.0 without a login"),
    (["serve", "--share", "--no-browser"], "Refusing --share without a login"),
    (["--auth", "nopassword", "--no-browser"], "--auth must look like USER:PASSWORD"),
    (["doctor", "--precision", "fp8"], "invalid choice"),
    (["doctor", "--vram-limit", "0"], "--vram-limit must be a positive number"),
])
def test_refusals_exit_non_zero_with_one_sentence(tmp_path, args, message):
    result = run_app(*args, data_dir=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    if "invalid choice" not in message:
        assert result.stderr.strip().count("\n") == 0  # one line, no traceback


def test_exposure_rules(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("studio.lan")
    check_exposure("127.0.0.1", False, [])
    check_exposure("0.0.0.0", True, [("ink", "secret")])
    with pytest.raises(InvalidRequestError):
        check_exposure("192.168.1.5", False, [])
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("# studio users\nink:secret\n\nframe:pa:ss\n")
    assert load_credentials(["a:b"], str(auth_file)) == [("a", "b"), ("ink", "secret"), ("frame", "pa:ss")]
    (tmp_path / "empty.txt").write_text("# nobody\n")
    with pytest.raises(InvalidRequestError, match="has no USER:PASSWORD lines"):
        load_credentials(None, str(tmp_path / "empty.txt"))
    with pytest.raises(InvalidRequestError, match="Cannot read the auth file"):
        load_credentials(None, str(tmp_path / "missing.txt"))
