"""The SD 1.5 layer end to end on tiny random-weight checkpoints in the real formats: the engine against raw
diffusers, A1111's prompt conditioning, LoRAs and embeddings in the pooled pipeline, hires fix, PNG parameters
and `app.py generate` with either backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.errors import Cancelled, InvalidRequestError, ModelNotFoundError
from engines.hardware import HardwareManager
from engines.models import ModelStore
from engines.progress import CancelToken
from engines.settings import MachineSettings
from engines.sd15.png_params import read_png_parameters
from engines.sd15.request import Sd15Request
from engines.sd15.txt2img import generate
from tiny_models import cpu_engines, save_tiny_embedding, save_tiny_ip_adapter, save_tiny_kohya_lora, save_tiny_vae

BASE = "stable-diffusion-v1-5--stable-diffusion-v1-5"  # where a single file finds its base model's configs
QUICK = dict(steps=2, cfg=2.0, width=64, height=64, sampler="DDIM", clip_skip=1, seed=5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path, tiny_sd_single_file: Path) -> Path:
    data = tmp_path_factory.mktemp("sd15-data")
    models = data / "models"
    shutil.copytree(tiny_sd_dir, models / "tiny-anime")
    shutil.copytree(tiny_sd_dir, models / BASE)
    shutil.copy(tiny_sd_single_file, models / "tiny-anime-v2.safetensors")
    save_tiny_kohya_lora(models / "loras" / "styles" / "Lineart.safetensors", seed=1)
    save_tiny_embedding(models / "embeddings" / "easyneg.safetensors", seed=2)
    save_tiny_embedding(models / "embeddings" / "oldstyle.pt", seed=3, vectors=1)
    save_tiny_ip_adapter(models / "h94--IP-Adapter", seed=4)
    save_tiny_vae(models / "other-vae", seed=7)
    for name, colour in (("red.png", (220, 30, 40)), ("blue.png", (20, 40, 230))):
        Image.new("RGB", (48, 48), colour).save(data / name)
    Image.new("RGBA", (48, 48), (0, 0, 0, 0)).save(data / "clear.png")
    return data


@pytest.fixture(scope="module")
def ctx(data_dir: Path):
    return cpu_engines(data_dir)


def make(ctx, tmp_path: Path, **changes):
    hardware, store = ctx
    values = dict(model="tiny-anime", prompt="ink manga", output_dir=tmp_path, **QUICK)
    values.update(changes)
    return generate(Sd15Request(**values), hardware, store, outputs=tmp_path)


def pixels(result, index: int = 0) -> np.ndarray:
    return np.asarray(Image.open(result.pictures[index].path).convert("RGB"), dtype=np.int16)


def raw_diffusers(folder: Path, prompt: str = "ink manga", skip_layers: int = 0) -> np.ndarray:
    """diffusers' own pipeline; ``skip_layers`` as its ``clip_skip`` computes it (hidden state
    -(n + 1), then the final layer norm), written out because diffusers 0.42 reaches for
    ``text_encoder.text_model``, which transformers 5 no longer has."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    kwargs: dict = dict(prompt=prompt, negative_prompt="")
    if skip_layers:
        def embed(text: str):
            ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt").input_ids
            hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-(skip_layers + 1)]
            return pipe.text_encoder.final_layer_norm(hidden)

        with torch.no_grad():
            kwargs = dict(prompt_embeds=embed(prompt), negative_prompt_embeds=embed(""))
    image = pipe(**kwargs, num_inference_steps=2, guidance_scale=2.0, height=64, width=64,
                 generator=torch.Generator("cpu").manual_seed(5)).images[0]
    return np.asarray(image, dtype=np.int16)


