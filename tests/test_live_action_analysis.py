"""Live-Action's pure image maths, checked by hand: the background kinds and their masks, restoring them,
CIELAB and the colour transfer, and every number of the realism report. No models; it runs in seconds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engines.live_action.background import (NEUTRAL, Background, analyse_background, flatten, otsu_threshold,
                                            restore)
from engines.live_action.colour import lab_to_rgb, rgb_to_lab, transfer_colour
from engines.live_action.metrics import grey_entropy, laplacian, realism_report

W, H = 96, 128


def figure(background: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    """A drawn 'character': a red body, a skin head with two black eyes (holes a mask must fill)."""
    image = Image.new(mode, (W, H), background)
    draw = ImageDraw.Draw(image)
    extra = (255,) if mode == "RGBA" else ()
    draw.rectangle((29, 45, 67, 115), fill=(200, 60, 50) + extra)
    draw.ellipse((34, 10, 62, 45), fill=(240, 200, 170) + extra)
    draw.rectangle((40, 24, 42, 27), fill=(0, 0, 0) + extra)
    draw.rectangle((54, 24, 56, 27), fill=(0, 0, 0) + extra)
    return image


def figure_mask() -> np.ndarray:
    return np.asarray(figure((0, 0, 0, 0), "RGBA").getchannel("A")) > 0


def grey(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=2), "RGB")


def texture(seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """A busy, in-gamut RGB picture."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(128, 30, size + (3,)), 0, 255).astype(np.uint8)


def mask_box(top: int = 20, left: int = 20, bottom: int = 100, right: int = 76) -> np.ndarray:
    mask = np.zeros((H, W), np.float32)
    mask[top:bottom, left:right] = 1.0
    return mask


# --- CIELAB -------------------------------------------------------------------------------------------------


def test_lab_known_values_and_round_trip() -> None:
    assert rgb_to_lab(np.array([255, 255, 255], np.uint8)) == pytest.approx([100.0, 0.0, 0.0], abs=1e-6)
    assert rgb_to_lab(np.array([0, 0, 0], np.uint8)) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert rgb_to_lab(np.array([255, 0, 0], np.uint8)) == pytest.approx([53.24, 80.09, 67.20], abs=0.01)
    assert rgb_to_lab(np.array([1.0, 0.0, 0.0])) == pytest.approx([53.24, 80.09, 67.20], abs=0.01)  # 0..1
    rng = np.random.default_rng(0)
    pixels = np.concatenate([rng.integers(0, 256, (20000, 3)), np.repeat(np.arange(256)[:, None], 3, 1)])
    pixels = pixels.astype(np.uint8)
    assert np.abs(lab_to_rgb(rgb_to_lab(pixels)).astype(int) - pixels).max() < 1


# --- the realism report -------------------------------------------------------------------------------------


def test_identical_pictures_score_perfectly() -> None:
    picture = Image.fromarray(texture(1))
    report = realism_report(picture, picture.copy(), mask_box())
    assert report.fidelity == pytest.approx(1.0) and report.variance_ratio == pytest.approx(1.0)
    assert report.edge_correlation == pytest.approx(1.0)
    assert report.colour_drift == pytest.approx(0.0, abs=1e-9) and report.colour_score == pytest.approx(1.0)
    assert report.entropy_ratio == pytest.approx(1.0) and report.colour_score_before_correction is None
    assert report.mask_coverage == pytest.approx(80 * 56 / (W * H))
    assert report.source_moments == report.result_moments


