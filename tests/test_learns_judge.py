"""The learns benchmark's pictures and judge: right on what is drawn, wrong on what is not.

The numbers in the asserts were measured on all 360 scenes and are given a little room: with rng
seeds 0 to 5 the judge named every attribute of every clean drawing at 32 and 64 px and kept every
verdict under pixel noise of sigma 10; it named no background of a picture washed 60 % towards
grey (the nearest stayed 34.2 ΔE76 away, azure)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.learns_data import (  # noqa: E402
    ATTRIBUTES, JA, PALETTE, POSITIONS, SHAPES, Scene, Verdict, all_scenes, delta_e, draw, judge, score,
    split_scenes, srgb_to_lab, write_dataset,
)


def _drawn(size: int, seed: int = 0) -> list[tuple[Scene, Image.Image]]:
    rng = np.random.default_rng(seed)
    return [(scene, draw(scene, size, rng)) for scene in all_scenes()]


def _read(verdict: Verdict) -> tuple[str, ...]:
    return tuple(getattr(verdict, name) for name in ATTRIBUTES)


def _words(scene: Scene) -> tuple[str, ...]:
    return tuple(getattr(scene, name) for name in ATTRIBUTES)


def _with_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0.0, sigma, (image.height, image.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


# ---------------------------------------------------------------------------------------- colour

def test_palette_colours_are_far_apart_and_each_names_itself():
    lab = {name: srgb_to_lab(np.array(rgb)) for name, rgb in PALETTE.items()}
    closest = min(float(delta_e(lab[a], lab[b])) for a, b in itertools.combinations(PALETTE, 2))
    assert len(PALETTE) == 6 and closest > 60  # measured 62.9 (blue-azure)
    for name, rgb in PALETTE.items():
        verdict = judge(Image.new("RGB", (32, 32), rgb))
        assert _read(verdict) == (name, "none", "none", "none")
        assert verdict.delta_e < 1e-6


def test_delta_e_matches_published_values():
    # CIE76 of white and black is their L* difference; CIEDE2000 pairs 1 and 7 of Sharma et al. (2005).
    assert float(delta_e(srgb_to_lab(np.array([255, 255, 255])), srgb_to_lab(np.array([0, 0, 0])))) == \
        pytest.approx(100.0, abs=1e-3)
    pairs = np.array([[[50, 2.6772, -79.7751], [50, 0, -82.7485]], [[50, 0, 0], [50, -1, 2]]])
    assert delta_e(pairs[:, 0], pairs[:, 1], formula="ciede2000") == pytest.approx([2.0425, 2.3669], abs=1e-4)


def test_grey_is_never_a_palette_colour():
    for level in (60, 128, 200, 245):
        assert judge(Image.new("RGB", (32, 32), (level,) * 3)).background == "none"


# ---------------------------------------------------------------------------------------- judge

@pytest.mark.parametrize("size", [32, 64])
def test_judge_reads_every_attribute_of_clean_drawings(size):
    drawn = _drawn(size)
    results = [(scene, judge(image, scene)) for scene, image in drawn]
    summary = score(results)
    wrong = [(scene, verdict) for scene, verdict in results if _read(verdict) != _words(scene)]
    assert len(wrong) <= 2, wrong[:5]  # measured: none of 360
    assert summary["count"] == 360 and summary["all"] >= 0.99
    assert summary["delta_e_mean"] < 1.0  # measured 0.25 at 32 px, 0.11 at 64 px


def test_washed_out_pictures_get_no_background():
    results = []
    for scene, image in _drawn(32):
        washed = 0.4 * np.asarray(image, dtype=np.float64) + 0.6 * 128
        results.append((scene, judge(Image.fromarray(washed.round().astype(np.uint8)), scene)))
    assert all(v.background == "none" or v.delta_e > 20 for _, v in results)
    assert min(v.delta_e for _, v in results) > 30  # measured 34.2 (azure)
    summary = score(results)
    assert summary["background"] <= 0.05 and summary["all"] <= 0.05  # measured 0.0 and 0.0


def _other(scene: Scene, attribute: str) -> Scene:
    """The scene with ``attribute`` changed to the next value that makes a valid scene."""
    values = {"colour": tuple(PALETTE), "shape": SHAPES, "position": POSITIONS}[attribute]
    start = values.index(getattr(scene, attribute))
    for step in range(1, len(values)):
        value = values[(start + step) % len(values)]
        if attribute != "colour" or value != scene.background:
            return replace(scene, **{attribute: value})
    raise AssertionError("unreachable")


@pytest.mark.parametrize("attribute", ["colour", "shape", "position"])
def test_a_wrong_picture_is_wrong_on_exactly_that_attribute(attribute):
    rng = np.random.default_rng(1)
    for scene in all_scenes()[::2]:  # half of them: every colour, shape and position still comes up
        drawn_instead = _other(scene, attribute)
        verdict = judge(draw(drawn_instead, 32, rng), scene)
        assert _read(verdict) == _words(drawn_instead), (scene, drawn_instead, verdict)
        result = score([(scene, verdict)])
        assert result[attribute] == 0.0 and result["all"] == 0.0
        assert all(result[name] == 1.0 for name in ATTRIBUTES if name != attribute)


@pytest.mark.parametrize("size, every", [(32, 1), (64, 3)])
def test_pixel_noise_does_not_change_the_verdict(size, every):
    noise = np.random.default_rng(7)
    for scene, image in _drawn(size)[::every]:
        assert _read(judge(_with_noise(image, 10.0, noise), scene)) == _words(scene), scene


def test_a_picture_without_a_shape_has_no_shape():
    verdict = judge(Image.new("RGB", (32, 32), PALETTE["blue"]), Scene("blue", "circle", "red", "left"))
    assert _read(verdict) == ("blue", "none", "none", "none")
    assert score([(Scene("blue", "circle", "red", "left"), verdict)])["all"] == 0.0


# ---------------------------------------------------------------------------------------- drawing

def test_draw_is_a_function_of_the_rng():
    scene = Scene("green", "triangle", "pink", "bottom")
    first = np.asarray(draw(scene, 32, np.random.default_rng(3)))
    assert first.shape == (32, 32, 3)
    assert np.array_equal(first, np.asarray(draw(scene, 32, np.random.default_rng(3))))
    assert not np.array_equal(first, np.asarray(draw(scene, 32, np.random.default_rng(4))))


def test_background_covers_most_of_the_picture():
    for scene, image in _drawn(32)[::7]:
        pixels = np.asarray(image, dtype=np.float64)
        near = delta_e(srgb_to_lab(pixels), srgb_to_lab(np.array(PALETTE[scene.background]))) < 5
        assert near.mean() > 0.6, scene


def test_bad_scenes_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="must differ from the background"):
        Scene("red", "circle", "red", "left")
    with pytest.raises(ValueError, match="Unknown shape 'star'"):
        Scene("red", "star", "blue", "left")
    with pytest.raises(ValueError, match="caption language"):
        Scene("red", "circle", "blue", "left").caption("fr")


# ---------------------------------------------------------------------------------------- captions

def test_captions_read_naturally_and_are_all_distinct():
    scene = Scene("blue", "circle", "red", "left")
    assert scene.caption() == "a red circle on the left, blue background"
    assert scene.caption("ja") == "青い背景、左に赤い丸"
    assert Scene("pink", "square", "azure", "top").caption() == "an azure square at the top, pink background"
    assert Scene("yellow", "triangle", "green", "bottom").caption("ja") == "黄色い背景、下に緑の三角"
    scenes = all_scenes()
    english = {s.caption("en") for s in scenes}
    japanese = {s.caption("ja") for s in scenes}
    assert len(scenes) == len(english) == len(japanese) == 360
    assert set(JA) == set(PALETTE) | set(SHAPES) | set(POSITIONS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_pairs_are_new_but_their_words_are_not(seed):
    train, held_out = split_scenes(seed=seed, held_out_fraction=0.1)
    assert len(train) + len(held_out) == 360 and not set(train) & set(held_out)
    held_pairs = {(s.colour, s.shape) for s in held_out}
    assert len(held_pairs) == 2 and len(held_out) == 40
    assert not held_pairs & {(s.colour, s.shape) for s in train}
    for attribute in ATTRIBUTES:
        assert {getattr(s, attribute) for s in held_out} <= {getattr(s, attribute) for s in train}
    english = " ".join(s.caption("en") for s in train).replace(",", "").split()
    japanese = "".join(s.caption("ja") for s in train)
    for scene in held_out:
        assert set(scene.caption("en").replace(",", "").split()) <= set(english), scene
        assert all(JA[word] in japanese for word in _words(scene)), scene


def test_write_dataset_writes_what_the_trainer_reads(tmp_path):
    from engines.origin.training.data import read_caption

    scenes = all_scenes()[:6]
    count = write_dataset(tmp_path / "data", scenes, size=32, per_scene=2, seed=5)
    images = sorted((tmp_path / "data").glob("*.png"))
    assert count == len(images) == 12
    captions = [read_caption(path) for path in images]
    for index, (path, caption) in enumerate(zip(images, captions)):
        scene = scenes[index // 2]
        assert caption in (scene.caption("en"), scene.caption("ja"))
        with Image.open(path) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
            assert _read(judge(image, scene)) == _words(scene)
    assert {caption for caption in captions} == {s.caption(lang) for s in scenes for lang in ("en", "ja")}
    again = write_dataset(tmp_path / "again", scenes, size=32, per_scene=2, seed=5)
    assert again == 12 and all((tmp_path / "again" / p.name).read_bytes() == p.read_bytes() for p in images)
    with pytest.raises(ValueError, match="already holds pictures"):
        write_dataset(tmp_path / "again", scenes, size=32, per_scene=1, seed=5)


def test_the_module_does_not_import_torch():
    code = "import sys; import bench.learns_data; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stdout + proc.stderr
