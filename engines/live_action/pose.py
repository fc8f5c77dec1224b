"""The pose estimator: transformers' ViTPose, in the pool, finding the character's 17 COCO body points.

ViTPose is top-down: it looks at one person's box, cut out of the picture at its 4:3 portrait input
(the box grown by a quarter, as in training), and returns one heatmap per keypoint. The box is the
character's, from its mask (photoreal.py), or the whole picture. Each heatmap's peak is the point,
its height the score (about 0.9 for a clear joint on a photo, under 0.3 for a guess).

The heatmaps are decoded here rather than by the processor's ``post_process_pose_estimation``: that
refines each peak with DARK (a Taylor step from the log-heatmap's Hessian), which assumes a Gaussian
peak. On drawings the heatmaps of unsure joints are flat or have two peaks, and there the step can
throw a point hundreds of pixels outside the box (as it does on a random model's heatmaps). Argmax
plus the classic quarter-pixel shift towards the higher neighbour (SimpleBaseline's decoding) cannot
leave the crop, and is off by a few image pixels at most (a heatmap pixel is ~15 px of a 768 px tall
character), about the width of an OpenPose stroke.

``render_openpose`` draws the result as the ControlNet's OpenPose picture (openpose_draw.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.hardware import MemoryPolicy
from engines.live_action.openpose_draw import OPENPOSE_POINTS, draw_openpose, openpose_points

# ViTPose-B with the simple decoder, trained on COCO: 90 M parameters (360 MB), Apache-2.0, under a
# second a picture on a CPU.
DEFAULT_POSE_MODEL = "usyd-community/vitpose-base-simple"
# One 256x192 crop: 192 tokens, heatmaps of 64x48; even ViTPose-H needs well under this.
POLICY = MemoryPolicy(working_bytes=128 * 2**20)
COCO_KEYPOINTS = ("nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
                  "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip",
                  "left knee", "right knee", "left ankle", "right ankle")
BOX_PADDING = 1.25  # what ViTPose's processor grows the box by before cutting the crop
# Fewer points than this and the pose ControlNet has little to hold on to: the summary says what to do.
FEW_POINTS = 6

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels


@dataclass(frozen=True)
class Pose:
    """COCO's 17 keypoints ``(x, y, score)`` in the pixels of a picture of ``size`` (width, height).

    A keypoint counts as found when its score is at least ``threshold``.
    """

    keypoints: tuple[tuple[float, float, float], ...]
    size: tuple[int, int]
    threshold: float = 0.3


def pool_name(ref: str) -> str:
    return f"pose:{ref}"


def register_pose_model(hardware: Any, store: Any, ref: str) -> str:
    """Register the pose estimator ``ref`` in the pool (not on the device yet); returns its pool name."""
    dtype = hardware.dtype("inference")
    return hardware.register_once(pool_name(ref), lambda: load_pose_model(store, ref, dtype), policy=POLICY,
                                  files=store.files_for(ref))


def load_pose_model(store: Any, ref: str, dtype: Any = None) -> dict[str, Any]:
    """``{"model", "processor"}`` for a ViTPose ``ref``, both read from its local folder."""
    from transformers import AutoImageProcessor, VitPoseForPoseEstimation

    folder = store.ensure_local(ref)
    config = Path(folder) / "config.json"
    if config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") != "vitpose":
        raise InvalidRequestError(f"'{ref}' is not a ViTPose model: choose one like {DEFAULT_POSE_MODEL}.")
    if not (Path(folder) / "preprocessor_config.json").is_file():
        raise InvalidRequestError(f"'{ref}' has no preprocessor_config.json next to its weights: put the "
                                  "model's whole folder there.")
    model = store.load_model(ref, VitPoseForPoseEstimation, torch_dtype=dtype)
    if model.config.num_labels < len(COCO_KEYPOINTS):  # whole-body models put COCO's 17 first
        raise InvalidRequestError(f"'{ref}' finds {model.config.num_labels} keypoints, not COCO's 17 body "
                                  f"points: choose a model like {DEFAULT_POSE_MODEL}.")
    processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return {"model": model.eval(), "processor": processor}


def estimate_pose(estimator: dict[str, Any], image: Any, box: Optional[Box] = None,
                  threshold: float = 0.3) -> Pose:
    """The 17 COCO keypoints of the one character inside ``box`` (default: the whole picture)."""
    import torch

    model, processor = estimator["model"], estimator["processor"]
    width, height = image.size
    x0, y0, x1, y1 = _checked_box(box, width, height)
    coco_box = [x0, y0, x1 - x0, y1 - y0]  # the processor takes COCO boxes: corner, width, height
    inputs = processor(image.convert("RGB"), boxes=[[coco_box]], return_tensors="pt")
    parameter = next(model.parameters())
    kwargs = {}
    if getattr(model.config.backbone_config, "num_experts", 1) > 1:
        # ViTPose++ picks its backbone's experts by dataset; 0 is COCO, whose 17 body points we draw.
        kwargs["dataset_index"] = torch.zeros(1, dtype=torch.long, device=parameter.device)
    pixels = inputs["pixel_values"].to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        heatmaps = model(pixel_values=pixels, **kwargs).heatmaps
    crop = crop_region(coco_box, (processor.size["height"], processor.size["width"]),
                       200.0 / getattr(processor, "normalize_factor", 200.0))
    points = []
    for x, y, score in decode_heatmaps(heatmaps[0, :17].float().cpu(), crop):
        # A joint guessed beyond the picture's edge cannot be drawn where the ControlNet would see it.
        inside = 0 <= x <= width - 1 and 0 <= y <= height - 1
        points.append((x, y, score if inside else 0.0))
    return Pose(tuple(points), (width, height), threshold)


def crop_region(coco_box: list[float], input_size: tuple[int, int], factor: float = 1.0) -> Box:
    """The part of the picture ViTPose's processor cuts for ``coco_box``: left, top, width, height.

    As its ``box_to_center_and_scale``: the box widened or heightened to the input's aspect ratio around
    its centre, then grown by ``BOX_PADDING``; ``factor`` is 200 / the processor's ``normalize_factor``.
    """
    left, top, box_width, box_height = coco_box
    input_height, input_width = input_size
    aspect = input_width / input_height
    if box_width > aspect * box_height:
        box_height = box_width / aspect
    elif box_width < aspect * box_height:
        box_width = box_height * aspect
    crop_width, crop_height = box_width * BOX_PADDING * factor, box_height * BOX_PADDING * factor
    centre_x, centre_y = left + coco_box[2] / 2, top + coco_box[3] / 2
    return (centre_x - crop_width / 2, centre_y - crop_height / 2, crop_width, crop_height)


def grid_to_image(grid_x: float, grid_y: float, grid_size: tuple[int, int], crop: Box) -> tuple[float, float]:
    """A position on a ``grid_size`` (height, width) grid spanning ``crop`` (the input or a heatmap), in image
    pixels; the grid's first and last pixels sit on the crop's edges, as in the processor's warp."""
    rows, columns = grid_size
    left, top, crop_width, crop_height = crop
    return (left + grid_x * crop_width / max(1, columns - 1), top + grid_y * crop_height / max(1, rows - 1))


