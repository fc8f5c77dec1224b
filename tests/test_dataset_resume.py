"""`python app.py collect` end to end: a run killed with SIGKILL half-way and started again ends with
the same dataset as a run that never stopped, and every user error is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.dataset.cli import add_arguments, request_from_args
from engines.errors import InvalidRequestError
from engines.settings import MachineSettings
from fake_sites import FakeSites, danbooru_scenario

ROOT = Path(__file__).resolve().parent.parent


def collect_cmd(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "app.py"), "collect", "--data-dir", str(data_dir), *args]


def fingerprint(out: Path) -> dict[str, str]:
    """Every file a trainer would read, by name, with the MD5 of its bytes."""
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(out.iterdir()) if p.suffix in (".jpg", ".png", ".txt")}


def test_killed_run_resumes_to_the_same_dataset(tmp_path):
    with FakeSites() as sites:
        scenario = danbooru_scenario(sites, valid=12, with_slow=False, flaky=False)
        sites.image_delay_s = 0.12  # slow enough that the kill lands mid-run
        args = ["--source", "danbooru", "--endpoint", sites.endpoint("danbooru"), "--target", "50",
                "--rate-limit", "0", "--timeout", "5", "--retries", "1", "--backoff", "0.01"]
        whole, killed = tmp_path / "whole", tmp_path / "killed"
        uninterrupted = subprocess.Popen(collect_cmd(tmp_path / "data", *args, "--out", str(whole)),
                                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        victim = subprocess.Popen(collect_cmd(tmp_path / "data", *args, "--out", str(killed)),
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and victim.poll() is None:
            if killed.is_dir() and len(list(killed.glob("*.jpg"))) >= 5:
                break
            time.sleep(0.02)
        assert victim.poll() is None, "the run finished before it could be killed"
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        half = len(list(killed.glob("*.jpg")))
        assert 5 <= half < 12
        stdout, stderr = uninterrupted.communicate(timeout=90)
        assert uninterrupted.returncode == 0, stderr

        resumed = subprocess.run(collect_cmd(tmp_path / "data", *args, "--out", str(killed)),
                                 cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert resumed.returncode == 0, resumed.stderr

    assert {Path(n).stem for n in fingerprint(whole) if n.endswith(".jpg")} == scenario.kept_stems()
    assert fingerprint(killed) == fingerprint(whole)
    assert "holds 12 of 50 images" in stdout and "Skipped" in resumed.stdout
    assert not list((killed / ".inkframe" / "parts").iterdir())
    assert not list(killed.glob(".*.tmp"))
    with sqlite3.connect(killed / ".inkframe" / "manifest.sqlite3") as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM posts GROUP BY status"))
    assert statuses.get("writing") is None and statuses["kept"] == 12
    images = {p.stem for p in killed.glob("*.jpg")}
    assert {p.stem for p in killed.glob("*.txt")} == images == {p.stem for p in killed.glob("*.json")} - {"dataset"}


def test_cli_errors_are_one_line_and_non_zero(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cases = [
        (["--source", "cse", "--tags", "x"], 2, "error: Google Custom Search needs an API key and a search engine id (cx)."),
        ([], 2, "error: Choose a source with --source"),
        (["--source", "danbooru", "--endpoint", f"http://127.0.0.1:{port}", "--retries", "0"], 6,
         f"error: Cannot reach Danbooru at 127.0.0.1:{port}: check the internet connection"),
        (["--source", "danbooru", "--offline"], 3, "error: The studio is offline (--offline), so Danbooru cannot be reached"),
        (["--source", "danbooru", "--target", "0"], 2, "error: The target must be a whole number"),
    ]
    for args, code, message in cases:
        result = subprocess.run(collect_cmd(tmp_path / "data", *args, "--out", str(tmp_path / "ds")),
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == code, (args, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(message), (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_per_source_values_on_the_command_line(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = MachineSettings(data_dir=tmp_path)
    args = parser.parse_args(["--source", "danbooru", "--source", "wallhaven", "--api-key", "danbooru=D",
                              "--api-key", "W", "--login", "me", "--endpoint", "wallhaven=http://mirror",
                              "--min-edge", "768", "--rate-limit", "2"])
    request = request_from_args(args, settings)
    danbooru, wallhaven = request.sources
    assert (danbooru.api_key, danbooru.login, danbooru.endpoint) == ("D", "me", "")
    assert (wallhaven.api_key, wallhaven.endpoint, wallhaven.login) == ("W", "http://mirror", "")
    assert request.thresholds.min_long_edge == 768 and request.network.rate_limit == 2
    assert request.out_dir == tmp_path.resolve() / "datasets" / "default"
    with pytest.raises(InvalidRequestError, match="names 'konachan', which is not one of the chosen sources"):
        request_from_args(parser.parse_args(["--source", "danbooru", "--endpoint", "konachan=http://x"]), settings)
