"""What an Animation job writes and the score beside it: every video format written and read back (frames,
frame rate, size, the metadata inside), PNG frames with their parameters, files that appear whole or not at
all; and the consistency report on frames made by hand. No models; it runs in seconds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engines.animation import video_io
from engines.animation.consistency import ConsistencyReport, consistency_report
from engines.animation.video_io import (VIDEO_FORMATS, frame_durations, frame_sequence, read_video_frames,
                                        read_video_info, read_video_metadata, save_frames, save_video)
from engines.errors import InvalidRequestError, StudioError

W, H = 64, 48
METADATA = {"parameters": "1girl, 笑顔, walking\nNegative prompt: lowres\nSteps: 2, CFG scale: 7.5, "
                          "AnimateDiff: model: mm_sd_v15_v2, fps: 8",
            "inkframe": {"backend": "animation", "request": {"frames": 6, "fps": 8, "seed": 4},
                         "odd": "= ; # \\ \" < & >"}}


def moving_frames(count: int = 6, size: tuple[int, int] = (W, H)) -> list[Image.Image]:
    """A square crossing a gradient: every frame different, so no encoder stores two as one."""
    width, height = size
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    base = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                           np.full((height, width, 1), 96.0)], axis=2)
    frames = []
    for index in range(count):
        picture = Image.fromarray(base.astype(np.uint8), "RGB")
        left = 2 + index * (width // (count + 2))
        box = (left, height // 4, left + width // 5, height // 2)
        ImageDraw.Draw(picture).rectangle(box, fill=(250, 240, 20))
        frames.append(picture)
    return frames


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- writing and reading back ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", VIDEO_FORMATS)
@pytest.mark.parametrize("loop,count", [("loop", 6), ("ping-pong", 10)])
def test_every_format_reads_back_its_frames_fps_and_metadata(tmp_path: Path, suffix: str, loop: str,
                                                             count: int) -> None:
    frames = moving_frames(6)
    path = tmp_path / "made" / f"walk{suffix}"  # the folder does not exist yet
    assert save_video(frames, path, 8, loop=loop, metadata=METADATA) == count
    info = read_video_info(path)
    assert info.frames == count and info.fps == pytest.approx(8.0) and info.size == (W, H)
    assert read_video_metadata(path) == METADATA
    shown = read_video_frames(path)
    assert len(shown) == count and shown[0].shape == (H, W, 3) and shown[0].dtype == np.uint8
    order = frame_sequence(frames, loop)
    for index in (0, count // 2, count - 1):  # lossy, but each frame is the one that should play there
        error = np.abs(shown[index].astype(int) - np.asarray(order[index], int)).mean()
        assert error < 6, (index, error)
    assert leftovers(path.parent) == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("suffix", VIDEO_FORMATS)
def test_odd_sizes_are_written(tmp_path: Path, suffix: str) -> None:
    frames = moving_frames(4, (37, 23))
    path = tmp_path / f"odd{suffix}"
    save_video(frames, path, 12)
    info = read_video_info(path)
    assert info.frames == 4 and info.fps == pytest.approx(12.0)
    # 4:2:0 video needs even sides: one column and one row more, copies of the last; pictures keep the size
    assert info.size == ((38, 24) if suffix in (".mp4", ".webm") else (37, 23))
    first = read_video_frames(path)[0]
    assert np.abs(first[:23, :37].astype(int) - np.asarray(frames[0], int)).mean() < 6
    if suffix in (".mp4", ".webm"):
        assert np.abs(first[:23, 37].astype(int) - first[:23, 36].astype(int)).mean() < 6


def test_ping_pong_and_the_frame_clock() -> None:
    assert frame_sequence([0, 1, 2, 3], "loop") == [0, 1, 2, 3]
    assert frame_sequence([0, 1, 2, 3], "ping-pong") == [0, 1, 2, 3, 2, 1]  # the ends are not doubled
    assert frame_sequence([0], "ping-pong") == [0]
    with pytest.raises(InvalidRequestError, match="loop must be"):
        frame_sequence([0, 1], "bounce")
    # a GIF counts in 10 ms ticks: 8 fps alternates 130 and 120 ms and keeps the exact running time
    assert frame_durations(4, 8, 10) == [130, 120, 130, 120]
    assert sum(frame_durations(24, 24, 10)) == 1000 and sum(frame_durations(12, 12, 1)) == 1000


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_identical_frames_stored_once_still_count_and_no_metadata_reads_none(tmp_path: Path,
                                                                                suffix: str) -> None:
    frames = moving_frames(3)
    held = [frames[0]] * 3 + frames[1:]  # GIF and WebP encoders store the first three as one long frame
    path = tmp_path / f"held{suffix}"
    assert save_video(held, path, 12) == 5
    info = read_video_info(path)
    assert info.frames == 5 and round(info.fps) == 12
    assert len(read_video_frames(path)) == 5
    assert read_video_metadata(path) is None


def test_a_gif_faster_than_browsers_play_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="at most 50 frames per second"):
        save_video(moving_frames(3), tmp_path / "fast.gif", 60)
    save_video(moving_frames(3), tmp_path / "fast.webp", 60)
    assert read_video_info(tmp_path / "fast.webp").fps == pytest.approx(60.0, rel=0.02)


def test_png_frames_carry_the_parameters(tmp_path: Path) -> None:
    frames = moving_frames(3)
    paths = save_frames(frames, tmp_path / "frames", "walk", METADATA["parameters"])
    assert [p.name for p in paths] == ["walk-0000.png", "walk-0001.png", "walk-0002.png"]
    for frame, path in zip(frames, paths):
        with Image.open(path) as saved:
            assert saved.text["parameters"] == METADATA["parameters"]  # iTXt: the prompt is not Latin-1
            assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(frame))
    plain = save_frames(frames[:1], tmp_path / "plain", "walk")
    with Image.open(plain[0]) as saved:
        assert "parameters" not in saved.text


# --- refusals and failures ---------------------------------------------------------------------------------


def test_an_unknown_suffix_is_one_sentence_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        save_video(moving_frames(2), tmp_path / "out" / "walk.avi", 8)
    message = str(refused.value)
    assert "walk.avi" in message and ".mp4" in message and message.count(".") >= 1 and "\n" not in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidRequestError, match="no frames"):
        save_video([], tmp_path / "empty.mp4", 8)
    with pytest.raises(InvalidRequestError, match="frame rate"):
        save_video(moving_frames(2), tmp_path / "slow.mp4", 0)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_missing_imageio_ffmpeg_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       suffix: str) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if it were not installed
    with pytest.raises(InvalidRequestError, match="pip install imageio-ffmpeg"):
        save_video(moving_frames(2), tmp_path / "out" / f"walk{suffix}", 8)
    assert not (tmp_path / "out").exists()  # refused before any work
    save_video(moving_frames(2), tmp_path / "out" / "walk.gif", 8)  # Pillow's formats need no ffmpeg


@pytest.mark.parametrize("suffix", VIDEO_FORMATS)
def test_a_failing_write_leaves_the_old_file_or_none(tmp_path: Path, suffix: str) -> None:
    frames = moving_frames(5)
    frames[3] = frames[3].resize((W // 2, H // 2))  # found only when frame 3 is encoded
    path = tmp_path / f"walk{suffix}"
    with pytest.raises(InvalidRequestError, match="Frame 3 is 32x24"):
        save_video(frames, path, 8)
    assert leftovers(tmp_path) == []
    path.write_bytes(b"the old video")
    with pytest.raises(InvalidRequestError):
        save_video(frames, path, 8, metadata=METADATA)
    assert leftovers(tmp_path) == [path.name] and path.read_bytes() == b"the old video"


def test_an_ffmpeg_failure_is_one_sentence_and_leaves_nothing(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_io, "_X264", ["-c:v", "no-such-encoder"])
    with pytest.raises(StudioError, match="ffmpeg could not write"):
        save_video(moving_frames(3), tmp_path / "walk.mp4", 8, metadata=METADATA)
    assert leftovers(tmp_path) == []


# --- the consistency report --------------------------------------------------------------------------------


def character(shift: tuple[int, int] = (0, 0), skin: tuple[int, int, int] = (240, 200, 170),
              size: tuple[int, int] = (96, 128), background: tuple[int, ...] = (250, 250, 250),
              mode: str = "RGB") -> Image.Image:
    """A drawn character on a plain background: a red body, a skin head, black eyes and outlines."""
    width, height = size
    dx, dy = shift
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    opaque = (255,) if mode == "RGBA" else ()
    ink = (0, 0, 0) + opaque
    draw.rectangle((29 + dx, 60 + dy, 67 + dx, 120 + dy), fill=(200, 60, 50) + opaque, outline=ink, width=2)
    draw.ellipse((28 + dx, 12 + dy, 68 + dx, 58 + dy), fill=skin + opaque, outline=ink, width=2)
    for eye in (38, 54):
        draw.rectangle((eye + dx, 30 + dy, eye + 4 + dx, 36 + dy), fill=(20, 20, 60) + opaque)
    for stripe in range(4):  # texture inside the body, so SSIM has structure to compare
        top = 68 + stripe * 12 + dy
        draw.line((31 + dx, top, 65 + dx, top + 4), fill=(120, 20, 30) + opaque, width=2)
    return image


def noise(seed: int, size: tuple[int, int] = (96, 128)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def grain(image: Image.Image, seed: int, amount: float = 3.0) -> Image.Image:
    """``image`` with a little film grain: a frame that moved nowhere but is not bit-identical."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, np.float32) + rng.normal(0.0, amount, (image.height, image.width, 3))
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def test_identical_frames_are_steady_and_keep_the_character() -> None:
    still = character()
    report = consistency_report([still.copy() for _ in range(8)], still)
    assert report.stability > 0.999 and report.identity > 0.999
    assert report.identity_colour > 0.999 and report.identity_structure > 0.999
    assert report.reference == "still" and report.frames == 8 and report.mask_source == "background"
    assert 0.2 < report.mask_coverage < 0.5  # the guessed character, not the white page
    assert report.summary().startswith("Steady motion (stability 1.00); keeps the character (identity 1.00")


