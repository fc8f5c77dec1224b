"""Live-Action's control maps from pictures: the depth and pose estimators on tiny random-weight models saved
in the real formats and loaded through the pool, the depth normalisation and the heatmap decoding on crafted
outputs, the OpenPose drawing on hand-made poses, and the tiny ControlNet builders other tests rely on."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engines.errors import InvalidRequestError, ModelNotFoundError
from engines.live_action.depth import estimate_depth, register_depth_model
from engines.live_action.openpose_draw import COLOURS
from engines.live_action.pose import (
    Pose,
    crop_region,
    decode_heatmaps,
    estimate_pose,
    found_points,
    grid_to_image,
    pose_summary,
    register_pose_model,
    render_openpose,
)
from engines.models import ModelStore
from live_action_models import (
    save_tiny_controlnet,
    save_tiny_controlnet_single_file,
    save_tiny_depth_model,
    save_tiny_pose_model,
)
from tiny_models import cpu_engines


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("live-action-preprocess")
    save_tiny_depth_model(data / "models" / "depth-est")
    save_tiny_pose_model(data / "models" / "pose-est")
    return data


@pytest.fixture(scope="module")
def ctx(data_dir: Path):
    return cpu_engines(data_dir)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


# -- the estimators in the pool -----------------------------------------------------------------------------


def test_estimators_register_once_and_come_back_from_the_pool(ctx):
    hardware, store = ctx
    depth = register_depth_model(hardware, store, "depth-est")
    pose = register_pose_model(hardware, store, "pose-est")
    assert (depth, pose) == ("depth:depth-est", "pose:pose-est")
    assert {depth, pose} <= {record.name for record in hardware.pool.snapshot()}
    with hardware.use(depth) as first:
        assert type(first["model"]).__name__ == "DepthAnythingForDepthEstimation"
        assert type(first["processor"]).__name__.startswith("DPTImageProcessor")
    assert register_depth_model(hardware, store, "depth-est") == depth  # already there: nothing reloads
    with hardware.use(depth) as again, hardware.use(pose) as estimator:
        assert again is first
        assert type(estimator["model"]).__name__ == "VitPoseForPoseEstimation"


def test_missing_or_wrong_models_are_one_sentence_before_anything_loads(ctx):
    hardware, store = ctx
    for register in (register_depth_model, register_pose_model):
        with pytest.raises(ModelNotFoundError) as error:
            register(hardware, store, "someone/not-downloaded")
        message = str(error.value)
        assert "not-downloaded" in message and "\n" not in message and message.count(". ") == 0
        assert not hardware.is_registered(f"{'depth' if register is register_depth_model else 'pose'}:"
                                          "someone/not-downloaded")
    with pytest.raises(InvalidRequestError, match="not a ViTPose model"):
        register_pose_model(hardware, store, "depth-est")
    with pytest.raises(InvalidRequestError, match="not a depth estimator"):
        register_depth_model(hardware, store, "pose-est")


# -- depth ---------------------------------------------------------------------------------------------------


def test_depth_map_has_the_pictures_size_spans_0_to_255_and_repeats(ctx):
    hardware, store = ctx
    name = register_depth_model(hardware, store, "depth-est")
    picture = noise(45, 61)
    with hardware.use(name) as estimator:
        first, second = estimate_depth(estimator, picture), estimate_depth(estimator, picture)
    assert first.mode == "L" and first.size == (45, 61)
    values = np.asarray(first)
    assert values.min() == 0 and values.max() == 255
    assert np.array_equal(values, np.asarray(second))


class _FixedDepth(torch.nn.Module):
    """Stands in for a depth model: ``prediction`` whatever the input (a small grid, as real heads give)."""

    def __init__(self, prediction: torch.Tensor, **config) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.prediction = prediction
        defaults = {"model_type": "depth_anything", "depth_estimation_type": "relative"}
        self.config = SimpleNamespace(**{**defaults, **config})

    def forward(self, pixel_values):
        return SimpleNamespace(predicted_depth=self.prediction[None] + 0 * self.weight)


def _fixed(prediction: torch.Tensor, **config) -> dict:
    return {"model": _FixedDepth(prediction, **config),
            "processor": lambda images, return_tensors: {"pixel_values": torch.zeros(1, 3, 8, 8)}}


def test_depth_near_is_bright_for_disparity_and_for_distance_models():
    rows = torch.linspace(1.0, 9.0, 8)[:, None].expand(8, 6)  # grows downwards
    disparity = np.asarray(estimate_depth(_fixed(rows), noise(30, 40))).astype(int)
    # Disparity is large where things are near: the bottom is near, so white, and it brightens steadily.
    assert disparity.shape == (40, 30)
    assert disparity[-1].min() == 255 and disparity[0].max() == 0
    assert (np.diff(disparity.mean(axis=1)) >= 0).all()
    distance = np.asarray(estimate_depth(_fixed(rows, depth_estimation_type="metric"), noise(30, 40)))
    assert distance[0].min() == 255 and distance[-1].max() == 0  # metres: the top is nearest
    flat = estimate_depth(_fixed(torch.full((8, 6), 3.0)), noise(30, 40))
    assert flat.size == (30, 40) and np.asarray(flat).max() == 0


# -- pose estimation -----------------------------------------------------------------------------------------


def test_pose_points_are_image_pixels_inside_the_crop_around_the_box(ctx):
    hardware, store = ctx
    name = register_pose_model(hardware, store, "pose-est")
    picture, box = noise(80, 120, seed=3), (20, 30, 60, 100)
    with hardware.use(name) as estimator:
        pose = estimate_pose(estimator, picture, box=box, threshold=0.0)
        again = estimate_pose(estimator, picture, box=box, threshold=0.0)
        whole = estimate_pose(estimator, picture)
    assert pose == again and pose.size == (80, 120) and pose.threshold == 0.0 and whole.threshold == 0.3
    assert len(pose.keypoints) == len(whole.keypoints) == 17
    left, top, width, height = crop_region([20, 30, 40, 70], (32, 24))
    assert left <= 20 and top <= 30 and left + width >= 60 and top + height >= 100
    for x, y, score in pose.keypoints:
        assert left - 1e-6 <= x <= left + width + 1e-6 and top - 1e-6 <= y <= top + height + 1e-6
        assert score == 0.0 or (0 <= x <= 79 and 0 <= y <= 119)
    with pytest.raises(InvalidRequestError, match="leaves nothing"):
        estimate_pose({"model": None, "processor": None}, picture, box=(90, 0, 120, 50))


def test_crop_mapping_matches_what_the_processor_cuts():
    """A white dot through ViTPose's own preprocessing (its real 256x192 input) comes back to where it was."""
    from transformers import VitPoseImageProcessor

    processor = VitPoseImageProcessor()
    picture = Image.new("RGB", (200, 300))
    picture.paste((255, 255, 255), (118, 88, 123, 93))  # centre (120, 90)
    box = [40, 30, 120, 240]
    crop = processor(picture, boxes=[[box]], return_tensors="pt")["pixel_values"][0, 0]
    weights = (crop - crop.min()).clamp(min=0)
    rows, columns = torch.meshgrid(torch.arange(crop.shape[0]), torch.arange(crop.shape[1]), indexing="ij")
    grid_x = float((weights * columns).sum() / weights.sum())
    grid_y = float((weights * rows).sum() / weights.sum())
    x, y = grid_to_image(grid_x, grid_y, tuple(crop.shape), crop_region(box, (256, 192)))
    assert abs(x - 120) < 1.0 and abs(y - 90) < 1.0