def test_a_step_edge_twice_as_strong_by_hand() -> None:
    """Halves of grey 100 | 140 against 80 | 160: every Laplacian doubles, so its variance is 4x (ratio 1/4)
    and its magnitude correlates perfectly; two equally common grey levels are exactly 1 bit each."""
    src, out = np.full((H, W), 100), np.full((H, W), 80)
    src[:, W // 2:], out[:, W // 2:] = 140, 160
    report = realism_report(grey(src), grey(out), np.ones((H, W), np.float32))
    assert report.variance_ratio == pytest.approx(0.25, abs=1e-6)
    assert report.edge_correlation == pytest.approx(1.0, abs=1e-6)
    assert report.fidelity == pytest.approx(0.25, abs=1e-6)
    assert report.source_entropy == pytest.approx(1.0) and report.result_entropy == pytest.approx(1.0)
    assert report.entropy_ratio == pytest.approx(1.0)
    assert grey_entropy(np.arange(256.0)) == pytest.approx(8.0)  # 256 equally common levels: 8 bits
    # Only the result is flat: the texture was lost (ratio 0); only the source is flat: H(out) + 1.
    assert realism_report(grey(src), grey(np.full((H, W), 120)), np.ones((H, W))).entropy_ratio == 0.0
    assert realism_report(grey(np.full((H, W), 120)), grey(src), np.ones((H, W))).entropy_ratio == 2.0


def test_the_laplacian_is_scipys() -> None:
    from scipy.ndimage import laplace

    picture = texture(12)[..., 0].astype(np.float32)
    assert np.allclose(laplacian(picture), laplace(picture), atol=1e-3)


def test_noise_with_the_right_variance_is_not_fidelity() -> None:
    source, noise = Image.fromarray(texture(2)), Image.fromarray(texture(3))
    report = realism_report(source, noise, mask_box())
    assert report.variance_ratio > 0.9  # the same amount of "edges"...
    assert report.fidelity < 0.1  # ...in none of the same places


def test_a_shift_of_ten_in_lightness_drifts_by_ten() -> None:
    rng = np.random.default_rng(4)
    lab = np.stack([rng.uniform(30, 60, (H, W)), rng.uniform(-10, 10, (H, W)), rng.uniform(-10, 10, (H, W))],
                   axis=-1)
    source = lab_to_rgb(lab)
    shifted = lab_to_rgb(rgb_to_lab(source) + [10.0, 0.0, 0.0])
    report = realism_report(Image.fromarray(source), Image.fromarray(shifted), np.ones((H, W)))
    assert report.colour_drift == pytest.approx(10.0, abs=0.3)
    assert report.colour_score == pytest.approx(1 / 1.1, abs=0.003)
    lightness = report.result_moments["L"]["mean"] - report.source_moments["L"]["mean"]
    assert lightness == pytest.approx(10.0, abs=0.3)


def test_nothing_outside_the_mask_changes_the_report() -> None:
    source, result = texture(5), texture(6)
    mask = mask_box()
    changed = result.copy()
    changed[mask < 0.5] = 255 - changed[mask < 0.5]  # every outside pixel, the ones touching the mask too
    one = realism_report(Image.fromarray(source), Image.fromarray(result), mask)
    two = realism_report(Image.fromarray(source), Image.fromarray(changed), mask)
    assert one.as_dict() == two.as_dict()


def test_report_dict_summary_and_another_size() -> None:
    source = figure((40, 80, 120))
    result = source.resize((W * 2, H * 2), Image.Resampling.LANCZOS)  # brought back to the source's size
    report = realism_report(source, result, np.ones((H * 2, W * 2)), before_correction=result)
    assert report.fidelity > 0.5
    assert report.colour_score_before_correction == pytest.approx(report.colour_score)
    data = report.as_dict()
    assert set(data) == {"fidelity", "variance_ratio", "edge_correlation", "colour_drift", "colour_score",
                         "colour_score_before_correction", "colour_drift_before_correction", "entropy_ratio",
                         "source_entropy", "result_entropy", "source_moments", "result_moments",
                         "mask_coverage"}
    assert all(type(v) is float for k, v in data.items() if not k.endswith("moments"))
    assert set(data["source_moments"]) == {"L", "a", "b"} and set(data["source_moments"]["L"]) == {
        "mean", "std", "skew"}
    line = report.summary()
    assert "\n" not in line and line.startswith("Structure kept ") and "before colour correction" in line


# --- the background -----------------------------------------------------------------------------------------


def test_flatten() -> None:
    rgb, alpha = flatten(figure((0, 0, 0, 0), "RGBA"))
    assert rgb.mode == "RGB" and alpha.dtype == np.float32 and alpha.shape == (H, W)
    assert rgb.getpixel((0, 0)) == NEUTRAL and rgb.getpixel((48, 80)) == (200, 60, 50)
    opaque, none = flatten(figure((0, 0, 0, 255), "RGBA"))  # an alpha that is opaque everywhere: plain RGB
    assert none is None and opaque.mode == "RGB"
    assert flatten(figure((10, 20, 30)))[1] is None
    palette = figure((0, 0, 0)).convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))  # the black index made transparent
    rgb, alpha = flatten(palette)
    assert alpha is not None and alpha[0, 0] == 0.0 and alpha[80, 48] == 1.0
    assert rgb.getpixel((0, 0)) == NEUTRAL


