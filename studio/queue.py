"""The one GPU queue of the UI, and how long its line may grow."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# Every event that touches the GPU passes this concurrency group, so the UI runs one GPU job
# at a time in arrival order; the HardwareManager's lock then orders the UI against the CLI.
GPU_QUEUE = {"concurrency_id": "gpu", "concurrency_limit": 1}
BUSY = "The studio is busy, try again in a minute."
DEFAULT_LINE = 16  # GPU jobs that may wait behind the running one


def hold_the_line(blocks: Any, max_waiting: int) -> None:
    """Refuse a GPU job at the door when ``max_waiting`` already wait, instead of letting it wait forever.

    gradio's own ``queue(max_size=...)`` counts every event in every group (timers, the dataset
    collector, a training tab's refresh), so a busy GPU would also refuse a click that never waits
    for it; this counts the GPU line only. The refusal is gradio's queue-full answer (HTTP 503, the
    page's "busy" notice, gradio_client's QueueError) with this studio's sentence as its detail.
    Waiting visitors see their place: gradio sends each its rank in the GPU line.
    """
    from gradio import route_utils

    queue = blocks._queue
    push = queue.push

    async def admit(body: Any, request: Any, username: Any):
        if body.fn_index is not None:
            try:
                fn = route_utils.get_fn(blocks, None, body)
            except Exception:  # noqa: BLE001 - an unknown event is gradio's to refuse
                fn = None
            line = queue.event_queue_per_concurrency_id.get(GPU_QUEUE["concurrency_id"])
            if (fn is not None and fn.concurrency_id == GPU_QUEUE["concurrency_id"] and line is not None
                    and len(line.queue) >= max_waiting):
                log.warning("GPU line full (%d waiting): refused %s for %s", len(line.queue),
                            fn.api_name or fn.name, username or "a visitor")
                return False, BUSY, "queue_full"
        return await push(body=body, request=request, username=username)

    queue.push = admit