def test_the_engine_gives_raw_diffusers_pixels_and_a1111_parameters(ctx, data_dir: Path, tmp_path: Path) -> None:
    result = make(ctx, tmp_path)
    assert np.array_equal(pixels(result), raw_diffusers(data_dir / "models" / "tiny-anime"))
    parameters, inkframe = read_png_parameters(result.pictures[0].path)
    assert (parameters.prompt, parameters.steps, parameters.sampler, parameters.seed, parameters.cfg) == (
        "ink manga", 2, "DDIM", 5, 2.0)
    assert (parameters.width, parameters.height, parameters.clip_skip, parameters.model) == (64, 64, 1, "tiny-anime")
    assert inkframe["backend"] == "sd15" and inkframe["request"]["seed"] == 5

    # A1111's clip skip 2 is diffusers' clip_skip=1 (one layer skipped).
    skipped = make(ctx, tmp_path, clip_skip=2)
    assert np.array_equal(pixels(skipped), raw_diffusers(data_dir / "models" / "tiny-anime", skip_layers=1))
    assert not np.array_equal(pixels(skipped), pixels(result))


def test_weights_and_long_prompts_change_the_picture_and_neutral_weights_do_not(ctx, tmp_path: Path) -> None:
    plain = pixels(make(ctx, tmp_path))
    assert np.array_equal(pixels(make(ctx, tmp_path, prompt="(ink:1.0) manga")), plain)
    assert not np.array_equal(pixels(make(ctx, tmp_path, prompt="(ink:1.6) manga")), plain)
    # Past 75 tokens the prompt goes on in a second chunk instead of being cut (diffusers alone cuts it).
    filler = "manga, " * 40
    long_a, long_b = (pixels(make(ctx, tmp_path, prompt=filler + tail)) for tail in ("ink", "ink ink ink manga"))
    assert not np.array_equal(long_a, long_b)


def test_a_lora_by_tag_or_picker_changes_the_picture_and_goes_away_after(ctx, tmp_path: Path) -> None:
    plain = pixels(make(ctx, tmp_path))
    tagged = make(ctx, tmp_path, prompt="ink manga <lora:lineart:0.9>")
    assert not np.array_equal(pixels(tagged), plain)
    picked = make(ctx, tmp_path, loras=(("Lineart", 0.9),))
    assert np.array_equal(pixels(picked), pixels(tagged))
    assert np.array_equal(pixels(make(ctx, tmp_path, prompt="ink manga <lora:lineart:0>")), plain)
    assert np.array_equal(pixels(make(ctx, tmp_path)), plain)  # the pooled pipeline is clean again
    parameters, inkframe = read_png_parameters(tagged.pictures[0].path)
    assert [name for name, _ in parameters.loras] == ["Lineart"] and len(parameters.loras[0][1]) == 12
    assert inkframe["loras"][0]["weight"] == pytest.approx(0.9)


def test_embeddings_apply_where_their_name_is_written(ctx, tmp_path: Path) -> None:
    plain = pixels(make(ctx, tmp_path))
    assert not np.array_equal(pixels(make(ctx, tmp_path, negative="easyneg")), plain)
    assert not np.array_equal(pixels(make(ctx, tmp_path, prompt="ink manga, oldstyle")), plain)
    assert np.array_equal(pixels(make(ctx, tmp_path)), plain)


def test_a_vae_override_decodes_the_same_latents_differently(ctx, tmp_path: Path) -> None:
    plain = pixels(make(ctx, tmp_path))
    other = make(ctx, tmp_path, vae="other-vae")
    assert not np.array_equal(pixels(other), plain)
    parameters, inkframe = read_png_parameters(other.pictures[0].path)
    assert ("VAE", "other-vae") in parameters.extra and inkframe["request"]["vae"] == "other-vae"
    assert np.array_equal(pixels(make(ctx, tmp_path)), plain)  # the checkpoint's own VAE is still pooled


def test_single_file_checkpoint_matches_its_folder(ctx, tmp_path: Path) -> None:
    folder = pixels(make(ctx, tmp_path))
    single = pixels(make(ctx, tmp_path, model="tiny-anime-v2.safetensors"))
    assert np.abs(single - folder).max() <= 1