def test_a_transparent_background() -> None:
    rgb, alpha = flatten(figure((0, 0, 0, 0), "RGBA"))
    background = analyse_background(rgb, alpha)
    assert background.kind == "transparent" and np.array_equal(background.mask, alpha)
    assert background.coverage == pytest.approx(figure_mask().mean()) and background.description
    result = Image.fromarray(texture(8))
    restored = restore(result, background, rgb)
    assert restored.mode == "RGBA" and np.array_equal(np.asarray(restored)[..., :3], np.asarray(result))
    assert np.array_equal(np.asarray(restored.getchannel("A")), (alpha * 255).astype(np.uint8))
    bigger = restore(result.resize((W * 2, H * 2)), background, rgb)  # a result at another size
    assert bigger.getchannel("A").getpixel((0, 0)) == 0 and bigger.getchannel("A").getpixel((96, 160)) == 255


def test_a_black_background_stays_black() -> None:
    drawing = figure((0, 0, 0))
    background = analyse_background(drawing, None)
    assert background.kind == "black" and background.alpha is None
    inside = figure_mask()
    assert (background.mask[inside] > 0.5).mean() == 1.0  # the whole figure, its black eyes too
    assert background.mask[:10, :10].max() == 0.0 and background.mask[-10:, -10:].max() == 0.0
    assert abs((background.mask > 0.5).mean() - inside.mean()) < 0.01
    hazy = Image.fromarray(np.clip(texture(9).astype(int) + 40, 0, 255).astype(np.uint8))  # haze all over
    restored = np.asarray(restore(hazy, background, drawing))
    assert restored[:10, :10].max() == 0 and restored[-10:, -10:].max() == 0  # the corners stay pure black
    core = background.mask > 0.999
    assert np.array_equal(restored[core], np.asarray(hazy)[core])  # the character is the result's


def test_dark_hair_on_black_is_reached_with_the_depth_map() -> None:
    drawing = figure((0, 0, 0))
    ImageDraw.Draw(drawing).rectangle((34, 4, 62, 12), fill=(12, 12, 14))  # black hair on top of the head
    depth = Image.new("L", (W, H), 10)
    ImageDraw.Draw(depth).rectangle((28, 3, 68, 116), fill=220)
    assert analyse_background(drawing, None).mask[7, 48] < 0.5  # by luma alone it is background
    assert analyse_background(drawing, None, depth).mask[7, 48] > 0.5
    assert analyse_background(drawing, None, depth).mask[:4, :4].max() == 0.0


def test_a_scene_with_and_without_depth() -> None:
    rng = np.random.default_rng(10)
    scene = np.zeros((H, W, 3), np.float64)
    scene[..., 0] = np.linspace(40, 220, W)[None, :]
    scene[..., 1] = np.linspace(200, 90, H)[:, None]
    scene[..., 2] = 150
    scene = np.clip(scene + rng.normal(0, 12, scene.shape), 0, 255).astype(np.uint8)
    picture = Image.fromarray(scene)
    plain = analyse_background(picture, None)
    assert plain.kind == "scene" and plain.mask.min() == 1.0
    assert restore(picture, plain, picture) is picture  # a scene is kept as it is
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 64) ** 2 + (xx - 48) ** 2 <= 30 ** 2
    depth = np.where(disc, 200.0, 40.0) + rng.normal(0, 8, (H, W))  # near is bright
    found = analyse_background(picture, None, Image.fromarray(np.clip(depth, 0, 255).astype(np.uint8)))
    assert found.kind == "scene"
    hard = found.mask > 0.5
    assert (hard & disc).sum() / (hard | disc).sum() > 0.95
    flat = analyse_background(picture, None, np.full((H, W), 7.0))  # a flat depth map: the whole frame
    assert flat.mask.min() == 1.0


