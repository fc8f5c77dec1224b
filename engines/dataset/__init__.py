"""Dataset collection: a clean, safe, captioned training set from image sites or a folder.

``collect(request, on_step, cancel)`` is the one entry point (engines/dataset/collector.py); the
request types live in ``engines.dataset.request``. Importing this package is cheap: requests, PIL,
numpy and huggingface_hub load only when a collection starts.
"""

from __future__ import annotations

from engines.dataset.request import (
    CollectRequest,
    NetworkSettings,
    QualityThresholds,
    SourceSpec,
    check,
)
from engines.dataset.sources import DEFAULT_HF_DATASET, SOURCES


def collect(*args, **kwargs):
    """See ``engines.dataset.collector.collect``."""
    from engines.dataset.collector import collect as _collect

    return _collect(*args, **kwargs)


__all__ = ["CollectRequest", "NetworkSettings", "QualityThresholds", "SourceSpec", "check", "collect",
           "DEFAULT_HF_DATASET", "SOURCES"]