def test_batches_seed_each_picture_and_hires_fix_makes_it_bigger(ctx, tmp_path: Path) -> None:
    batch = make(ctx, tmp_path, batch_size=2, batch_count=2, sampler="Euler a")
    assert [p.seed for p in batch.pictures] == [5, 6, 7, 8]
    alone = make(ctx, tmp_path, seed=8, sampler="Euler a")
    assert np.abs(pixels(batch, 3) - pixels(alone)).max() <= 1
    for upscaler in ("lanczos", "latent"):
        hires = make(ctx, tmp_path, hires_scale=1.5, hires_strength=0.6, hires_upscaler=upscaler)
        assert Image.open(hires.pictures[0].path).size == (96, 96)
        parameters, _ = read_png_parameters(hires.pictures[0].path)
        assert (parameters.width, parameters.hires_scale, parameters.hires_strength) == (64, 1.5, 0.6)


def test_progress_previews_and_cancel(ctx, tmp_path: Path) -> None:
    hardware, store = ctx
    events = []
    request = Sd15Request(model="tiny-anime", prompt="ink", output_dir=tmp_path, preview_every=1,
                          **{**QUICK, "steps": 3})
    generate(request, hardware, store, on_step=lambda s, t, m="", p=None: events.append((s, t, p)))
    steps = [(s, t) for s, t, _ in events if s]
    assert steps[-1] == (3, 3) and any(p is not None for _, _, p in events)
    cancel = CancelToken()

    def stop_at_first(step, total, message="", preview=None):
        if step >= 1:
            cancel.cancel()

    with pytest.raises(Cancelled):
        generate(Sd15Request(model="tiny-anime", prompt="ink", output_dir=tmp_path / "cancelled", batch_count=3,
                             **QUICK), hardware, store, on_step=stop_at_first, cancel=cancel)
    assert not list((tmp_path / "cancelled").glob("*.png"))


def test_a_character_reference_steers_the_picture_and_goes_away_after(ctx, data_dir: Path, tmp_path: Path) -> None:
    plain = pixels(make(ctx, tmp_path))
    red = make(ctx, tmp_path, reference=data_dir / "red.png", reference_scale=1.0)
    blue = pixels(make(ctx, tmp_path, reference=data_dir / "blue.png", reference_scale=1.0))
    assert not np.array_equal(pixels(red), plain) and not np.array_equal(pixels(red), blue)
    assert np.array_equal(pixels(make(ctx, tmp_path, reference=data_dir / "red.png", reference_scale=1.0)),
                          pixels(red))  # same seed, same reference: same pixels
    assert not np.array_equal(pixels(make(ctx, tmp_path, reference=data_dir / "clear.png")), plain)
    assert np.array_equal(pixels(make(ctx, tmp_path)), plain)  # the adapter is taken out again
    parameters, inkframe = read_png_parameters(red.pictures[0].path)
    assert ("IP-Adapter scale", "1") in parameters.extra and inkframe["request"]["reference"].endswith("red.png")
    hires = make(ctx, tmp_path, reference=data_dir / "red.png", hires_scale=1.5)
    assert Image.open(hires.pictures[0].path).size == (96, 96)
    # The face variant (IP-Adapter Plus: a resampler over the encoder's hidden states) loads and steers too.
    face = pixels(make(ctx, tmp_path, reference=data_dir / "red.png", reference_variant="face", reference_scale=1.0))
    assert not np.array_equal(face, plain) and not np.array_equal(face, pixels(red))


def test_two_references_in_halves_of_one_panel(ctx, data_dir: Path, tmp_path: Path) -> None:
    red, blue = data_dir / "red.png", data_dir / "blue.png"
    both = dict(reference_scale=1.0, width=64, height=64)
    red_left = pixels(make(ctx, tmp_path, reference=red, second_reference=blue, **both))
    blue_left = pixels(make(ctx, tmp_path, reference=blue, second_reference=red, **both))
    stacked = pixels(make(ctx, tmp_path, reference=red, second_reference=blue, reference_split="top-bottom", **both))
    only_red = pixels(make(ctx, tmp_path, reference=red, **both))
    assert len({a.tobytes() for a in (red_left, blue_left, stacked, only_red)}) == 4
    hires = make(ctx, tmp_path, reference=red, second_reference=blue, hires_scale=1.5, **both)
    parameters, _ = read_png_parameters(hires.pictures[0].path)
    assert ("IP-Adapter regions", "left-right") in parameters.extra
    with pytest.raises(InvalidRequestError, match="first character"):
        make(ctx, tmp_path, second_reference=blue)


