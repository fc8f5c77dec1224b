"""Live-Action end to end on tiny random-weight models in the real formats: an SD 1.5 checkpoint, two (or three)
ControlNets, a depth and a pose estimator, saved to disk and loaded through the studio's loaders. The engine
against raw diffusers, the control maps steering, the background kinds, sharing the pooled checkpoint with
Text-to-Manga, the batch, cancel, and `app.py live-action` with every kind of bad picture."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import main as app_main
from engines.errors import Cancelled, InvalidRequestError
from engines.live_action.batch import run_batch
from engines.live_action.photoreal import make_live_action
from engines.live_action.request import LiveActionRequest, check
from engines.live_action.source import read_source
from engines.progress import CancelToken
from engines.sd15.png_params import read_png_parameters
from live_action_models import save_tiny_controlnet, save_tiny_depth_model, save_tiny_pose_model
from tiny_models import cpu_engines, save_tiny_ip_adapter

QUICK = dict(base_model="tiny-real", vae="", controlnet_depth="cn-depth", controlnet_pose="cn-pose",
             depth_model="depth-est", pose_model="pose-est", steps=4, strength=0.5, cfg=2.0, sampler="DDIM",
             seed=5, long_side=64, prompt="ink manga", negative="")


def figure(background: tuple[int, ...], mode: str = "RGB", size: tuple[int, int] = (96, 128)) -> Image.Image:
    """A drawn 'character': a coloured body and head on the given background."""
    from PIL import ImageDraw

    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    w, h = size
    fill = (200, 60, 50) + ((255,) if mode == "RGBA" else ())
    skin = (240, 200, 170) + ((255,) if mode == "RGBA" else ())
    draw.rectangle((w * 0.3, h * 0.35, w * 0.7, h * 0.9), fill=fill)
    draw.ellipse((w * 0.35, h * 0.08, w * 0.65, h * 0.35), fill=skin)
    return image


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    data = tmp_path_factory.mktemp("live-action-data")
    models = data / "models"
    shutil.copytree(tiny_sd_dir, models / "tiny-real")
    save_tiny_controlnet(models / "cn-depth", seed=1)
    save_tiny_controlnet(models / "cn-pose", seed=2)
    save_tiny_controlnet(models / "cn-canny", seed=3)
    save_tiny_depth_model(models / "depth-est")
    save_tiny_pose_model(models / "pose-est")
    save_tiny_ip_adapter(models / "h94--IP-Adapter", seed=4)
    figure((0, 0, 0, 0), "RGBA").save(data / "clear-hero.png")
    figure((0, 0, 0)).save(data / "black-hero.png")
    scene = np.zeros((128, 96, 3), np.uint8)
    scene[..., 0] = np.linspace(40, 220, 96, dtype=np.uint8)[None, :]
    scene[..., 1] = np.linspace(200, 90, 128, dtype=np.uint8)[:, None]
    scene[..., 2] = 150
    hero = figure((0, 0, 0))
    scene_image = Image.fromarray(scene)
    scene_image.paste(hero, mask=Image.fromarray((np.asarray(hero).sum(2) > 0).astype(np.uint8) * 255))
    scene_image.save(data / "scene-hero.png")
    return data


@pytest.fixture(scope="module")
def ctx(data_dir: Path):
    return cpu_engines(data_dir)


def make(ctx, tmp_path: Path, image: Path, **changes):
    hardware, store = ctx
    values = dict(QUICK, image=image, output=tmp_path / "real.png")
    values.update(changes)
    return make_live_action(LiveActionRequest(**values), hardware, store, outputs=tmp_path)


def pixels(path: Path, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(path).convert(mode), dtype=np.int16)


def map_files(data_dir: Path, size=(64, 64)) -> tuple[Path, Path]:
    depth = Image.fromarray(np.tile(np.linspace(0, 255, size[0], dtype=np.uint8), (size[1], 1)))
    pose = Image.new("RGB", size, (0, 0, 0))
    pose.paste((255, 0, 0), (20, 10, 44, 54))
    depth.save(data_dir / "depth-map.png")
    pose.save(data_dir / "pose-map.png")
    return data_dir / "depth-map.png", data_dir / "pose-map.png"


# --- the engine ---------------------------------------------------------------------------------------------


def test_a_transparent_character_end_to_end(ctx, data_dir: Path, tmp_path: Path) -> None:
    result = make(ctx, tmp_path, data_dir / "clear-hero.png")
    assert result.path == tmp_path / "real.png" and result.background == "transparent"
    picture = Image.open(result.path)
    assert picture.size == (64, 64) and picture.mode == "RGBA"
    alpha = np.asarray(picture.getchannel("A"))
    assert alpha[0, 0] == 0 and alpha[40, 32] == 255  # transparency restored around the figure, not inside it
    # The report as JSON beside the PNG, and the maps the studio computed.
    report = json.loads(result.report_path.read_text(encoding="utf-8"))
    assert report["background"] == "transparent" and report["summary"] == result.report.summary()
    assert {"fidelity", "colour_score", "entropy_ratio"} <= set(report["report"])
    assert set(result.maps) == {"depth", "pose"} and all(p.is_file() for p in result.maps.values())
    assert Image.open(result.maps["depth"]).size == (64, 64)
    # A1111's parameters: img2img's denoising strength and one ControlNet unit per model.
    parameters, inkframe = read_png_parameters(result.path)
    assert parameters.hires_strength == 0.5 and parameters.seed == 5 and parameters.steps == 4
    units = dict(parameters.extra)
    assert units["ControlNet 0"].startswith("Module: depth_estimated, Model: cn-depth, Weight: 0.75")
    assert units["ControlNet 1"].startswith("Module: openpose_vitpose, Model: cn-pose, Weight: 0.4")
    assert inkframe["backend"] == "live-action" and inkframe["request"]["seed"] == 5
    # Same seed, same settings: the same pixels.
    again = make(ctx, tmp_path / "again", data_dir / "clear-hero.png")
    assert np.array_equal(pixels(result.path, "RGBA"), pixels(again.path, "RGBA"))


def test_the_engine_gives_diffusers_pixels(ctx, data_dir: Path, tmp_path: Path) -> None:
    """With ready maps, no colour transfer and one plain prompt chunk, the engine adds nothing to diffusers."""
    import torch
    from diffusers import (ControlNetModel, DDIMScheduler, StableDiffusionControlNetImg2ImgPipeline,
                           StableDiffusionPipeline)

    from engines.live_action.source import fit_to

    depth, pose = map_files(data_dir)
    result = make(ctx, tmp_path, data_dir / "scene-hero.png", depth_map=depth, pose_map=pose, colour_transfer="off")
    models = data_dir / "models"
    base = StableDiffusionPipeline.from_pretrained(str(models / "tiny-real"), safety_checker=None,
                                                   requires_safety_checker=False)
    nets = [ControlNetModel.from_pretrained(str(models / name)) for name in ("cn-depth", "cn-pose")]
    components = {k: v for k, v in base.components.items() if k not in ("safety_checker", "feature_extractor",
                                                                         "image_encoder", "scheduler")}
    raw = StableDiffusionControlNetImg2ImgPipeline(
        **components, controlnet=nets, scheduler=DDIMScheduler.from_config(base.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    source = fit_to(Image.open(data_dir / "scene-hero.png").convert("RGB"), (64, 64))
    expected = raw(prompt="ink manga", negative_prompt="", image=source,
                   control_image=[Image.open(depth).convert("RGB"), Image.open(pose).convert("RGB")],
                   height=64, width=64, strength=0.5, num_inference_steps=4, guidance_scale=2.0,
                   controlnet_conditioning_scale=[0.75, 0.4], generator=torch.Generator("cpu").manual_seed(5),
                   output_type="np").images[0]
    assert result.background == "scene"
    assert np.array_equal(pixels(result.path), (expected * 255).round().astype(np.int16))


def test_the_control_maps_steer_the_picture(ctx, data_dir: Path, tmp_path: Path) -> None:
    depth, pose = map_files(data_dir)
    flat = data_dir / "flat-depth.png"
    Image.new("L", (64, 64), 128).save(flat)
    common = dict(pose_map=pose, colour_transfer="off")
    one = make(ctx, tmp_path / "a", data_dir / "scene-hero.png", depth_map=depth, **common)
    two = make(ctx, tmp_path / "b", data_dir / "scene-hero.png", depth_map=flat, **common)
    assert np.abs(pixels(one.path) - pixels(two.path)).mean() > 0.5
    assert dict(read_png_parameters(one.path)[0].extra)["ControlNet 0"].startswith("Module: depth, ")
    # A third ControlNet on the drawing's edges: its map is made and saved, and it changes the picture.
    three = make(ctx, tmp_path / "c", data_dir / "scene-hero.png", depth_map=depth, controlnet_canny="cn-canny",
                 **common)
    assert set(three.maps) == {"depth", "pose", "canny"}
    assert "ControlNet 2" in dict(read_png_parameters(three.path)[0].extra)
    assert np.abs(pixels(one.path) - pixels(three.path)).mean() > 0.5


def test_a_black_background_stays_black(ctx, data_dir: Path, tmp_path: Path) -> None:
    result = make(ctx, tmp_path, data_dir / "black-hero.png")
    assert result.background == "black"
    out = pixels(result.path)
    assert out[:4, :4].max() <= 2 and out[-4:, :4].max() <= 2  # the corners: no grey haze leaked in
    assert out[40, 32].sum() > 60  # the character is there


def test_colour_transfer_is_scored_before_and_after(ctx, data_dir: Path, tmp_path: Path) -> None:
    off = make(ctx, tmp_path / "off", data_dir / "scene-hero.png", colour_transfer="off")
    on = make(ctx, tmp_path / "on", data_dir / "scene-hero.png", colour_transfer="mean-std")
    assert off.report.colour_score_before_correction is None
    assert on.report.colour_score_before_correction == pytest.approx(off.report.colour_score, abs=1e-6)
    assert on.report.colour_score > on.report.colour_score_before_correction


def test_identity_uses_the_picture_as_an_ip_adapter_reference(ctx, data_dir: Path, tmp_path: Path) -> None:
    plain = make(ctx, tmp_path / "plain", data_dir / "scene-hero.png", colour_transfer="off")
    kept = make(ctx, tmp_path / "kept", data_dir / "scene-hero.png", colour_transfer="off", identity=True,
                identity_scale=1.0)
    assert np.abs(pixels(plain.path) - pixels(kept.path)).mean() > 0.5
    assert dict(read_png_parameters(kept.path)[0].extra)["IP-Adapter scale"] == "1"


def test_a_prompt_longer_than_77_tokens_is_not_cut(ctx, data_dir: Path, tmp_path: Path) -> None:
    head = "ink manga, " * 40  # the tiny tokenizer reads these as 3 tokens each: 120 tokens
    short = make(ctx, tmp_path / "short", data_dir / "scene-hero.png", prompt=head, colour_transfer="off")
    long = make(ctx, tmp_path / "long", data_dir / "scene-hero.png", prompt=head + "red hat, blue coat",
                colour_transfer="off")
    assert np.abs(pixels(short.path) - pixels(long.path)).mean() > 0.1


def test_live_action_shares_the_checkpoint_with_text_to_manga(ctx, data_dir: Path, tmp_path: Path) -> None:
    """The pool holds one copy of the checkpoint: Live-Action adds only its ControlNets and estimators."""
    from engines.sd15.request import Sd15Request
    from engines.sd15.txt2img import generate

    hardware, store = ctx
    generate(Sd15Request(model="tiny-real", prompt="ink manga", steps=2, width=64, height=64, seed=1,
                         output_dir=tmp_path), hardware, store, outputs=tmp_path)
    before = set(hardware.pool.names())
    with hardware.use("sd15:tiny-real") as base:
        unet, vae, text_encoder = base.unet, base.vae, base.text_encoder
    make(ctx, tmp_path, data_dir / "scene-hero.png")
    added = set(hardware.pool.names()) - before
    assert all(name.split(":")[0] in ("controlnet", "depth", "pose") for name in added), added
    assert [n for n in hardware.pool.names() if n.startswith("sd15:")] == ["sd15:tiny-real"]
    with hardware.use("sd15:tiny-real") as base:
        assert base.unet is unet and base.vae is vae and base.text_encoder is text_encoder


def test_cancel_stops_within_a_step_and_saves_nothing(ctx, data_dir: Path, tmp_path: Path) -> None:
    hardware, store = ctx
    token = CancelToken()
    seen: list[int] = []

    def on_step(step: int, total: int, message: str = "", preview=None) -> None:
        seen.append(step)
        if step >= 2:
            token.cancel()

    request = LiveActionRequest(**dict(QUICK, image=data_dir / "scene-hero.png", output=tmp_path / "x.png",
                                       steps=8, strength=1.0))
    with pytest.raises(Cancelled):
        make_live_action(request, hardware, store, on_step=on_step, cancel=token)
    assert not (tmp_path / "x.png").exists() and max(seen) <= 3
    assert hardware.busy is None  # the GPU lock is free again


def test_a_batch_skips_a_bad_file_and_makes_the_rest(ctx, data_dir: Path, tmp_path: Path) -> None:
    hardware, store = ctx
    folder = tmp_path / "drawings"
    folder.mkdir()
    for name in ("a-hero.png", "c-hero.png"):
        shutil.copy(data_dir / "scene-hero.png", folder / name)
    (folder / "b-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    steps: list[tuple[int, int]] = []
    result = run_batch(LiveActionRequest(**dict(QUICK, image=Path("unused"))), folder, tmp_path / "real",
                       hardware, store, on_step=lambda s, t, m="", p=None: steps.append((s, t)))
    assert [r.path.name for r in result.done] == ["a-hero.png", "c-hero.png"]
    assert [(p.name, "b-broken.png" in why) for p, why in result.failed] == [("b-broken.png", True)]
    assert steps[-1][0] == steps[-1][1] and all(s <= t for s, t in steps)
    assert result.summary().startswith("2 pictures made, 1 skipped (b-broken.png)")
    with pytest.raises(InvalidRequestError, match="other than the input folder"):
        run_batch(LiveActionRequest(**dict(QUICK, image=Path("unused"))), folder, folder, hardware, store)


# --- pictures of every kind ---------------------------------------------------------------------------------


def _bomb(path: Path) -> Path:
    """A valid PNG header that claims 30000 x 30000 pixels (900 MP) and holds almost nothing."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_unusual_pictures_are_read_as_the_artist_sees_them(tmp_path: Path) -> None:
    cmyk = tmp_path / "print.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(cmyk)  # red in print colours
    red = np.asarray(read_source(cmyk).image)
    assert read_source(cmyk).image.mode == "RGB" and red[..., 0].mean() > 200 and red[..., 1].mean() < 40
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(deep)  # 16-bit grey at half
    grey = read_source(deep)
    assert grey.image.mode == "RGB" and abs(int(np.asarray(grey.image)[0, 0, 0]) - 128) <= 1 and "16-bit" in grey.note
    palette = tmp_path / "palette.png"
    indexed = Image.new("P", (40, 40), 1)
    indexed.putpalette([0, 0, 0, 30, 200, 90] + [0] * 762)
    indexed.paste(0, (0, 0, 20, 40))
    indexed.save(palette, transparency=0)
    read = read_source(palette)
    assert read.image.mode == "RGBA" and np.asarray(read.image)[5, 5, 3] == 0 and tuple(
        np.asarray(read.image)[5, 30]) == (30, 200, 90, 255)
    opaque = tmp_path / "opaque.png"
    Image.new("RGBA", (40, 40), (10, 20, 30, 255)).save(opaque)
    assert read_source(opaque).image.mode == "RGB"  # an alpha channel nobody uses is no transparency
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    Image.new("RGB", (60, 40), (90, 90, 90)).save(rotated, exif=exif)
    assert read_source(rotated).size == (40, 60)


