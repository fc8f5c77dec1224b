"""The manga look: screentone dots that print the right grey on the right screen, line-art grey, ink."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engines.errors import InvalidRequestError
from engines.manga.page_model import Tone
from engines.manga.tone import apply_tone, ink, screentone, to_lineart_grey


def flat(level: int, size: int = 300) -> Image.Image:
    return Image.new("L", (size, size), level)


def darkness(image: Image.Image) -> float:
    return 1.0 - float(np.asarray(image, dtype=np.float64).mean()) / 255.0


def spectrum_peak(image: Image.Image) -> tuple[float, float]:
    """(radius in cycles per image, direction in degrees 0-180) of the strongest screen frequency."""
    pixels = np.asarray(image, dtype=np.float64)
    power = np.abs(np.fft.fftshift(np.fft.fft2(pixels - pixels.mean())))
    centre = pixels.shape[0] // 2
    power[centre - 3:centre + 4, centre - 3:centre + 4] = 0  # the tone's slow drift, not its screen
    fy, fx = np.unravel_index(np.argmax(power), power.shape)
    dy, dx = fy - centre, fx - centre
    return float(np.hypot(dx, dy)), float(np.degrees(np.arctan2(dy, dx)) % 180.0)


@pytest.mark.parametrize("angle", [0.0, 45.0, 15.0])
@pytest.mark.parametrize("level", [40, 80, 128, 170, 210, 235])
def test_dot_area_follows_the_darkness(angle: float, level: int) -> None:
    toned = screentone(flat(level), lpi=60, angle=angle, dpi=300)
    assert abs(darkness(toned) - (255 - level) / 255) < 0.03


def test_darker_grey_gives_bigger_dots() -> None:
    shares = [darkness(screentone(flat(level), 60, 45, 300)) for level in range(30, 240, 15)]
    assert shares == sorted(shares, reverse=True)


def test_output_is_bilevel_grey_and_deterministic() -> None:
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (64, 1)), "L")
    first = screentone(gradient, 60, 45, 300)
    assert first.mode == "L" and set(np.unique(np.asarray(first))) <= {0, 255}
    assert np.array_equal(np.asarray(first), np.asarray(screentone(gradient, 60, 45, 300)))


@pytest.mark.parametrize("lpi,dpi", [(50, 300), (75, 300), (60, 600)])
def test_dot_period_is_dpi_over_lpi(lpi: float, dpi: int) -> None:
    size = 480
    radius, direction = spectrum_peak(screentone(flat(180, size), lpi, 0, dpi))
    assert abs(radius - size * lpi / dpi) <= 1.0  # cycles per image = image size / cell size
    assert min(direction % 90, 90 - direction % 90) < 2  # along the page's axes


def test_angle_turns_the_screen() -> None:
    size = 480
    upright, turned = screentone(flat(180, size), 50, 0, 300), screentone(flat(180, size), 50, 45, 300)
    assert not np.array_equal(np.asarray(upright), np.asarray(turned))
    radius, direction = spectrum_peak(turned)
    assert abs(radius - size * 50 / 300) <= 1.0
    assert abs(direction - 45) < 3 or abs(direction - 135) < 3  # along the diagonals
    # A 45-degree screen looks the same mirrored across the diagonal (x and y swapped).
    pixels = np.asarray(turned)
    assert np.mean(pixels == pixels.T) > 0.98


def test_paper_stays_white_and_ink_stays_black() -> None:
    for level in (255, 250, 244):
        assert np.all(np.asarray(screentone(flat(level), 60, 45, 300)) == 255)
    for level in (0, 5, 12):
        assert np.all(np.asarray(screentone(flat(level), 60, 45, 300)) == 0)


def test_a_black_line_stays_solid_through_the_tone() -> None:
    page = Image.new("L", (200, 200), 150)
    ImageDraw.Draw(page).line((0, 100, 199, 100), fill=0, width=3)
    toned = np.asarray(screentone(page, 60, 45, 300))
    assert np.all(toned[99:102] == 0)


def test_ink_thresholds_at_its_level() -> None:
    ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
    pixels = np.asarray(ink(ramp, 128)).ravel()
    assert np.all(pixels[:128] == 0) and np.all(pixels[128:] == 255)
    assert np.all(np.asarray(ink(ramp, 0)) == 255)
    with pytest.raises(InvalidRequestError):
        ink(ramp, 300)


def test_lineart_grey_cleans_paper_and_keeps_lines() -> None:
    drawing = Image.new("RGB", (300, 300), (235, 235, 235))  # scanned paper, a little grey
    pen = ImageDraw.Draw(drawing)
    pen.line((20, 150, 280, 150), fill=(40, 40, 40), width=2)  # a thin pencil-dark line
    pen.line((150, 20, 150, 280), fill=(0, 0, 255), width=2)  # a blue line: dark by luminance
    grey = np.asarray(to_lineart_grey(drawing))
    assert to_lineart_grey(drawing).mode == "L"
    assert np.all(grey[10, :] == 255) and np.all(grey[:, 10] == 255)
    assert grey[150, 60] < 25  # the line is as dark or darker than drawn
    assert grey[60, 150] < 40  # a plain average would make it 85


def test_lineart_grey_keeps_mid_tones_in_order_and_contrast_steepens_them() -> None:
    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (8, 1)), "L")
    soft, hard = (np.asarray(to_lineart_grey(ramp, c))[0].astype(int) for c in (0.5, 3.0))
    assert np.all(np.diff(soft) >= 0) and np.all(np.diff(hard) >= 0)
    assert hard[64] < soft[64] and hard[192] > soft[192]


def test_transparent_parts_become_paper() -> None:
    layer = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((10, 10, 29, 29), fill=(0, 0, 0, 255))
    grey = np.asarray(to_lineart_grey(layer))
    assert grey[0, 0] == 255 and grey[20, 20] == 0


def test_apply_tone_dispatches_by_mode() -> None:
    picture = Image.new("RGB", (120, 120), (120, 140, 160))
    assert apply_tone(picture, Tone(mode="none"), 300) is picture
    assert apply_tone(picture, Tone(mode="grey"), 300).mode == "L"
    toned = np.asarray(apply_tone(picture, Tone(mode="screentone", lpi=60, angle=45), 300))
    assert set(np.unique(toned)) == {0, 255}
    inked = np.asarray(apply_tone(picture, Tone(mode="ink", threshold=250), 300))
    assert np.all(inked == 0)


@pytest.mark.parametrize("tone", [Tone(mode="sepia"), Tone(mode="screentone", lpi=5),
                                  Tone(mode="ink", threshold=-1), Tone(mode="grey", contrast=9.0)])
def test_a_bad_tone_is_one_sentence(tone: Tone) -> None:
    with pytest.raises(InvalidRequestError):
        apply_tone(Image.new("L", (8, 8), 128), tone, 300)


def test_a_panel_toned_alone_lines_up_with_the_page_screen() -> None:
    page = Image.fromarray(np.tile(np.linspace(240, 20, 400).astype(np.uint8), (300, 1)), "L")
    whole = np.asarray(screentone(page, 60, 45, 300))
    box = (130, 70, 330, 250)
    panel = np.asarray(screentone(page.crop(box), 60, 45, 300, offset=box[:2]))
    assert np.array_equal(panel, whole[box[1]:box[3], box[0]:box[2]])