def test_a_missing_ip_adapter_offline_is_one_sentence_before_loading(data_dir: Path, tmp_path: Path) -> None:
    from engines.errors import OfflineError

    models = tmp_path / "models"
    shutil.copytree(data_dir / "models" / "tiny-anime", models / "tiny-anime")
    hardware = HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True, offline=True),
                               device_budget_bytes=2**30, host_budget_bytes=2**30)
    with pytest.raises(OfflineError, match="h94/IP-Adapter") as caught:
        generate(Sd15Request(model="tiny-anime", reference=data_dir / "red.png", output_dir=tmp_path, **QUICK),
                 hardware, ModelStore(models, offline=True))
    assert "ip-adapter_sd15.safetensors" in str(caught.value) and not hardware.pool.names()


@pytest.mark.parametrize("changes, words", [
    (dict(prompt="(ink:1.2"), "never closed"),
    (dict(negative="ink)"), "negative prompt"),
    (dict(prompt="<lora:missing:1>"), "loras"),
    (dict(embeddings=("nothing.pt",)), "embeddings"),
    (dict(sampler="Warp 9"), "DPM++ 2M Karras"),
    (dict(width=100), "multiple of 8"),
    (dict(hires_scale=9.0), "hires fix scale"),
    (dict(model="no-such-model"), "models"),
    (dict(reference=Path("/no/such.png")), "does not exist"),
    (dict(reference=Path(__file__)), "cannot be read"),
    (dict(reference=Path(__file__).parent / "conftest.py", reference_variant="elf"), "plain, face"),
])
def test_bad_requests_are_one_sentence_before_loading(ctx, tmp_path: Path, changes: dict, words: str) -> None:
    hardware, _ = ctx
    loaded = hardware.pool.names()
    with pytest.raises((InvalidRequestError, ModelNotFoundError)) as caught:
        make(ctx, tmp_path, **changes)
    assert words in str(caught.value) and str(caught.value).count(". ") == 0
    assert hardware.pool.names() == loaded


def test_cli_generates_with_an_sd_checkpoint_and_refuses_origin_flags(data_dir: Path, tmp_path: Path,
                                                                       capsys) -> None:
    from app import main

    out = tmp_path / "panel.png"
    args = ["generate", "--model", "tiny-anime", "--prompt", "ink manga, <lora:lineart:0.5>", "--seed", "5",
            "--steps", "2", "--cfg", "2", "--size", "64x64", "--sampler", "euler a", "--batch", "2",
            "--clip-skip", "2", "--output", str(out), "--data-dir", str(data_dir), "--cpu", "--offline"]
    assert main(args) == 0
    assert out.is_file() and (tmp_path / "panel-2.png").is_file()
    parameters, _ = read_png_parameters(out)
    assert (parameters.sampler, parameters.clip_skip, parameters.seed) == ("Euler a", 2, 5)
    referenced = tmp_path / "referenced.png"
    assert main(args[:-4] + ["--output", str(referenced), "--reference", str(data_dir / "red.png"),
                             "--reference-scale", "0.9", "--data-dir", str(data_dir), "--cpu", "--offline"]) == 0
    assert ("IP-Adapter scale", "0.9") in read_png_parameters(referenced)[0].extra
    assert main(args[:-4] + ["--upscale", "2", "--data-dir", str(data_dir), "--cpu", "--offline"]) == 2
    assert "--upscale does not apply to SD 1.5" in capsys.readouterr().err
