"""Origin on a real CUDA GPU: the pooled text encoder, generation in fp16 and a bf16/fp16 training run.

Skipped without CUDA (conftest.py); run on a GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engines.context import build_engine_context
from engines.hardware import HardwareManager
from engines.models import ModelStore
from engines.settings import MachineSettings
from tiny_models import save_origin_checkpoint, save_tiny_sentence_transformer

pytestmark = pytest.mark.gpu
RES = 32


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-st"))


def tiny_run(folder: Path, encoder: Path) -> Path:
    import torch

    from engines.origin.model.config import tiny_config
    from engines.origin.model.network import OriginModel

    config = tiny_config(RES)
    config.model.text_encoder = str(encoder)
    torch.manual_seed(0)
    save_origin_checkpoint(folder, OriginModel(config.model), config)
    return folder


def test_the_text_encoder_runs_where_the_pool_puts_it(tmp_path, encoder_dir):
    import torch

    from engines.origin.model.config import tiny_config
    from engines.origin.model.text_encoder import TextEncoder, register_text_encoder

    config = replace(tiny_config(RES).model, text_encoder=str(encoder_dir))
    store = ModelStore(tmp_path / "models", offline=True)
    on_cpu = TextEncoder(str(encoder_dir), config.text_dim, config.max_text_tokens, store=store)
    cpu_tokens, cpu_mask = on_cpu.encode(["manga girl, ink", ""])
    hw = HardwareManager(MachineSettings(data_dir=tmp_path / "data", precision="fp32"))
    name = register_text_encoder(hw, config, store=store)
    with hw.gpu_job("test"), hw.use(name) as encoder:
        assert encoder.device.type == "cuda"
        tokens, mask = encoder.encode(["manga girl, ink", ""])
    assert tokens.device.type == "cuda"
    torch.testing.assert_close(tokens.cpu(), cpu_tokens, atol=1e-4, rtol=1e-4)
    assert torch.equal(mask.cpu(), cpu_mask)
    hw.pool.offload(name)  # what the pool does when a bigger model needs the VRAM
    assert encoder.device.type == "cpu"


def test_generation_in_fp16_on_the_gpu_matches_the_cpu(tmp_path, encoder_dir):
    from engines.origin.generation.sampler import GenerateRequest, generate

    run = tiny_run(tmp_path / "run", encoder_dir)

    def draw(hw: HardwareManager, name: str):
        request = GenerateRequest(model=str(run), prompt="manga girl, forest background", output=tmp_path / name,
                                  seed=7, steps=4, cfg=4.0, sampler="ddim")
        return generate(request, hw, store=ModelStore(tmp_path / "models", offline=True))

    cpu = draw(HardwareManager(MachineSettings(data_dir=tmp_path / "cpu", cpu=True)), "cpu.png")
    hw = HardwareManager(MachineSettings(data_dir=tmp_path / "gpu", precision="fp16", vram_limit_gb=2))
    gpu = draw(hw, "gpu.png")
    tiers = {record.name.split(":")[0]: record.tier for record in hw.pool.snapshot()}
    assert tiers == {"origin": "device", "text-encoder": "device"}
    difference = np.abs(np.asarray(gpu.image, np.float32) - np.asarray(cpu.image, np.float32))
    # fp16 autocast moves a few values by a level or two; a broken device path gives noise (~80).
    assert difference.mean() < 4.0, difference.mean()


def test_a_short_training_run_on_the_gpu(tmp_path, encoder_dir):
    import math

    from engines.origin.model import checkpoints
    from engines.origin.model.config import tiny_config
    from engines.origin.training.request import TrainRequest
    from engines.origin.training.trainer import train
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(data / f"p{i}.png")
        (data / f"p{i}.txt").write_text("manga girl, ink", encoding="utf-8")
    config = tiny_config(RES)
    config = replace(config, model=replace(config.model, text_encoder=str(encoder_dir)),
                     train=replace(config.train, batch_size=3, disk_cache=False, sample_every_steps=2,
                                   sample_prompts=("manga girl",)))
    ctx = build_engine_context(MachineSettings(data_dir=tmp_path / "studio", offline=True))
    result = train(TrainRequest(data=data, run=tmp_path / "run", config=config, max_steps=4), ctx)
    assert result.steps == 4 and all(math.isfinite(x) for x in result.losses)
    assert checkpoints.find_latest(result.run).step == 4
    assert list((result.run / "samples").glob("*.png"))
    main_log = (result.run / "logs" / "main.log").read_text()
    assert "mixed precision bf16" in main_log or "mixed precision fp16" in main_log


def test_a_latent_run_at_512_px_on_the_gpu(tmp_path, encoder_dir):
    """The default network in latent space at 512 px under a 6 GB budget: the VAE (SD's layout, random
    weights) loaded through the store, the cache filled on the GPU, training, samples and a generation.
    Steps/s and peak VRAM go to ``$INKFRAME_GPU_FIGURES/latent_512.json`` when that is set."""
    import json
    import math
    import os

    import torch
    from diffusers import AutoencoderKL
    from PIL import Image

    from engines.origin.generation.sampler import GenerateRequest, generate
    from engines.origin.model.config import OriginConfig
    from engines.origin.model.latent import SINGLE_FILE_CONFIG
    from engines.origin.training.request import TrainRequest
    from engines.origin.training.trainer import train

    torch.manual_seed(0)
    vae_dir = tmp_path / "vae"
    AutoencoderKL.from_config(AutoencoderKL.load_config(str(SINGLE_FILE_CONFIG))).save_pretrained(str(vae_dir))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(data / f"p{i}.png")
        (data / f"p{i}.txt").write_text("manga girl, ink", encoding="utf-8")
    config = OriginConfig()
    config = replace(config, model=replace(config.model, resolution=512, space="auto", vae=str(vae_dir),
                                           text_encoder=str(encoder_dir), text_dim=32),
                     train=replace(config.train, batch_size=4, warmup_steps=2, sample_every_steps=8,
                                   sample_prompts=("manga girl",), checkpoint_every_epochs=100))
    ctx = build_engine_context(MachineSettings(data_dir=tmp_path / "studio", offline=True, vram_limit_gb=6))
    torch.cuda.reset_peak_memory_stats()
    result = train(TrainRequest(data=data, run=tmp_path / "run", config=config, max_steps=12), ctx)
    train_peak = torch.cuda.max_memory_allocated()
    assert result.config.model.space == "latent" and result.config.model.sample_size == 64
    assert all(math.isfinite(x) for x in result.losses)
    records = [json.loads(line) for line in (result.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    step_seconds = sorted(r["seconds"] for r in records if r.get("step", 0) > 2 and "seconds" in r)
    with Image.open(next((result.run / "samples").glob("*.png"))) as sample:
        assert sample.size == (512, 512)
    torch.cuda.reset_peak_memory_stats()
    picture = generate(GenerateRequest(model=str(result.run), prompt="manga girl", output=tmp_path / "p.png", seed=1,
                                       steps=10, cfg=4.0), ctx.hardware, store=ctx.models)
    assert picture.image.size == (512, 512)
    figures = {"steps_per_s": 1 / step_seconds[len(step_seconds) // 2], "batch": 4,
               "train_peak_vram_gib": train_peak / 2**30,
               "generate_peak_vram_gib": torch.cuda.max_memory_allocated() / 2**30,
               "generate_seconds": picture.seconds, "mixed_precision": result.config.train.mixed_precision,
               "gpu": torch.cuda.get_device_name()}
    print("latent 512 px:", json.dumps(figures))
    if os.environ.get("INKFRAME_GPU_FIGURES"):
        Path(os.environ["INKFRAME_GPU_FIGURES"], "latent_512.json").write_text(json.dumps(figures, indent=2))
