"""``build_model(config)``: the network a ``ModelConfig`` describes (Origin, or the plain baseline)."""

from __future__ import annotations

from typing import Any

from engines.origin.model.config import ModelConfig
from engines.origin.model.network import OriginModel, check_model_config


def build_model(config: ModelConfig) -> Any:
    """A freshly initialised network; raises ValueError (one sentence) for a config that cannot be built."""
    check_model_config(config)
    if config.architecture == "plain":
        from engines.origin.model.plain import PlainModel

        return PlainModel(config)
    return OriginModel(config)
