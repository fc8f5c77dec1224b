"""The noise schedule: how much of the picture is left at each of the training's noise levels.

One function builds it for the trainer, the sampler, the search and the benchmarks, so a model is
always sampled on the schedule it learned. ``ModelConfig.noise_schedule`` picks one of:

- ``zero_snr`` (the default since config version 2): DDPM's linear betas rescaled so that the last
  noise level is pure noise (zero terminal SNR, Lin et al. 2023, "Common Diffusion Noise Schedules
  and Sample Steps are Flawed"). With the plain linear schedule about 0.6 % of the picture's mean
  colour survives at the last level, so the model never learns to *make* the mean colour from pure
  noise, and flat saturated backgrounds come out washed towards grey. Needs v-prediction: an
  epsilon model cannot say anything about the picture when there is no signal left.
- ``linear``: the DDPM schedule (Ho et al. 2020), what version-1 checkpoints were trained with.
- ``cosine``: the improved-DDPM cosine schedule (Nichol & Dhariwal 2021), more steps at low noise.

``docs/origin-model.md`` has the benchmark that chose the default.
"""

from __future__ import annotations

from typing import Any

NOISE_SCHEDULES = ("zero_snr", "linear", "cosine")
_BETAS = {"zero_snr": "linear", "linear": "linear", "cosine": "squaredcos_cap_v2"}


def check_schedule(noise_schedule: str, prediction_type: str) -> None:
    """A schedule the model cannot learn, as one ValueError sentence."""
    if noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(f"noise_schedule {noise_schedule!r} must be one of {', '.join(NOISE_SCHEDULES)}")
    if noise_schedule == "zero_snr" and prediction_type != "v_prediction":
        raise ValueError("the zero_snr noise schedule needs prediction_type v_prediction: at the last noise "
                         "level there is no signal left for an epsilon model to find the picture from")


def scheduler_options(noise_schedule: str, prediction_type: str, num_train_timesteps: int) -> dict[str, Any]:
    """The diffusers scheduler config for a schedule (every diffusers sampler accepts these keys)."""
    check_schedule(noise_schedule, prediction_type)
    return {
        "num_train_timesteps": int(num_train_timesteps),
        "beta_schedule": _BETAS[noise_schedule],
        "rescale_betas_zero_snr": noise_schedule == "zero_snr",
        "prediction_type": prediction_type,
    }


def training_scheduler(config: Any) -> Any:
    """The ``DDPMScheduler`` an ``OriginConfig`` trains with: its ``alphas_cumprod`` is the schedule."""
    from diffusers import DDPMScheduler

    m = config.model
    # Samplers built from this config inherit ``clip_sample``: clipping each step's estimate of the
    # clean picture to [-1, 1] suits pixels, but latents are not bounded there (SD's spread over
    # about ±4; standardised ones have a unit spread and colours beyond ±1), and clipping them
    # pulls every saturated colour towards another (measured: red drawn as yellow, blue as azure).
    return DDPMScheduler(**scheduler_options(m.noise_schedule, m.prediction_type,
                                             config.train.num_train_timesteps),
                         clip_sample=m.space != "latent")