def test_otsu_splits_two_groups() -> None:
    levels = np.concatenate([np.full(500, 40), np.full(300, 41), np.full(400, 200)]).astype(np.uint8)
    assert 41 <= otsu_threshold(levels) < 200


def test_background_is_a_frozen_dataclass() -> None:
    import dataclasses

    background = Background("black", np.ones((2, 2), np.float32), None, "x")
    assert dataclasses.replace(background, alpha=None).kind == "black" and background.coverage == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        background.kind = "scene"  # type: ignore[misc]


# --- the colour transfer ------------------------------------------------------------------------------------


def shifted_pair() -> tuple[Image.Image, Image.Image, np.ndarray]:
    rng = np.random.default_rng(11)
    lab = np.stack([rng.normal(55, 8, (H, W)), rng.normal(15, 6, (H, W)), rng.normal(-10, 5, (H, W))], -1)
    source = lab_to_rgb(lab)
    moved = rgb_to_lab(source)
    moved = (moved - moved.mean((0, 1))) * [1.4, 0.6, 1.2] + [45, 25, 5]  # SD's drift: new means and spreads
    return Image.fromarray(source), Image.fromarray(lab_to_rgb(moved)), mask_box()


def masked_lab(image: Image.Image, mask: np.ndarray) -> np.ndarray:
    return rgb_to_lab(np.asarray(image)[mask > 0.5])


def test_mean_std_brings_the_colours_back_inside_the_mask_only() -> None:
    source, result, mask = shifted_pair()
    fixed = transfer_colour(result, source, mask, "mean-std")
    want, got = masked_lab(source, mask), masked_lab(fixed, mask)
    assert got.mean(0) == pytest.approx(want.mean(0), abs=0.6)
    assert got.std(0) == pytest.approx(want.std(0), abs=0.6)
    outside = mask < 0.5
    assert np.array_equal(np.asarray(fixed)[outside], np.asarray(result)[outside])
    before = realism_report(source, result, mask).colour_score
    assert realism_report(source, fixed, mask).colour_score > before
    half = transfer_colour(result, source, mask, "mean-std", strength=0.5)  # halfway there
    assert masked_lab(half, mask).mean(0)[0] == pytest.approx((want.mean(0)[0] + masked_lab(
        result, mask).mean(0)[0]) / 2, abs=0.6)
    assert transfer_colour(result, source, mask, "off") is result


def test_histogram_matches_the_quantiles() -> None:
    source, result, mask = shifted_pair()
    fixed = transfer_colour(result, source, mask, "histogram")
    want, got = masked_lab(source, mask), masked_lab(fixed, mask)
    q = [0.05, 0.25, 0.5, 0.75, 0.95]
    for c in range(3):
        assert np.quantile(got[:, c], q) == pytest.approx(np.quantile(want[:, c], q), abs=1.0)
    assert np.array_equal(np.asarray(fixed)[mask < 0.5], np.asarray(result)[mask < 0.5])
    flat = grey(np.full((H, W), 90))  # a flat result is shifted onto the source's median, not divided by zero
    assert np.isfinite(masked_lab(transfer_colour(flat, source, mask, "histogram"), mask)).all()


def test_colour_transfer_wants_matching_sizes() -> None:
    source, result, mask = shifted_pair()
    with pytest.raises(ValueError):
        transfer_colour(result.resize((W // 2, H // 2)), source, mask, "mean-std")
    with pytest.raises(ValueError):
        transfer_colour(result, source, mask, "sepia")
