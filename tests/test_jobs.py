"""The job runner: progress then result, errors as one sentence, cancel, previews coalesced."""

from __future__ import annotations

import threading

import pytest

from engines.errors import Cancelled, InvalidRequestError, StudioError
from engines.hardware import HardwareManager
from engines.progress import CancelToken, TqdmProgress, diffusers_step_callback
from engines.settings import MachineSettings
from studio.jobs import JobRunner


@pytest.fixture
def runner(tmp_path):
    return JobRunner(HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True), device_budget_bytes=2**30))


def test_progress_then_result_under_the_gpu_lock(runner):
    def call(on_step, cancel):
        assert runner.hardware.busy == "panel"
        for i in range(3):
            on_step(i + 1, 3, f"step {i + 1}")
        return "image"

    events = list(runner.stream("panel", call))
    assert events[-1].kind == "result" and events[-1].result == "image"
    assert [e.kind for e in events[:-1]] == ["progress"] * (len(events) - 1)
    assert events[-2].step == 3  # stale progress may be dropped, the latest never is
    assert runner.hardware.busy is None


def test_errors_become_one_sentence(runner):
    def bad_request(on_step, cancel):
        raise InvalidRequestError("The prompt is empty: describe the panel you want.")

    def crash(on_step, cancel):
        raise KeyError("unet")

    assert list(runner.stream("x", bad_request))[-1].error == "The prompt is empty: describe the panel you want."
    message = list(runner.stream("x", crash))[-1].error
    assert "KeyError" in message and "log" in message and "\n" not in message
    with pytest.raises(StudioError, match="prompt is empty"):
        runner.run("x", bad_request)


def test_cancel_stops_between_steps(runner):
    cancel = CancelToken()
    started = threading.Event()

    def call(on_step, token):
        for i in range(1000):
            token.raise_if_cancelled()
            on_step(i, 1000)
            started.set()
            threading.Event().wait(0.001)
        return "finished"

    threading.Thread(target=lambda: (started.wait(5), cancel.cancel())).start()
    with pytest.raises(Cancelled, match="Stopped by the artist"):
        runner.run("long job", call, cancel)


def test_a_reader_that_goes_away_frees_the_gpu_within_one_step(runner):
    """A closed tab or a disconnected client closes the event stream: the job stops at its next step."""
    steps: list[int] = []

    def call(on_step, token):
        for i in range(1000):
            token.raise_if_cancelled()
            steps.append(i)
            on_step(i, 1000)
            threading.Event().wait(0.01)
        return "finished"

    stream = runner.stream("long job", call)
    assert next(stream).kind == "progress" and runner.hardware.busy == "long job"
    stream.close()  # what gradio does to a generator whose client has gone
    at_close = len(steps)
    with runner.hardware.gpu_job("next", timeout=5):  # the lock comes back, not after 1000 steps
        assert len(steps) <= at_close + 1


def test_newest_preview_wins(runner):
    gate = threading.Event()

    def call(on_step, cancel):
        for i in range(5):
            on_step(i + 1, 5, "", preview=f"preview {i + 1}")
        gate.set()
        return "done"

    stream = runner.stream("previews", call)
    first = next(stream)
    gate.wait(5)
    rest = list(stream)
    previews = [e.preview for e in [first, *rest] if e.preview is not None]
    assert previews[-1] == "preview 5" and len(previews) < 5 or previews == [f"preview {i}" for i in range(1, 6)]


def test_diffusers_callback_reports_and_interrupts():
    class Pipe:
        _interrupt = False

    seen, cancel = [], CancelToken()
    callback = diffusers_step_callback(lambda s, t, m="", p=None: seen.append((s, t, m)), cancel, total=4)
    pipe = Pipe()
    callback(pipe, 0, 999, {})
    assert seen == [(1, 4, "Denoising")] and not pipe._interrupt
    cancel.cancel()
    callback(pipe, 1, 998, {})
    assert pipe._interrupt


def test_tqdm_adapter_tracks_steps():
    with TqdmProgress(desc="test", disable=True) as bar:
        bar(3, 10, "three")
        assert (bar._bar.n, bar._bar.total) == (3, 10)


def test_work_without_the_gpu_does_not_take_the_lock(runner):
    with runner.hardware.gpu_job("a long generation"):
        result = runner.run("collect dataset", lambda on_step, cancel: runner.hardware.busy,
                            uses_gpu=False)
    assert result == "a long generation"  # ran while the GPU job held the lock


def test_gradio_progress_adapter_forwards_steps():
    from studio.progress import GradioProgress

    calls = []
    bar = GradioProgress(lambda value, desc=None: calls.append((value, desc)))
    bar(2, 8, "denoising")
    bar(0, 0)
    assert calls == [((2, 8), "denoising"), (None, None)]
