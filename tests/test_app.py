"""The studio as an artist meets it: a real server, its API, and a real browser."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("INKFRAME_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class Studio:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--no-browser", "--port", str(self.port),
             "--data-dir", str(data_dir), *extra],
            cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"studio exited early:\n{self.log.read_text()}")
            try:
                if status_of(self.url) == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise AssertionError(f"studio did not answer within 90 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    server = Studio(tmp_path_factory.mktemp("studio-data"))
    yield server
    server.stop()


def test_studio_answers_and_serves_only_the_data_dir(studio):
    assert status_of(studio.url) == 200
    assert status_of(studio.url + "gradio_api/file=/etc/passwd") == 403
    assert status_of(studio.url + "gradio_api/file=" + quote(str(ROOT / "app.py"))) == 403


def test_client_sees_the_studio_jobs_and_nothing_else(studio):
    from gradio_client import Client

    client = Client(studio.url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/generate", "/compose_page", "/chapter", "/live_action", "/animate",
                                           "/collect", "/train_start", "/train_status", "/train_stop"}
    assert not api["unnamed_endpoints"]
    with pytest.raises(Exception):  # the System tab's wiring is the UI's, not the API's
        client.predict(api_name="/telemetry")
    with pytest.raises(Exception, match="There is no run no-such-run"):  # a job answers through the API
        client.predict(run="no-such-run", api_name="/train_status")


def test_auth_is_required_when_given(tmp_path):
    from gradio_client import Client

    server = Studio(tmp_path / "data", "--auth", "ink:frame-secret")
    try:
        with pytest.raises(Exception):
            Client(server.url, verbose=False).view_api(return_format="dict", print_info=False)
        client = Client(server.url, auth=("ink", "frame-secret"), verbose=False)
        assert "/generate" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    finally:
        server.stop()


@pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(),
                    reason="Chromium is not installed (.ci/run installs it)")
def test_browser_shows_the_device_readout(studio, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(studio.url)
            page.get_by_role("tab", name="System").click()
            device = page.locator("#ink-device")
            device.wait_for(timeout=30_000)
            tabs = page.get_by_role("tab").all_inner_texts()
            assert "System" in tabs and len(tabs) == len(set(tabs)), tabs  # no phantom tab buttons
            assert "cpu" in device.inner_text().lower()
            readout = page.locator("#ink-readout")
            assert "RAM" in readout.inner_text()
            gauge = page.locator('#ink-gauges [data-label="System RAM"]')
            assert 0 < float(gauge.get_attribute("data-percent")) <= 100
            page.screenshot(path=str(tmp_path / "system-tab.png"), full_page=True)
        finally:
            browser.close()