def test_noise_frames_flicker() -> None:
    report = consistency_report([noise(seed) for seed in range(6)], noise(99))
    assert report.stability < 0.1 and report.identity_structure < 0.1
    assert report.summary().startswith("Strong flicker or jumps (stability 0.0")
    assert "loses the character" in report.summary()


def test_a_colour_shift_lowers_colour_identity_but_not_stability() -> None:
    still = character()
    recoloured = character(skin=(120, 200, 240))  # the same drawing, the skin painted blue
    same = consistency_report([still] * 6, still)
    shifted = consistency_report([recoloured] * 6, still)
    assert shifted.stability > 0.999  # every frame like the one before it
    assert shifted.identity_colour < same.identity_colour - 0.05 and shifted.colour_drift > 10
    assert shifted.identity < same.identity


def test_a_frame_unlike_the_still_is_the_weakest_and_the_biggest_jump() -> None:
    still = character()
    frames = [character((dx, 0)) for dx in (0, 1, 2, 1, 0, 1, 2, 1)]
    frames[5] = noise(3)
    report = consistency_report(frames, still)
    assert report.weakest_frame == 5
    assert report.biggest_jump in (5, 6)  # the jumps into and out of it are equally large
    assert min(report.identity_per_frame) == report.identity_per_frame[5]
    assert len(report.stability_per_step) == 7 and len(report.structure_per_frame) == 8
    assert "weakest frame 5." in report.summary()


