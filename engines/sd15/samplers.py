"""Samplers under the names artists know from A1111 and Civitai, mapped to diffusers schedulers.

A1111's samplers come from k-diffusion; diffusers implements the same solvers as schedulers, and
its documentation gives the correspondence used here (a "Karras" name is the same solver on
Karras et al.'s noise levels). Every scheduler is built from the checkpoint's own scheduler
config, so its training schedule (betas, prediction type) is kept and only the solver changes.
Names are matched without regard to case or spacing, so "dpm++ 2m karras" and "DPM++ 2M Karras"
are the same sampler. Nothing heavy at import: diffusers loads when a scheduler is built.
"""

from __future__ import annotations

from typing import Any

from engines.errors import InvalidRequestError

# name -> (diffusers class, overrides of the checkpoint's scheduler config)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    # k-diffusion's DPM++ SDE is a single-step stochastic solver; diffusers draws its Brownian
    # noise with torchsde, seeded from the generator, so a seed still gives the same picture.
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    # Needs an LCM checkpoint or the LCM LoRA; 4 to 8 steps at CFG 1 to 2.
    "LCM": ("LCMScheduler", {}),
}
DEFAULT_SAMPLER = "DPM++ 2M Karras"
# Samplers whose every step draws fresh noise: a seed fixes them only with the same step count.
ANCESTRAL = {"Euler a", "DPM++ 2M SDE Karras", "DPM++ SDE Karras", "LCM"}


def _key(name: str) -> str:
    return "".join(str(name).lower().split())


_BY_KEY = {_key(name): name for name in SAMPLERS}
# Other spellings seen in the wild: ComfyUI's names and Origin's short names.
_BY_KEY.update({
    "euler_a": "Euler a", "euler_ancestral": "Euler a", "eulera": "Euler a",
    "dpm++": "DPM++ 2M", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras",
    "dpmpp_sde_karras": "DPM++ SDE Karras", "dpmpp_2m_sde_karras": "DPM++ 2M SDE Karras",
    "ddim": "DDIM", "uni_pc": "UniPC", "lcm": "LCM", "euler": "Euler", "heun": "Heun", "lms": "LMS",
})


def sampler_name(name: str) -> str:
    """The canonical name of a sampler, or one sentence listing the ones there are."""
    found = _BY_KEY.get(_key(name))
    if found is None:
        raise InvalidRequestError(f"Sampler '{name}' is not one of {', '.join(SAMPLERS)}.")
    return found


def build_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler for ``name`` from the checkpoint's scheduler config (never shared between jobs)."""
    import diffusers

    cls_name, overrides = SAMPLERS[sampler_name(name)]
    cls = getattr(diffusers, cls_name)
    config = dict(base_config)
    # A DDIM-trained config's clip_sample/set_alpha_to_one are ignored by the other solvers.
    return cls.from_config(config, **overrides)
