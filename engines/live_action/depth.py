"""The depth estimator: a transformers depth model in the pool, making the map the depth ControlNet reads.

Any ``AutoModelForDepthEstimation`` works, by HF id or local folder: Depth Anything (V1/V2) and DPT
(Intel/dpt-hybrid-midas, the MiDaS model behind most of ControlNet 1.1's depth training maps). These
predict relative inverse depth (disparity): near is large. control_v11f1p_sd15_depth was trained on
MiDaS, LeReS and ZoeDepth maps normalised per picture, near white and far black, so the prediction is
brought to the picture's size and stretched to 0..255 per picture. Models that predict distance (metric
Depth Anything, ZoeDepth, GLPN: near is small) are inverted first, so every model gives the same map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engines.errors import InvalidRequestError
from engines.hardware import MemoryPolicy

# Depth Anything V2 Small: 25 M parameters (100 MB, seconds on a CPU), Apache-2.0 (the Base and Large
# V2 weights are CC-BY-NC), and taught by a teacher trained on synthetic renders, which holds up better
# on illustrations and flat colours than MiDaS/DPT, trained on photographs only.
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
# The DPT head fuses features up to half the input (518 px for Depth Anything, 384 for DPT) at 64 to
# 256 channels: ~100 MB for Small in fp16, a few hundred for Large or DPT-hybrid.
POLICY = MemoryPolicy(working_bytes=512 * 2**20)
# Model families whose output is a distance (near = small) rather than a disparity.
_DISTANCE_MODELS = ("zoedepth", "glpn")


def pool_name(ref: str) -> str:
    return f"depth:{ref}"


def register_depth_model(hardware: Any, store: Any, ref: str) -> str:
    """Register the depth estimator ``ref`` in the pool (not on the device yet); returns its pool name."""
    dtype = hardware.dtype("inference")
    return hardware.register_once(pool_name(ref), lambda: load_depth_model(store, ref, dtype), policy=POLICY,
                                  files=store.files_for(ref))


def load_depth_model(store: Any, ref: str, dtype: Any = None) -> dict[str, Any]:
    """``{"model", "processor"}`` for ``ref``, both read from its local folder (downloaded if need be)."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation
    from transformers.models.auto.modeling_auto import MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES

    folder = store.ensure_local(ref)
    config = Path(folder) / "config.json"
    kind = json.loads(config.read_text(encoding="utf-8")).get("model_type") if config.is_file() else None
    if kind is not None and kind not in MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES:
        raise InvalidRequestError(f"'{ref}' is a {kind} model, not a depth estimator: choose one like "
                                  f"{DEFAULT_DEPTH_MODEL}.")
    if not (Path(folder) / "preprocessor_config.json").is_file():
        raise InvalidRequestError(f"'{ref}' has no preprocessor_config.json next to its weights: put the "
                                  "model's whole folder there.")
    model = store.load_model(ref, AutoModelForDepthEstimation, torch_dtype=dtype)
    processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return {"model": model.eval(), "processor": processor}


def estimate_depth(estimator: dict[str, Any], image: Any) -> Any:
    """The depth map of an RGB picture: a PIL "L" image of the same size, near white, far black."""
    import torch

    model, processor = estimator["model"], estimator["processor"]
    parameter = next(model.parameters())
    inputs = processor(images=image.convert("RGB"), return_tensors="pt")
    pixels = inputs["pixel_values"].to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        predicted = model(pixel_values=pixels).predicted_depth
    width, height = image.size
    grid = predicted.float().reshape(1, 1, *predicted.shape[-2:])
    predicted = torch.nn.functional.interpolate(grid, (height, width), mode="bicubic", align_corners=False)
    predicted = predicted[0, 0]
    if _predicts_distance(model.config):
        predicted = 1.0 / predicted.clamp(min=1e-3)
    return depth_to_image(predicted)


def depth_to_image(disparity: Any) -> Any:
    """A disparity tensor (near = large) stretched to 0..255 as a PIL "L" image; a flat one is black.

    Per-picture min-max is how the ControlNet's training maps were made; a flat prediction carries
    no shape, and black (everything far) is the control picture that steers least.
    """
    import torch
    from PIL import Image

    disparity = disparity.detach().float().cpu()
    low, high = float(disparity.min()), float(disparity.max())
    # Relative: resampling a flat map leaves float rounding (1e-7 of its value), which is no shape.
    if not high - low > 1e-4 * max(abs(high), abs(low), 1e-6):
        return Image.new("L", (disparity.shape[-1], disparity.shape[-2]), 0)
    scaled = ((disparity - low) / (high - low) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(scaled.numpy())  # 2-D uint8: mode "L"


def _predicts_distance(config: Any) -> bool:
    return config.model_type in _DISTANCE_MODELS or getattr(config, "depth_estimation_type", "") == "metric"
