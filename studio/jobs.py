"""Runs one engine call under the GPU lock in a worker thread and streams its events back.

Fooocus' async worker, reduced: progress, preview, result, error and done arrive on a queue;
when previews pile up faster than the browser takes them, the newest wins. Nothing here
imports gradio, so the runner is tested without a browser.
"""

from __future__ import annotations

import logging
import queue
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from engines.errors import Cancelled, StudioError, is_torch_oom
from engines.progress import CancelToken, OnStep

log = logging.getLogger(__name__)

EngineCall = Callable[[OnStep, CancelToken], Any]


@dataclass(frozen=True)
class JobEvent:
    kind: str  # "progress", "result", "error" or "cancelled"
    step: int = 0
    total: int = 0
    message: str = ""
    preview: Any = None
    result: Any = None
    error: str = ""


def describe_error(error: BaseException) -> str:
    """One sentence for the artist; the traceback goes to the log, not to the UI."""
    if isinstance(error, StudioError):
        return str(error)
    if is_torch_oom(error):
        return "The GPU ran out of memory; lower the resolution or batch size, or unload other models."
    return f"Something went wrong ({type(error).__name__}: {error}); the details are in the log."


class JobRunner:
    def __init__(self, hardware: Any) -> None:
        self.hardware = hardware

    def stream(self, job: str, call: EngineCall, cancel: Optional[CancelToken] = None,
               *, timeout: Optional[float] = None, uses_gpu: bool = True) -> Iterator[JobEvent]:
        """Run ``call(on_step, cancel)`` (under the GPU lock if it ``uses_gpu``); yield events until it ends.

        Work that never touches the GPU (collecting a dataset) passes ``uses_gpu=False`` so an
        hour of downloading does not block generation.
        """
        cancel = cancel or CancelToken()
        events: "queue.Queue[JobEvent]" = queue.Queue()
        latest_preview: list[Any] = [None]
        lock = threading.Lock()

        def on_step(step: int, total: int, message: str = "", preview: Any = None) -> None:
            if preview is not None:
                with lock:
                    latest_preview[0] = preview
            events.put(JobEvent("progress", step, total, message))

        def work() -> None:
            try:
                with self.hardware.gpu_job(job, timeout=timeout) if uses_gpu else nullcontext():
                    cancel.raise_if_cancelled()
                    result = call(on_step, cancel)
                events.put(JobEvent("result", result=result))
            except Cancelled as error:
                events.put(JobEvent("cancelled", message=str(error)))
            except BaseException as error:  # noqa: BLE001 - every failure becomes a sentence
                log.exception("job %s failed", job)
                events.put(JobEvent("error", error=describe_error(error)))

        worker = threading.Thread(target=work, name=f"job-{job}", daemon=True)
        worker.start()
        finished = False
        try:
            while True:
                event = events.get()
                if event.kind == "progress":
                    # Drop stale progress so a slow browser never lags behind the engine.
                    while not events.empty():
                        nxt = events.queue[0]
                        if nxt.kind != "progress":
                            break
                        event = events.get()
                    with lock:
                        preview, latest_preview[0] = latest_preview[0], None
                    if preview is not None:
                        event = JobEvent("progress", event.step, event.total, event.message, preview)
                finished = event.kind != "progress"
                yield event
                if finished:
                    worker.join()
                    return
        finally:
            if not finished:
                # Nobody reads the events any more (the tab was closed, the client went away, gradio
                # cancelled the event): the engine stops at its next step and the GPU lock is freed.
                cancel.cancel()

    def updates(self, job: str, call: EngineCall, shape: Callable[[Any], Any] = lambda result: result, *,
                uses_gpu: bool = True) -> Iterator[Any]:
        """An API endpoint's job: ``{"progress", "total", "message"}`` while it runs, then ``shape(result)``.

        A generator, so that gradio closes it when the API client cancels or goes away; ``stream`` then
        cancels the job, which stops at its next step and frees the GPU. (A plain function would run to its
        end in gradio's thread whatever the client did.) gradio_client's ``predict`` returns the last value.
        """
        for event in self.stream(job, call, uses_gpu=uses_gpu):
            if event.kind == "progress":
                yield {"progress": event.step, "total": event.total, "message": event.message}
            elif event.kind == "result":
                yield shape(event.result)
            elif event.kind == "cancelled":
                raise Cancelled(event.message)
            else:
                raise StudioError(event.error)

    def run(self, job: str, call: EngineCall, cancel: Optional[CancelToken] = None,
            on_event: Callable[[JobEvent], None] = lambda e: None, *, uses_gpu: bool = True) -> Any:
        """Blocking form: returns the result or raises StudioError with the sentence."""
        for event in self.stream(job, call, cancel, uses_gpu=uses_gpu):
            on_event(event)
            if event.kind == "result":
                return event.result
            if event.kind == "cancelled":
                raise Cancelled(event.message)
            if event.kind == "error":
                raise StudioError(event.error)
        raise StudioError(f"Job '{job}' ended without a result.")  # pragma: no cover