def test_the_summary_changes_its_words_with_the_numbers() -> None:
    still = character()
    steady = consistency_report([grain(still, seed) for seed in range(4)], still).summary()
    # jittering by 2 px with the skin painted green: stability ~0.68, identity ~0.71
    drifting = consistency_report([character((2 * (k % 2), 0), skin=(60, 160, 90)) for k in range(4)],
                                  still).summary()
    flicker = consistency_report([noise(seed) for seed in range(4)], still).summary()
    assert steady.startswith("Steady motion (") and "keeps the character" in steady and "jump" not in steady
    assert drifting.startswith("Some flicker or fast motion (") and "biggest jump at frame 1)" in drifting
    assert "drifts from the character" in drifting
    assert flicker.startswith("Strong flicker or jumps (") and "loses the character" in flicker
    # without a still the reference is frame 0, which is left out of the identity numbers
    text_to_video = consistency_report([character(), noise(1), noise(2)])
    assert text_to_video.reference == "first frame" and text_to_video.weakest_frame in (1, 2)
    assert "from the first frame" in text_to_video.summary() and text_to_video.identity < 0.5
    single = consistency_report([still], still)
    assert single.summary().startswith("One frame, no motion;") and single.biggest_jump is None


def test_the_alpha_mask_is_honoured() -> None:
    still = character(background=(0, 0, 0, 0), mode="RGBA")  # transparent around the character
    alpha = np.asarray(still.getchannel("A")) > 0
    frames = []
    for seed in range(5):  # the character as drawn, a new noisy background in every frame
        pixels = np.asarray(noise(seed)).copy()
        pixels[alpha] = np.asarray(still.convert("RGB"))[alpha]
        frames.append(Image.fromarray(pixels, "RGB"))
    honoured = consistency_report(frames, still)
    assert honoured.mask_source == "alpha"
    assert honoured.identity_colour > 0.99 and honoured.identity_structure > 0.8
    assert honoured.stability < 0.6  # the background does flicker, and stability sees the whole frame
    ignored = consistency_report(frames, still, mask=np.ones((128, 96), bool))
    assert ignored.identity < honoured.identity - 0.2
    # a mask passed in, at another size than the frames, counts the same as the alpha
    half = np.asarray(Image.fromarray(alpha).resize((48, 64), Image.Resampling.NEAREST))
    given = consistency_report(frames, still, mask=half)
    assert given.mask_source == "mask" and given.identity == pytest.approx(honoured.identity, abs=0.05)


def test_sizes_masks_and_the_sidecar() -> None:
    still = character()
    bigger = [character((dx, 0)).resize((192, 256)) for dx in (0, 1, 2)]  # frames at twice the still's size
    report = consistency_report(bigger, still)
    assert report.working_size == (96, 128) and report.identity > 0.8
    large = consistency_report([character().resize((600, 800))] * 2)
    assert large.working_size == (192, 256)  # measured at the working size, long side 256
    tiny = consistency_report([Image.new("RGB", (6, 5), (9, 9, 9))] * 2)  # under SSIM's 11-pixel window
    assert tiny.stability == pytest.approx(1.0) and tiny.mask_source == "whole picture"
    scene = consistency_report([noise(1)] * 2)  # no plain border: the whole picture is the character
    assert scene.mask_source == "whole picture" and scene.mask_coverage == 1.0
    document = json.loads(json.dumps(report.as_dict()))
    expected = {"stability", "identity", "identity_colour", "identity_structure", "weakest_frame",
                "reference", "colour_drift", "biggest_jump", "stability_per_step"}
    assert set(document) >= expected
    assert isinstance(report, ConsistencyReport) and document["frames"] == 3
    with pytest.raises(InvalidRequestError):
        consistency_report([])