@pytest.mark.parametrize("kind,sentence", [
    ("empty", "is empty (0 bytes)"), ("corrupt", "is not a picture that can be read"),
    ("bomb", "too large to read safely"), ("missing", "does not exist"), ("tiny", "only 8x8 pixels")])
def test_a_bad_picture_is_one_sentence_before_any_model_loads(kind: str, sentence: str, data_dir: Path,
                                                             tmp_path: Path, capsys, monkeypatch) -> None:
    from engines.sd15.checkpoint import Sd15Models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a bad picture")

    monkeypatch.setattr(Sd15Models, "ensure", refuse)
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    elif kind == "bomb":
        _bomb(path)
    elif kind == "tiny":
        Image.new("RGB", (8, 8)).save(path)
    code = app_main(["live-action", "--image", str(path), "--output", str(tmp_path / "out.png"),
                     "--base-model", "tiny-real", "--vae", "", "--data-dir", str(data_dir), "--cpu", "--offline"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and sentence in err and err.count("\n") == 0, err
    assert not (tmp_path / "out.png").exists()


def test_a_missing_model_is_one_sentence_before_any_model_loads(data_dir: Path, tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    from engines.sd15.checkpoint import Sd15Models

    monkeypatch.setattr(Sd15Models, "_load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    code = app_main(["live-action", "--image", str(data_dir / "scene-hero.png"), "--output", str(tmp_path / "o.png"),
                     "--base-model", "tiny-real", "--vae", "", "--controlnet-depth", "someone/missing-depth",
                     "--data-dir", str(data_dir), "--cpu", "--offline"])
    err = capsys.readouterr().err
    assert code == 3 and "someone/missing-depth" in err


def test_check_refuses_bad_settings_with_one_sentence(ctx, data_dir: Path) -> None:
    _, store = ctx
    image = data_dir / "scene-hero.png"
    for changes, words in ((dict(strength=0), "strength"), (dict(steps=2, strength=0.2), "leave no step"),
                           (dict(depth_start=0.8, depth_end=0.5), "start before it ends"),
                           (dict(colour_transfer="warm"), "Colour transfer"), (dict(width=512), "both the width"),
                           (dict(width=500, height=512), "multiple of 8"), (dict(output=Path("x.jpg")), ".png"),
                           (dict(sampler="Nope"), "Sampler"), (dict(prompt="(unclosed"), "prompt")):
        with pytest.raises(InvalidRequestError, match=words):
            check(LiveActionRequest(**dict(QUICK, image=image, **changes)), store)
    plan = check(LiveActionRequest(**dict(QUICK, image=image, long_side=640)), store)
    assert plan.size == (512, 640)  # 96x128 -> 480x640 -> both sides at the nearest multiple of 64


# --- the CLI ------------------------------------------------------------------------------------------------


def test_the_cli_makes_a_picture_and_a_batch(data_dir: Path, tmp_path: Path, capsys) -> None:
    common = ["--base-model", "tiny-real", "--vae", "", "--controlnet-depth", "cn-depth", "--controlnet-pose",
              "cn-pose", "--depth-model", "depth-est", "--pose-model", "pose-est", "--steps", "4", "--strength", "0.5",
              "--sampler", "DDIM", "--seed", "3", "--size", "64x64", "--depth-window", "0:0.8",
              "--data-dir", str(data_dir), "--cpu", "--offline"]
    out = tmp_path / "real.png"
    assert app_main(["live-action", "--image", str(data_dir / "clear-hero.png"), "--output", str(out), *common]) == 0
    printed = capsys.readouterr().out
    assert f"Saved {out}" in printed and "Structure" in printed or "structure" in printed.lower()
    assert out.with_suffix(".json").is_file() and (tmp_path / "real.depth.png").is_file()
    assert "Guidance End: 0.8" in dict(read_png_parameters(out)[0].extra)["ControlNet 0"]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(data_dir / "scene-hero.png", folder / "one.png")
    (folder / "two.png").write_bytes(b"")
    code = app_main(["live-action", "--input-dir", str(folder), "--output-dir", str(tmp_path / "out"), *common])
    printed = capsys.readouterr().out
    assert code == 0 and (tmp_path / "out" / "one.png").is_file() and "Skipped two.png" in printed


def test_canny_edges_are_thin_lines_on_the_outline_only() -> None:
    from engines.live_action.edges import canny

    square = Image.new("RGB", (64, 64), (0, 0, 0))
    square.paste((255, 255, 255), (16, 16, 48, 48))
    edges = np.asarray(canny(square).convert("L")) > 0
    assert canny(square).mode == "RGB" and canny(square).size == (64, 64)
    assert edges[16:48, 14:19].any(axis=1).all()  # the left side, all the way down
    assert not edges[24:40, 24:40].any() and not edges[:8].any()  # nothing inside, nothing in the empty margin
    assert edges[32].sum() <= 4  # one line per side (thin), not a band
    assert not (np.asarray(canny(Image.new("RGB", (32, 32), (90, 90, 90)))) > 0).any()  # flat: no edges


def test_a_single_file_controlnet_loads_with_its_config_from_the_checkpoint(ctx, data_dir: Path,
                                                                          tmp_path: Path) -> None:
    """A Civitai-style single .safetensors ControlNet: its config is written from the pooled UNet's, offline."""
    from live_action_models import save_tiny_controlnet_single_file

    single = save_tiny_controlnet_single_file(data_dir / "models" / "cn-depth-single.safetensors", seed=1)
    depth, pose = map_files(data_dir)
    common = dict(depth_map=depth, pose_map=pose, colour_transfer="off")
    folder = make(ctx, tmp_path / "folder", data_dir / "scene-hero.png", **common)
    file = make(ctx, tmp_path / "file", data_dir / "scene-hero.png", controlnet_depth=single.name, **common)
    assert np.abs(pixels(folder.path) - pixels(file.path)).max() <= 1  # the same weights, the same picture
