"""Studio startup: ``python app.py --no-browser`` to the first HTTP 200 on /, against a minimal gradio app.

Both are started as fresh processes the same way and polled until ``/`` answers 200; the time
covers the interpreter, imports, building the UI and the server coming up. The baseline is a
``gradio.Blocks()`` holding one Markdown (bench/minimal_gradio_app.py), so the ratio says what
the studio adds on top of gradio itself. There is no target; the number is reported.

    python bench/bench_startup.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402

NAME = "bench_startup"
LAUNCH_TIMEOUT_S = 120.0
POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def time_to_first_200(command: list[str], port: int, log: Path) -> float:
    """Seconds from starting ``command`` to the first 200 on /; the process is stopped afterwards."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=harness.ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            while time.perf_counter() - start < LAUNCH_TIMEOUT_S:
                if answers_200(url):
                    return time.perf_counter() - start
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with code {proc.returncode} before answering")
                time.sleep(POLL_S)
            raise RuntimeError(f"did not answer 200 within {LAUNCH_TIMEOUT_S:.0f} s")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0] + " (--device, --size and --vram-limit are ignored)",
                              argv)
    runs = harness.repeats(args, full=3, quick=1)
    report = harness.Report(NAME, "studio startup vs a minimal gradio app, to first HTTP 200", None, args)
    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        tmp_path = Path(tmp)

        def studio(i: int) -> tuple[list[str], int]:
            port = free_port()
            return [sys.executable, str(harness.ROOT / "app.py"), "--no-browser", "--port", str(port),
                    "--data-dir", str(tmp_path / f"data-{i}")], port

        def baseline(i: int) -> tuple[list[str], int]:
            port = free_port()
            return [sys.executable, str(harness.ROOT / "bench" / "minimal_gradio_app.py"), "--port", str(port)], port

        launchers = {"studio": studio, "baseline": baseline}
        samples: dict[str, list[float]] = {"studio": [], "baseline": []}
        failures: list[str] = []
        # Full runs start each once untimed, so both find the same warm file cache.
        plan = ([("studio", False), ("baseline", False)] if not args.quick else [])
        for i in range(runs):
            order = ("studio", "baseline") if i % 2 == 0 else ("baseline", "studio")
            plan += [(which, True) for which in order]
        for i, (which, counted) in enumerate(plan):
            command, port = launchers[which](i)
            log = tmp_path / f"{which}-{i}.log"
            try:
                seconds = time_to_first_200(command, port, log)
            except RuntimeError as error:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                failures.append(f"{which}: {error}\n{tail}")
                continue
            if counted:
                samples[which].append(seconds)

        report.check("both apps answered HTTP 200 on /", not failures)
        for failure in failures:
            print(f"launch failed: {failure}", file=sys.stderr)
        if failures:
            for which in samples:
                samples[which] = samples[which] or [float("nan")]
        import_rows = []
        if not args.quick:
            for _ in range(runs):
                seconds = time_import_gradio()
                import_rows.append(seconds)

    report.info = harness.environment(args)
    studio_row = report.add("studio: python app.py --no-browser", samples["studio"], note="to first 200 on /")
    baseline_row = report.add("baseline: gradio.Blocks + one Markdown", samples["baseline"],
                              note="to first 200 on /")
    if import_rows:
        report.add("for scale: python -c 'import gradio'", import_rows, note="interpreter + gradio import")
    report.note("Seconds from process start to the first HTTP 200 on /, median of the runs, the two apps "
                "alternating; each studio run gets a fresh --data-dir.")
    return report.finish(studio_row, baseline_row)


def time_import_gradio() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], check=True, cwd=harness.ROOT,
                   env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(harness.run(main))
