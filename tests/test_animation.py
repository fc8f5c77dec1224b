"""Animation end to end on tiny random-weight models in the real formats: an SD 1.5 checkpoint, a motion adapter
(folder and single file), an RGB SparseCtrl, an IP-Adapter and a motion LoRA, saved to disk and loaded through the
studio's loaders. The motion UNet against diffusers' own, one copy of every weight, each way of animating a still,
long videos through FreeNoise windows, prompt travel, the files written, cancel, and `app.py animate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animation_models import (save_tiny_motion_adapter, save_tiny_motion_adapter_single_file, save_tiny_motion_lora,
                              save_tiny_sparsectrl)
from app import main as app_main
from engines.animation.animate import diffuse, ensure_models, make_animation
from engines.animation.request import AnimationRequest, check
from engines.errors import Cancelled, InvalidRequestError, StudioError
from engines.hardware import HardwareManager
from engines.models import ModelStore
from engines.progress import CancelToken
from engines.settings import MachineSettings
from tiny_models import cpu_engines, save_tiny_ip_adapter

QUICK = dict(base_model="tiny-anime", vae="", motion_adapter="tiny-motion", steps=3, cfg=2.0, seed=3, width=64,
             height=64, frames=8, prompt="ink", negative="", clip_skip=1)
RED, BLUE = (200, 40, 40), (40, 60, 200)


def still(colour: tuple[int, int, int], size: tuple[int, int] = (80, 64)) -> Image.Image:
    from PIL import ImageDraw

    image = Image.new("RGB", size, (235, 235, 225))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size[0] * 0.3, size[1] * 0.1, size[0] * 0.7, size[1] * 0.5), fill=(240, 200, 170))
    draw.rectangle((size[0] * 0.25, size[1] * 0.5, size[0] * 0.75, size[1] * 0.95), fill=colour)
    return image


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    data = tmp_path_factory.mktemp("animation-data")
    models = data / "models"
    shutil.copytree(tiny_sd_dir, models / "tiny-anime")
    save_tiny_motion_adapter(models / "tiny-motion", seed=1)
    save_tiny_motion_adapter(models / "short-motion", seed=1, max_frames=8)
    save_tiny_motion_adapter_single_file(models / "mm_tiny.safetensors", seed=1)
    save_tiny_sparsectrl(models / "tiny-sparsectrl", seed=2)
    save_tiny_ip_adapter(models / "h94--IP-Adapter", seed=4)
    save_tiny_motion_lora(models / "zoom-lora.safetensors", seed=5)
    still(RED).save(data / "red.png")
    still(BLUE).save(data / "blue.png")
    return data


@pytest.fixture(scope="module")
def ctx(data_dir: Path):
    return cpu_engines(data_dir)


def frames_of(ctx, **changes) -> np.ndarray:
    """The decoded frames of one job (no files), as a float array [frames, height, width, 3]."""
    hardware, store = ctx
    plan = check(AnimationRequest(**{**QUICK, **changes}), store)
    names = ensure_models(plan, hardware, store)
    frames, _ = diffuse(plan, plan.request.seed, hardware, store, names, lambda *a: None, None, 100)
    return np.stack([np.asarray(f, dtype=np.float32) for f in frames])


# --- the motion UNet: diffusers' pixels, one copy of each weight -------------------------------------------------


def test_the_motion_unet_shares_every_weight_and_gives_diffusers_pixels(ctx) -> None:
    import torch
    from diffusers import AnimateDiffPipeline, UNetMotionModel

    from engines.animation.motion import motion_unet, use_free_noise
    from engines.models import derive_pipeline

    hardware, store = ctx
    plan = check(AnimationRequest(**QUICK), store)
    names = ensure_models(plan, hardware, store)
    with hardware.use(names["base"]) as base, hardware.use(names["motion"]) as adapter:
        before = {k: v.clone() for k, v in adapter.state_dict().items()}
        shared = motion_unet(base.unet, adapter)
        pointers = {p.data_ptr() for p in (*base.unet.parameters(), *adapter.parameters())}
        assert all(p.data_ptr() in pointers for p in shared.parameters())  # nothing copied
        copied = UNetMotionModel.from_unet2d(base.unet, adapter)  # diffusers' way: a copy of everything
        assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in copied.parameters())

        def run(unet, frames: int, windows: bool) -> np.ndarray:
            pipe = derive_pipeline(AnimateDiffPipeline, base, unet=unet, motion_adapter=adapter)
            pipe.set_progress_bar_config(disable=True)
            if windows:
                pipe.enable_free_noise(context_length=8, context_stride=2)
            return pipe(prompt={0: "ink", 10: "red"} if windows else "ink", num_frames=frames, height=32, width=32,
                        num_inference_steps=2, guidance_scale=2.0, output_type="np",
                        generator=torch.Generator().manual_seed(0)).frames[0]

        assert np.array_equal(run(shared, 8, False), run(copied, 8, False))
        windowed = motion_unet(base.unet, adapter)
        use_free_noise(windowed, 8, 2)
        assert np.array_equal(run(windowed, 20, True), run(UNetMotionModel.from_unet2d(base.unet, adapter), 20, True))
        # FreeNoise's blocks lived in the job's copy: the pooled adapter is as it was loaded.
        from diffusers.models.attention import FreeNoiseTransformerBlock

        assert not any(isinstance(m, FreeNoiseTransformerBlock) for m in adapter.modules())
        assert all(torch.equal(before[k], v) for k, v in adapter.state_dict().items())


def test_the_engine_gives_diffusers_frames(ctx, data_dir: Path) -> None:
    """Text-to-video with one plain prompt: the engine's frames are raw AnimateDiffPipeline's, pixel for pixel
    (A1111's conditioning equals CLIP's here, the shared motion UNet equals the copied one, chunks decode alike)."""
    import torch
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

    from engines.animation.animate import MOTION_SCHEDULE

    models = data_dir / "models"
    adapter = MotionAdapter.from_pretrained(str(models / "tiny-motion"))
    raw = AnimateDiffPipeline.from_pretrained(str(models / "tiny-anime"), motion_adapter=adapter)
    raw.scheduler = DDIMScheduler.from_config({**raw.scheduler.config, **MOTION_SCHEDULE})
    raw.set_progress_bar_config(disable=True)
    video = raw("ink", negative_prompt="", num_frames=8, height=64, width=64, num_inference_steps=3,
                guidance_scale=2.0, generator=torch.Generator("cpu").manual_seed(3)).frames[0]
    expected = np.stack([np.asarray(frame.convert("RGB"), dtype=np.float32) for frame in video])
    assert np.array_equal(frames_of(ctx), expected)


def test_a_single_file_motion_adapter_is_the_folder(ctx) -> None:
    from engines.animation.motion import adapter_config_from_keys, _shapes

    folder = frames_of(ctx)
    single = frames_of(ctx, motion_adapter="mm_tiny.safetensors")
    assert np.array_equal(folder, single)
    config = adapter_config_from_keys(_shapes(ctx[1].resolve("mm_tiny.safetensors").path), 4)
    assert config["block_out_channels"] == [8, 16] and config["motion_max_seq_length"] == 32
    assert config["use_motion_mid_block"] is False


def test_the_motion_modules_move_the_frames(ctx) -> None:
    """Frames differ from each other, and the same seed gives the same frames."""
    video = frames_of(ctx)
    assert video.shape == (8, 64, 64, 3)
    assert np.abs(video[0] - video[-1]).max() > 5
    assert np.array_equal(video, frames_of(ctx))


# --- a still, animated -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["video2video", "sparsectrl", "reference"])
def test_the_still_conditions_the_frames(ctx, data_dir: Path, mode: str) -> None:
    """Two stills, the same prompt and seed: two different videos, and frame 0 nearer its own still."""
    import torch

    extra = {"still_mode": mode, "sparsectrl_model": "tiny-sparsectrl", "identity_scale": 1.5}
    red = frames_of(ctx, image=data_dir / "red.png", **extra)
    blue = frames_of(ctx, image=data_dir / "blue.png", **extra)
    assert np.abs(red - blue).mean() > 0.5 and np.abs(red - blue).max() > 5
    if mode != "video2video":
        return
    # The tiny VAE is random: "its still" is the still as this VAE draws it (encoded and decoded).
    hardware, store = ctx
    plan = check(AnimationRequest(**QUICK, image=data_dir / "red.png"), store)
    with hardware.use(ensure_models(plan, hardware, store)["base"]) as base:
        pixels = base.image_processor.preprocess(plan.still)
        with torch.no_grad():
            again = base.vae.decode(base.vae.encode(pixels).latent_dist.mean).sample
        seen = np.asarray(base.image_processor.postprocess(again, output_type="pil")[0], dtype=np.float32)
    assert np.abs(red[0] - seen).mean() < np.abs(blue[0] - seen).mean()


def test_identity_adds_the_ip_adapter_to_any_mode(ctx, data_dir: Path) -> None:
    plain = frames_of(ctx, image=data_dir / "red.png")
    kept = frames_of(ctx, image=data_dir / "red.png", identity=True, identity_scale=1.5)
    assert not np.array_equal(plain, kept)


# --- long videos, prompt travel, FreeInit, motion LoRAs -------------------------------------------------------------


def test_48_frames_through_context_windows(ctx) -> None:
    video = frames_of(ctx, frames=48, context=16, stride=4, steps=2)
    assert video.shape == (48, 64, 64, 3)
    assert np.isfinite(video).all() and np.abs(video[0] - video[47]).max() > 1


def test_prompt_travel_changes_the_frames_after_its_keyframe(ctx) -> None:
    still_prompt = frames_of(ctx, frames=16, context=8, stride=2, prompt="ink\n0: red\n15: red")
    travelled = frames_of(ctx, frames=16, context=8, stride=2, prompt="ink\n0: red\n15: blue sky, night")
    assert np.abs(still_prompt[0] - travelled[0]).mean() < np.abs(still_prompt[15] - travelled[15]).mean()


def test_free_init_and_a_motion_lora(ctx) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    plain = frames_of(ctx)
    assert np.abs(plain - frames_of(ctx, free_init=True, free_init_iters=2)).max() > 1
    moved = frames_of(ctx, motion_lora="zoom-lora.safetensors")
    assert np.abs(plain - moved).max() > 1
    assert np.array_equal(plain, frames_of(ctx, motion_lora="zoom-lora.safetensors", motion_scale=0.0))
    # The LoRA was the job's: the pooled adapter is unwrapped and the next video is the plain one again.
    hardware, _ = ctx
    with hardware.use("motion:tiny-motion") as adapter:
        assert not any(isinstance(m, BaseTunerLayer) for m in adapter.modules())
    assert np.array_equal(plain, frames_of(ctx))


# --- the job: files, cancel, the pool -----------------------------------------------------------------------------------


def test_a_video_with_its_sidecar_frames_and_score(ctx, data_dir: Path, tmp_path: Path) -> None:
    from engines.animation.video_io import read_video_info

    hardware, store = ctx
    steps: list[tuple[int, int, str]] = []
    previews: list = []

    def on_step(step: int, total: int, message: str = "", preview=None) -> None:
        steps.append((step, total, message))
        previews.extend([preview] if preview is not None else [])

    request = AnimationRequest(**QUICK, image=data_dir / "red.png", output=tmp_path / "hero.gif", loop="ping-pong",
                               frames_dir=tmp_path / "frames", preview_every=1)
    result = make_animation(request, hardware, store, on_step=on_step, outputs=tmp_path)
    # A strip of four frames every step (the tiny VAE halves once: 32 px latents, shown 4x).
    assert len(previews) == 1 and previews[0].size == (4 * 32 * 4, 32 * 4)  # strength 0.6 of 3 steps: 1 step
    info = read_video_info(result.path)
    assert info.frames == result.frames == 14 and round(info.fps) == 8  # 8 frames, and 6 on the way back
    assert len(result.frame_paths) == 8 and all(p.is_file() for p in result.frame_paths)
    assert result.first_frame.is_file() and Image.open(result.first_frame).size == (64, 64)
    sidecar = json.loads(result.sidecar_path.read_text(encoding="utf-8"))
    assert sidecar["summary"] == result.report.summary() and sidecar["request"]["seed"] == 3
    assert sidecar["mode"] == "video2video" and 'AnimateDiff: "model: tiny-motion, video_length: 8' in sidecar["parameters"]
    assert steps[-1][0] == steps[-1][1] and all(b >= a for (a, *_), (b, *_) in zip(steps, steps[1:]))


def test_cancel_stops_the_job_and_releases_the_gpu_lock(ctx, tmp_path: Path) -> None:
    hardware, store = ctx
    token = CancelToken()

    def on_step(step: int, total: int, message: str = "", preview=None) -> None:
        if message == "Animating":
            token.cancel()

    with pytest.raises(Cancelled):
        make_animation(AnimationRequest(**QUICK, output=tmp_path / "stop.mp4"), hardware, store, on_step=on_step,
                       cancel=token)
    assert not (tmp_path / "stop.mp4").exists()
    with hardware.gpu_job("after"):  # free again at once
        pass


def test_live_action_and_animation_share_one_checkpoint_under_a_tight_budget(data_dir: Path) -> None:
    """The pool proves it: the checkpoint's components are registered once, and an animation job adds only the
    motion adapter to what the pool holds; the motion UNet's weights are the pooled UNet's."""
    from engines.sd15.checkpoint import CheckpointRef, Sd15Models

    settings = MachineSettings(data_dir=data_dir, cpu=True, offline=True)
    hardware = HardwareManager(settings, device_budget_bytes=4 * 2**20, host_budget_bytes=64 * 2**20)
    store = ModelStore(data_dir / "models", offline=True)
    base_name = Sd15Models(hardware, store).ensure(CheckpointRef("tiny-anime"))
    with hardware.use(base_name) as base:
        ids = {name: id(module) for name, module in base.components.items() if hasattr(module, "parameters")}
    before = hardware.pool.device_bytes() + hardware.pool.host_bytes()
    plan = check(AnimationRequest(**QUICK), store)
    names = ensure_models(plan, hardware, store)
    diffuse(plan, 1, hardware, store, names, lambda *a: None, None, 10)
    assert names["base"] == base_name and sorted(hardware.pool.names()) == sorted([base_name, names["motion"]])
    with hardware.use(base_name) as base, hardware.use(names["motion"]) as adapter:
        assert {n: id(m) for n, m in base.components.items() if hasattr(m, "parameters")} == ids
        from engines.hardware.placement import module_bytes

        held = hardware.pool.device_bytes() + hardware.pool.host_bytes()
        assert held == before + module_bytes(adapter)  # the UNet is not counted (nor held) twice


def test_the_offload_hooks_of_the_pooled_unet_run_for_the_motion_unet(ctx) -> None:
    """Group offload's hooks sit on the pooled UNet's blocks, which the motion UNet never calls: they are run
    around its blocks instead (on a CPU both places are RAM, so the calls are what is checked)."""
    import torch
    from diffusers.hooks import apply_group_offloading
    from diffusers.hooks.group_offloading import ModuleGroup

    from engines.animation.motion import motion_unet
    from engines.hardware.placement import follow_offload_hooks
    from tiny_models import build_tiny_sd_pipeline
    from animation_models import build_tiny_motion_adapter

    unet, adapter = build_tiny_sd_pipeline(0).unet, build_tiny_motion_adapter(1)
    plain = motion_unet(unet, adapter)
    # The pipelines hand the UNet one text embedding per frame.
    sample, step, text = torch.randn(1, 4, 4, 16, 16), torch.tensor([10]), torch.randn(4, 77, 16)
    with torch.no_grad():
        expected = plain(sample, step, text).sample
    apply_group_offloading(unet, onload_device=torch.device("cpu"), offload_type="block_level",
                           num_blocks_per_group=1)
    onloads: list[str] = []
    original = ModuleGroup.onload_
    ModuleGroup.onload_ = lambda self: (onloads.append(id(self)), original(self))[1]
    try:
        shared = motion_unet(unet, adapter)
        handles = follow_offload_hooks([(unet, shared), *zip(unet.down_blocks, shared.down_blocks),
                                        (unet.mid_block, shared.mid_block), *zip(unet.up_blocks, shared.up_blocks)])
        with torch.no_grad():
            result = shared(sample, step, text).sample
    finally:
        ModuleGroup.onload_ = original
    assert len(set(onloads)) >= len(unet.down_blocks) + len(unet.up_blocks)  # every block's group came in
    assert torch.equal(result, expected)
    for handle in handles:
        handle.remove()


# --- bad input: one sentence before anything loads ------------------------------------------------------------------


@pytest.mark.parametrize("changes, words", [
    (dict(frames=1), "number of frames"),
    (dict(stride=16, context=16), "stride"),
    (dict(width=70), "multiple of 8"),
    (dict(output=Path("x.avi")), ".mp4"),
    (dict(still_mode="dance"), "still mode"),
    (dict(frames=48, free_init=True), "FreeInit"),
    (dict(frames=16, prompt="a\n0: b\n20: c"), "frame 20"),
    (dict(prompt="a\n0: b\n0: c"), "twice"),
    (dict(motion_adapter="no-such-adapter"), "no-such-adapter"),
    (dict(identity=True), "still"),
])
def test_bad_requests_are_one_sentence(ctx, changes: dict, words: str) -> None:
    with pytest.raises(StudioError, match=words):
        check(AnimationRequest(**{**QUICK, **changes}), ctx[1])


def test_sparsectrl_refuses_long_videos_and_a_short_adapter_refuses_a_wide_window(ctx, data_dir: Path) -> None:
    hardware, store = ctx
    with pytest.raises(InvalidRequestError, match="SparseCtrl"):
        check(AnimationRequest(**{**QUICK, "frames": 40}, image=data_dir / "red.png", still_mode="sparsectrl"), store)
    plan = check(AnimationRequest(**{**QUICK, "motion_adapter": "short-motion", "context": 16, "frames": 24}), store)
    with pytest.raises(InvalidRequestError, match="at most 8 frames"):
        ensure_models(plan, hardware, store)
    assert not hardware.is_registered("motion:short-motion")


def _fail_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a request that should have been refused")

    monkeypatch.setattr(ModelStore, "load_pipeline", refuse)
    monkeypatch.setattr(ModelStore, "load_model", refuse)


def test_the_cli_makes_a_video(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from engines.animation.video_io import read_video_info

    out = tmp_path / "walk.webm"
    code = app_main(["--data-dir", str(data_dir), "--cpu", "--offline", "animate", "--output", str(out),
                     "--base-model", "tiny-anime", "--vae", "", "--motion-adapter", "tiny-motion", "--prompt", "ink",
                     "--negative", "", "--frames", "6", "--fps", "12", "--steps", "2", "--seed", "4",
                     "--size", "64x64", "--frames-dir", str(tmp_path / "frames")])
    assert code == 0
    info = read_video_info(out)
    assert info.frames == 6 and round(info.fps) == 12 and info.size == (64, 64)
    assert len(list((tmp_path / "frames").glob("walk-*.png"))) == 6
    assert "Saved" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--image", "missing.png"], "does not exist"),
    (["--frames", "0"], "number of frames"),
    (["--motion-adapter", "nowhere"], "nowhere"),
    (["--size", "64x68"], "multiple of 8"),
])
def test_the_cli_refuses_bad_input_before_loading(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture, args: list, words: str) -> None:
    _fail_loading(monkeypatch)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    code = app_main(["--data-dir", str(data_dir), "--cpu", "--offline", "animate", "--output",
                     str(tmp_path / "x.mp4"), "--base-model", "tiny-anime", "--motion-adapter", "tiny-motion", *args])
    assert code != 0
    assert words in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_the_cli_refuses_a_broken_still(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    _fail_loading(monkeypatch)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    code = app_main(["--data-dir", str(data_dir), "--cpu", "--offline", "animate", "--output", str(tmp_path / "x.gif"),
                     "--base-model", "tiny-anime", "--motion-adapter", "tiny-motion", "--image", str(broken)])
    assert code != 0 and "still" in capsys.readouterr().err.lower()


# --- prompt travel, as sd-webui-animatediff writes it ------------------------------------------------------------------


def test_prompt_travel_is_parsed_as_sd_webui_animatediff_writes_it() -> None:
    from engines.animation.prompt_travel import parse_prompt_travel

    travel = parse_prompt_travel("masterpiece, 1girl\n0: closed eyes\n8: open eyes,\nsmile\n16: looking at viewer\n"
                                 "city at night")
    assert travel.keyframes == (0, 8, 16)
    assert travel.prompts == ("masterpiece, 1girl, closed eyes, city at night",
                              "masterpiece, 1girl, open eyes, smile, city at night",
                              "masterpiece, 1girl, looking at viewer, city at night")
    assert travel.prompt_at(12) == travel.prompts[1]
    late = parse_prompt_travel("head\n4: a\n12: b")  # frames before the first keyframe hold its prompt
    assert late.keyframes == (0, 4, 12) and late.prompts[0] == late.prompts[1] == "head, a"
    plain = parse_prompt_travel("1girl, (red scarf:1.2)\nwind")
    assert plain.keyframes == (0,) and plain.prompts == ("1girl, (red scarf:1.2) wind",)
    assert parse_prompt_travel("").prompts == ("",)
