"""Latent-space Origin on a tiny random-weight VAE saved as a real diffusers folder and single file.

Training, the latent cache, resume, samples, generation and the refusals, end to end through the
CLI; the VAE loaded through the real ModelStore path each time.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engines.errors import InvalidRequestError
from engines.models import ModelStore
from engines.origin.model import checkpoints
from engines.origin.model.config import CONFIG_VERSION, OriginConfig, resolve_space, tiny_config
from engines.origin.model.latent import LatentCodec, colour_chart, fit_rgb_map, latents_to_rgb
from test_origin_train import make_dataset, run_cli, small_config
from tiny_models import _ldm_vae_state, build_tiny_vae, save_tiny_vae

RES = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("origin-latent")


@pytest.fixture(scope="module")
def vae_dir(workdir) -> Path:
    return save_tiny_vae(workdir / "vae")


@pytest.fixture(scope="module")
def dataset(workdir) -> Path:
    return make_dataset(workdir / "data")


def latent_config_file(workdir: Path, vae: Path, **train_fields) -> Path:
    config = small_config(RES, batch_size=4, warmup_steps=2, **train_fields)
    config = replace(config, model=replace(config.model, space="latent", vae=str(vae)),
                     train=replace(config.train, disk_cache=True))
    path = workdir / "latent-config.json"
    config.save(path)
    return path


def test_the_vae_loads_through_the_store_from_a_folder_and_a_single_file(workdir, vae_dir, monkeypatch):
    from safetensors.torch import save_file

    from engines.origin.model import latent

    store = ModelStore(workdir / "models", offline=True)
    codec = LatentCodec.load(str(vae_dir), store)
    identity = codec.identity
    assert identity["latent_channels"] == 4 and identity["factor"] == 2
    assert identity["scaling_factor"] == pytest.approx(0.18215) and len(identity["weights_sha256"]) == 64
    pixels = torch.rand(2, 3, RES, RES) * 2 - 1
    latents = codec.encode(pixels)
    assert latents.shape == (2, 4, RES // 2, RES // 2)
    assert codec.decode(latents).shape == (2, 3, RES, RES)
    assert codec.to_rgb(latents).shape == (2, 3, RES // 2, RES // 2)
    # The same weights as one LDM-format .safetensors file (how VAEs are shared) read with the
    # layout file the studio ships (here the tiny VAE's own): the same weights, the same identity.
    single = workdir / "single" / "tiny-vae.safetensors"
    single.parent.mkdir()
    save_file({k: v.contiguous() for k, v in _ldm_vae_state(build_tiny_vae()).items()}, str(single))
    monkeypatch.setattr(latent, "SINGLE_FILE_CONFIG", vae_dir)
    assert LatentCodec.load(str(single), store).weights_sha256 == codec.weights_sha256


def test_per_channel_latent_statistics_standardise_and_round_trip(workdir):
    """A VAE config with diffusers' latents_mean/latents_std: model latents are standardised per
    channel, decode undoes exactly that, the identity records them; a wrong count is refused."""
    from engines.errors import CorruptModelError

    store = ModelStore(workdir / "models", offline=True)
    plain = LatentCodec.load(str(save_tiny_vae(workdir / "vae-scalar", seed=3)), store)
    pixels = torch.rand(3, 3, RES, RES) * 2 - 1
    raw = plain.encode(pixels) / plain.scaling_factor  # the posterior means
    mean, std = raw.mean(dim=(0, 2, 3)).tolist(), raw.std(dim=(0, 2, 3)).tolist()
    vae = build_tiny_vae(seed=3)
    vae.register_to_config(scaling_factor=1.0, latents_mean=mean, latents_std=std)
    vae.save_pretrained(str(workdir / "vae-channels"))
    codec = LatentCodec.load(str(workdir / "vae-channels"), store)
    latents = codec.encode(pixels)
    assert torch.allclose(latents.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(latents.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4)
    assert codec.identity["latents_mean"] == pytest.approx(mean) and codec.identity["latents_std"] == pytest.approx(std)
    # the same posterior means reach the decoder either way: the same pictures
    assert torch.allclose(codec.decode(latents), plain.decode(plain.encode(pixels)), atol=1e-4)
    vae.register_to_config(latents_mean=mean[:3], latents_std=std[:3])
    vae.save_pretrained(str(workdir / "vae-bad"))
    with pytest.raises(CorruptModelError, match="latents_mean/latents_std for 3/3 channels"):
        LatentCodec.load(str(workdir / "vae-bad"), store)


def test_the_rgb_map_recovers_a_linear_vae_exactly():
    """A VAE whose latents are a known affine function of colour: the chart fit finds that function back."""
    chart, colours = colour_chart(8)
    true_map = torch.tensor([[0.5, -0.2, 0.1], [0.3, 0.6, -0.4], [-0.1, 0.2, 0.7], [0.2, 0.1, 0.3],
                             [0.05, -0.1, 0.02]])
    # latents = A @ rgb + c per pixel, with A the inverse direction of true_map's first 3 rows
    a = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    small = torch.nn.functional.avg_pool2d(chart, 8)  # factor 8 -> [1, 3, 32, 32]
    latents = torch.einsum("dc,bchw->bdhw", a, small) + 0.3
    fitted = fit_rgb_map(latents, colours, 8)
    rgb = latents_to_rgb(latents, fitted)
    assert torch.allclose(rgb, small, atol=1e-3)
    assert true_map.shape == fitted.shape


def test_space_auto_resolves_by_size_and_old_configs_stay_pixel():
    config = tiny_config(32)
    assert resolve_space(config).model.space == "pixel"
    big = replace(config, model=replace(config.model, resolution=256))
    assert resolve_space(big).model.space == "latent"
    assert resolve_space(big, "pixel").model.space == "pixel"
    with pytest.raises(InvalidRequestError, match="space"):
        resolve_space(config, "voxel")
    old = config.to_dict()
    old["version"] = 2
    for key in ("space", "vae", "latent_factor"):
        old["model"].pop(key)
    migrated = OriginConfig.from_dict(old)
    assert migrated.model.space == "pixel" and migrated.model.latent_factor == 1 and migrated.version == CONFIG_VERSION


def test_latent_samplers_do_not_clip_the_clean_estimate_to_the_pixel_range():
    """Pixels live in [-1, 1], latents do not: a latent model's DDIM/DDPM steps keep an estimate of 1.8
    (clipping it drew red as yellow and blue as azure in the learns-benchmark)."""
    from engines.origin.generation.sampler import make_scheduler

    pixel = resolve_space(tiny_config(32))
    latent = replace(pixel, model=replace(pixel.model, space="latent"))
    for name in ("ddim", "ddpm"):
        outcomes = {}
        for config in (pixel, latent):
            scheduler = make_scheduler(name, config)
            scheduler.set_timesteps(10)
            t = scheduler.timesteps[-1]  # the last step: its clean estimate is (nearly) the output
            alpha = scheduler.alphas_cumprod[t]
            x0 = torch.full((1, 4, 2, 2), 1.8)
            sample = alpha.sqrt() * x0  # noise-free: v = sqrt(alpha) * 0 - sqrt(1 - alpha) * x0
            v = -(1 - alpha).sqrt() * x0
            out = scheduler.step(v, t, sample, generator=torch.Generator().manual_seed(0))
            outcomes[config.model.space] = float(out.pred_original_sample.max())
        assert outcomes["pixel"] == pytest.approx(1.0) and outcomes["latent"] == pytest.approx(1.8, abs=1e-3), name


def _cache_params(cache_dir: Path) -> list[str]:
    from safetensors import safe_open

    params = []
    for file in cache_dir.rglob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            params.append(handle.metadata()["params"])
    return params


def test_latent_training_resume_samples_and_generation_through_the_cli(workdir, vae_dir, dataset, capsys):
    from app import main as app_main
    from engines.origin.generation.sampler import read_png_parameters

    studio = workdir / "studio"
    run = workdir / "run"
    config_file = latent_config_file(workdir, vae_dir, sample_every_steps=2)
    assert run_cli("--data", str(dataset), "--run", str(run), "--config", str(config_file), "--max-steps", "2",
                   data_dir=studio) == 0
    saved = json.loads((run / "config.json").read_text())["model"]
    assert (saved["space"], saved["in_channels"], saved["latent_factor"]) == ("latent", 4, 2)
    latest = checkpoints.find_latest(run)
    assert latest.meta["space"] == "latent" and latest.meta["vae"]["id"] == str(vae_dir)
    # The cache holds one latent per image, keyed by the VAE's weights, and nothing else.
    params = _cache_params(studio / "cache" / "origin")
    assert len(params) == 8 and all(p.startswith("latent;") and "vae=" in p for p in params)
    from safetensors.torch import load_file

    tensor = load_file(str(next((studio / "cache" / "origin").rglob("*.safetensors"))))["tensor"]
    assert tensor.shape == (4, RES // 2, RES // 2) and tensor.dtype == torch.float16
    samples = sorted((run / "samples").glob("step-*.png"))
    assert samples
    from PIL import Image

    with Image.open(samples[0]) as image:
        assert image.size == (RES, RES)
    main_log = (run / "logs" / "main.log").read_text()
    assert "latent cache: 8 of 8 images encoded" in main_log

    # Resume: the latents come from the cache, the VAE is the recorded one.
    assert run_cli("--run", str(run), "--resume", "--max-steps", "4", data_dir=studio) == 0
    assert checkpoints.find_latest(run).step == 4
    assert "latent cache: 0 of 8 images encoded" in (run / "logs" / "main.log").read_text()

    # Resume in the other space is refused with a sentence.
    capsys.readouterr()
    assert run_cli("--run", str(run), "--resume", "--space", "pixel", "--max-steps", "6", data_dir=studio) == 2
    assert "trained in latent space; it cannot resume in pixel space" in capsys.readouterr().err

    # Generation: decoded by the VAE, the enhancement chain and an upscale on the decoded picture.
    out = workdir / "panel.png"
    code = app_main(["generate", "--model", str(run), "--prompt", "bar at position 2, ink", "--output", str(out),
                     "--steps", "3", "--seed", "5", "--upscale", "2", "--reference", str(dataset / "panel_1.png"),
                     "--data-dir", str(studio), "--cpu", "--offline"])
    assert code == 0
    parameters = read_png_parameters(out)
    assert parameters["space"] == "latent" and parameters["vae"]["weights_sha256"] == latest.meta["vae"]["weights_sha256"]
    with Image.open(out) as image:
        assert image.size == (2 * RES, 2 * RES)


def test_a_latent_checkpoint_refuses_a_missing_or_different_vae(workdir, vae_dir, dataset, capsys):
    from app import main as app_main

    studio = workdir / "studio-2"
    run = workdir / "run-2"
    moved = save_tiny_vae(workdir / "vae-2")
    config_file = latent_config_file(workdir, moved, sample_every_steps=0)
    assert run_cli("--data", str(dataset), "--run", str(run), "--config", str(config_file), "--max-steps", "1",
                   data_dir=studio) == 0
    args = ["generate", "--model", str(run), "--prompt", "ink", "--output", str(workdir / "x.png"), "--steps", "1",
            "--data-dir", str(studio), "--cpu", "--offline"]
    save_tiny_vae(moved, seed=1)  # other weights in the same place
    capsys.readouterr()
    assert app_main(args) == 4
    assert "other weights" in capsys.readouterr().err
    assert run_cli("--run", str(run), "--resume", "--max-steps", "2", data_dir=studio) == 4
    import shutil

    shutil.rmtree(moved)
    capsys.readouterr()
    assert app_main(args) == 3
    assert "needs its VAE" in capsys.readouterr().err
    assert not (workdir / "x.png").exists()
    # The same weights somewhere else: --vae says where, the fingerprint still has to match.
    assert app_main([*args, "--vae", str(save_tiny_vae(workdir / "vae-3"))]) == 0
    assert (workdir / "x.png").is_file()
    assert app_main([*args, "--vae", str(save_tiny_vae(workdir / "vae-4", seed=2))]) == 4


def test_a_latent_run_needs_a_resolution_the_vae_and_unet_can_divide(workdir, dataset, capsys):
    vae8 = save_tiny_vae(workdir / "vae-8x", levels=4)  # 8x, as SD's: with 2 UNet levels, multiples of 16
    config = small_config(RES)
    config = replace(config, model=replace(config.model, space="latent", vae=str(vae8), resolution=24))
    path = workdir / "bad-latent.json"
    config.save(path)
    capsys.readouterr()
    assert run_cli("--data", str(dataset), "--run", str(workdir / "run-bad"), "--config", str(path),
                   "--max-steps", "1", data_dir=workdir / "studio-3") == 2
    assert "multiple of 16" in capsys.readouterr().err
