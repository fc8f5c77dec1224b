"""Sample images during training: the fixed prompts, drawn with the EMA weights every N steps.

The same prompts and seeds every time, so the pictures in ``<run>/samples/`` show how the model
learns, not how the noise changed. The denoising loop and the PNG writer are the sampler's own
(``generation/sampler.py``), so what the artist sees here is what ``generate`` would draw at this step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SAMPLE_STEPS = 25  # DDIM steps: enough to judge the style, cheap enough to run every few hundred steps
SAMPLE_CFG = 5.0
SAMPLE_SEED = 1234


def sample_step(path: Path) -> int | None:
    """The training step of ``samples/step-000500-0.png`` (None for any other file)."""
    parts = Path(path).stem.split("-")
    if len(parts) == 3 and parts[0] == "step" and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1])
    return None


def drop_samples_after(run_dir: Path, step: int) -> int:
    """Delete sample images past ``step`` (drawn by a session that crashed after its last
    checkpoint): the resumed run draws its own. Returns how many went."""
    folder = Path(run_dir) / "samples"
    doomed = [p for p in folder.glob("step-*.png") if (sample_step(p) or 0) > step] if folder.is_dir() else []
    for path in doomed:
        path.unlink(missing_ok=True)
    return len(doomed)


def write_samples(*, run_dir: Path, step: int, model: Any, ema: Any, text_encoder: Any, config: Any,
                  device: Any, decode: Any = None) -> list[Path]:
    """One PNG per prompt in ``<run>/samples/step-<step>-<i>.png``; returns their paths.

    ``decode``: in latent space, latents -> pixels (the run's VAE).
    """
    from engines.origin.generation import sampler
    from engines.origin.model.pixels import tensor_to_pil

    prompts = [p for p in config.train.sample_prompts if p.strip()]
    if not prompts:
        return []
    out_dir = Path(run_dir) / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    resolution = config.model.resolution
    shape = (1, config.model.in_channels, config.model.sample_size, config.model.sample_size)
    steps = min(SAMPLE_STEPS, config.train.num_train_timesteps)
    was_training = model.training
    # Swap the EMA weights in for the drawing and back out after: the training weights must
    # continue exactly as they were.
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    model.eval()
    paths = []
    try:
        for i, prompt in enumerate(prompts):
            request = sampler.GenerateRequest(
                model=str(run_dir),
                prompt=prompt,
                output=out_dir / "unused.png",
                seed=SAMPLE_SEED + i,
                steps=steps,
                cfg=SAMPLE_CFG,
                sampler="ddim",
            )
            context = text_encoder.encode(["", prompt])
            pixels = sampler._denoise(model, sampler.make_scheduler("ddim", config), context, None,
                                      shape, request, SAMPLE_SEED + i, torch.float32, lambda *a, **k: None, None,
                                      sampler.guidance_rescale_for(request, config))
            if decode is not None:
                pixels = decode(pixels)
            path = out_dir / f"step-{step:06d}-{i}.png"
            sampler.save_png(
                tensor_to_pil(pixels),
                path,
                {
                    "prompt": prompt,
                    "seed": SAMPLE_SEED + i,
                    "steps": steps,
                    "cfg": SAMPLE_CFG,
                    "sampler": "ddim",
                    "training_step": step,
                    "weights": "ema",
                    "width": resolution,
                    "height": resolution,
                },
            )
            paths.append(path)
    finally:
        ema.restore(model.parameters())
        model.train(was_training)
    return paths