def decode_heatmaps(heatmaps: Any, crop: Box) -> list[tuple[float, float, float]]:
    """``(x, y, score)`` in image pixels for each heatmap of a ``(K, rows, columns)`` tensor over ``crop``."""
    count, rows, columns = heatmaps.shape
    flat = heatmaps.reshape(count, -1)
    scores, indices = flat.max(dim=1)
    points = []
    for heatmap, score, index in zip(heatmaps, scores.tolist(), indices.tolist()):
        y, x = divmod(index, columns)
        # A quarter pixel towards the higher neighbour: the peak lies between the two best pixels.
        shift_x = float(heatmap[y, x + 1] - heatmap[y, x - 1]) if 0 < x < columns - 1 else 0.0
        shift_y = float(heatmap[y + 1, x] - heatmap[y - 1, x]) if 0 < y < rows - 1 else 0.0
        grid_x = x + 0.25 * ((shift_x > 0) - (shift_x < 0))
        grid_y = y + 0.25 * ((shift_y > 0) - (shift_y < 0))
        points.append((*grid_to_image(grid_x, grid_y, (rows, columns), crop), float(score)))
    return points


def render_openpose(pose: Pose, size: Optional[tuple[int, int]] = None) -> Any:
    """The pose as the OpenPose ControlNet's picture (PIL RGB) of ``size``, the pose's own by default."""
    size = tuple(size or pose.size)
    scale_x, scale_y = size[0] / pose.size[0], size[1] / pose.size[1]
    keypoints = [(x * scale_x, y * scale_y, score) for x, y, score in pose.keypoints]
    return draw_openpose(openpose_points(keypoints, pose.threshold), size)


def found_points(pose: Pose) -> int:
    """How many of OpenPose's 18 body points were found (the neck counts when both shoulders were)."""
    return sum(point is not None for point in openpose_points(pose.keypoints, pose.threshold))


def pose_summary(pose: Pose) -> str:
    """One line for the artist, e.g. "13 of 18 body points found"."""
    found = found_points(pose)
    text = f"{found} of {len(OPENPOSE_POINTS)} body points found"
    if found < FEW_POINTS:
        text += ": the pose ControlNet has little to follow; a ready pose map can be given instead"
    return text + "."


def _checked_box(box: Optional[Box], width: int, height: int) -> Box:
    if box is None:
        return (0.0, 0.0, float(width), float(height))
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise InvalidRequestError(
            f"The character's box {tuple(box)} leaves nothing of the {width}x{height} picture.")
    return (x0, y0, x1, y1)