def test_heatmap_peaks_map_through_the_crop_with_a_quarter_pixel_shift():
    heatmaps = torch.zeros(3, 16, 12)
    heatmaps[0, 0, 0] = 0.9  # the crop's top-left corner
    heatmaps[1, 15, 11] = 0.8  # its bottom-right corner
    # Peak at column 4, row 5; its right and lower neighbours are higher than the left and upper ones.
    heatmaps[2, 5, 4], heatmaps[2, 5, 5], heatmaps[2, 6, 4] = 0.7, 0.3, 0.2
    crop = (10.0, 20.0, 33.0, 45.0)
    (x0, y0, s0), (x1, y1, s1), (x2, y2, s2) = decode_heatmaps(heatmaps, crop)
    assert (x0, y0) == pytest.approx((10, 20)) and (x1, y1) == pytest.approx((43, 65))
    assert (x2, y2) == pytest.approx((10 + 4.25 * 3, 20 + 5.25 * 3))
    assert (s0, s1, s2) == pytest.approx((0.9, 0.8, 0.7))


class _FixedHeatmaps(torch.nn.Module):
    def __init__(self, heatmaps: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.heatmaps = heatmaps
        self.config = SimpleNamespace(backbone_config=SimpleNamespace(num_experts=1))

    def forward(self, pixel_values):
        return SimpleNamespace(heatmaps=self.heatmaps[None])


def test_points_guessed_beyond_the_picture_are_not_found():
    from transformers import VitPoseImageProcessor

    heatmaps = torch.zeros(17, 16, 12)
    heatmaps[:, 8, 6] = 0.9  # the middle
    heatmaps[0, 0, 0] = 1.0  # the padded crop's corner, outside a whole-picture box
    processor = VitPoseImageProcessor(size={"height": 32, "width": 24})
    estimator = {"model": _FixedHeatmaps(heatmaps), "processor": processor}
    pose = estimate_pose(estimator, noise(48, 64))
    assert pose.keypoints[0][2] == 0.0
    assert all(score == pytest.approx(0.9) for _, _, score in pose.keypoints[1:])
    assert 20 < pose.keypoints[5][0] < 28 and 30 < pose.keypoints[5][1] < 38


# -- the OpenPose picture ------------------------------------------------------------------------------------

# A standing figure on 512x512, facing us (its right on the picture's left), in COCO's order: nose,
# l/r eye, l/r ear, then l/r shoulder, elbow, wrist, hip, knee, ankle.
FIGURE = ((256, 80), (270, 70), (242, 70), (285, 75), (227, 75), (300, 150), (200, 150), (310, 230),
          (190, 230), (315, 300), (185, 300), (280, 300), (230, 300), (285, 390), (225, 390), (290, 470),
          (220, 470))


def hand_made(scores: dict[int, float] = {}, size: tuple[int, int] = (512, 512)) -> Pose:
    return Pose(tuple((float(x), float(y), scores.get(i, 0.9)) for i, (x, y) in enumerate(FIGURE)), size)


def dimmed(index: int) -> tuple[int, ...]:
    return tuple(int(c * 0.6) for c in COLOURS[index])


def test_openpose_picture_has_the_neck_limb_colours_and_black_elsewhere():
    picture = render_openpose(hand_made(), (512, 512))
    assert picture.mode == "RGB" and picture.size == (512, 512)
    assert picture.getpixel((250, 150)) == COLOURS[1]  # the neck, between the shoulders
    assert picture.getpixel((225, 150)) == dimmed(0)  # neck -> right shoulder (the picture's left)
    assert picture.getpixel((275, 150)) == dimmed(1)  # neck -> left shoulder
    assert picture.getpixel((195, 190)) == dimmed(2)  # right upper arm
    assert picture.getpixel((305, 190)) == dimmed(4)  # left upper arm
    assert picture.getpixel((227, 345)) == dimmed(7) and picture.getpixel((222, 430)) == dimmed(8)  # r. leg
    assert picture.getpixel((200, 150)) == COLOURS[2] and picture.getpixel((290, 470)) == COLOURS[13]
    for corner in ((5, 5), (506, 506), (100, 400), (400, 100)):
        assert picture.getpixel(corner) == (0, 0, 0)
    assert (np.asarray(picture).sum(axis=2) > 0).mean() < 0.1


def test_limbs_and_points_under_the_threshold_are_not_drawn():
    pose = hand_made({7: 0.1})  # the left elbow
    picture = render_openpose(pose, (512, 512))
    assert picture.getpixel((305, 190)) == (0, 0, 0) and picture.getpixel((310, 230)) == (0, 0, 0)
    assert picture.getpixel((312, 265)) == (0, 0, 0)  # elbow -> wrist needs the elbow too
    assert picture.getpixel((300, 150)) == COLOURS[5]  # the shoulder itself still is
    no_neck = render_openpose(hand_made({6: 0.2}), (512, 512))  # one shoulder gone: no neck
    assert no_neck.getpixel((250, 150)) == (0, 0, 0) and no_neck.getpixel((256, 115)) == (0, 0, 0)


def test_openpose_scales_the_pose_and_the_strokes_with_the_picture():
    small = render_openpose(hand_made(), (256, 256))
    assert small.getpixel((125, 75)) == COLOURS[1]
    large = render_openpose(Pose(tuple((2 * x, 2 * y, s) for x, y, s in hand_made().keypoints), (1024, 1024)))
    # About 6 px beside the right upper arm's middle: inside a 1024 px stroke (8 px from the axis to the
    # edge), outside a 512 px one (4 px), whose stroke still covers 3 px off the axis.
    assert large.getpixel((390 + 6, 380)) == dimmed(2) and large.getpixel((390 + 10, 380)) == (0, 0, 0)
    normal = render_openpose(hand_made())
    assert normal.getpixel((195 - 3, 190)) == dimmed(2) and normal.getpixel((195 - 6, 190)) == (0, 0, 0)


def test_summary_counts_openpose_points():
    assert found_points(hand_made()) == 18 and pose_summary(hand_made()) == "18 of 18 body points found."
    five_gone = hand_made({1: 0, 2: 0, 3: 0, 4: 0, 16: 0})
    assert pose_summary(five_gone) == "13 of 18 body points found."
    assert found_points(hand_made({5: 0})) == 16  # a shoulder and the neck
    assert "ready pose map" in pose_summary(hand_made({i: 0 for i in range(17)}))


# -- the tiny ControlNet builders ----------------------------------------------------------------------------


def test_tiny_controlnet_folder_and_single_file_hold_the_same_weights_and_steer(tmp_path: Path):
    from diffusers import ControlNetModel

    store = ModelStore(tmp_path, offline=True)
    folder = save_tiny_controlnet(tmp_path / "cn", seed=1)
    single = save_tiny_controlnet_single_file(tmp_path / "cn.safetensors", seed=1)
    net = store.load_model("cn", ControlNetModel)
    from_file = store.load_model(str(single), ControlNetModel, config=str(folder))
    assert list(net.config.conditioning_embedding_out_channels) == [16, 32]  # the tiny VAE halves once
    assert all(torch.equal(value, from_file.state_dict()[key]) for key, value in net.state_dict().items())
    assert net.controlnet_mid_block.weight.abs().sum() > 0
    generator = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 4, 16, 16, generator=generator), torch.randn(1, 5, 16, generator=generator)
    with torch.no_grad():
        dark = net(latents, 10, text, controlnet_cond=torch.zeros(1, 3, 32, 32), return_dict=False)[1]
        light = net(latents, 10, text, controlnet_cond=torch.ones(1, 3, 32, 32), return_dict=False)[1]
    assert (dark - light).abs().max() > 1e-3
