"""What the Text-to-Manga tab shows, as plain data: the model list, the history, a PNG's settings as fields.

No gradio and no torch here, so each piece is tested on its own (tests/test_manga_tab.py, test_share_manga.py).
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

from engines.manga.panels import PANELS, PanelRequest
from engines.sd15.library import Sd15Library
from studio.widgets import progress_gauge

HISTORY_LIMIT = 60
RANDOM_SEED = -1
SIZE_PRESETS = {  # the manga panel shapes; custom keeps the width and height as typed
    "square 1:1": (512, 512),
    "tall 2:3": (512, 768),
    "wide 16:9": (768, 432),
    "4-koma strip": (768, 256),
}
SD_SAMPLERS = ("DPM++ 2M Karras", "Euler a", "Euler", "DPM++ 2M", "DPM++ 2M SDE Karras", "DPM++ SDE Karras",
               "UniPC", "DDIM", "Heun", "LMS", "LCM")
ORIGIN_PREFIX = "Origin · "
SD_PREFIX = "SD 1.5 · "
# What each picture and model is called in the sentence that refuses it on a shared studio (studio/access.py).
PICTURES = {"reference": "The reference picture", "second_reference": "The second character's picture"}
MODELS = {"model": "The model", "vae": "The VAE"}


def model_choices(paths: Any) -> list[tuple[str, str]]:
    """(label, value) for the backend picker: every Origin run with a checkpoint and every SD checkpoint."""
    choices = []
    runs = Path(paths.runs)
    if runs.is_dir():
        for run in sorted(runs.iterdir(), key=lambda p: p.name.lower()):
            if (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("*/meta.json")):
                choices.append((ORIGIN_PREFIX + run.name, run.name))
    choices += [(SD_PREFIX + name, name) for name in Sd15Library(paths.models).checkpoints()]
    return choices


def lora_names(paths: Any) -> list[str]:
    return [item.name for item in Sd15Library(paths.models).loras()]


def embedding_names(paths: Any) -> list[str]:
    return [item.name for item in Sd15Library(paths.models).embeddings()]


def with_lora(prompt: str, name: Optional[str], weight: float) -> str:
    """The prompt with ``<lora:name:weight>`` added at its end, as A1111's LoRA cards do."""
    if not name:
        return prompt
    tag = f"<lora:{name}:{weight:g}>"
    text = (prompt or "").rstrip()
    return f"{text}, {tag}" if text else tag


def with_word(prompt: str, word: Optional[str]) -> str:
    if not word:
        return prompt
    text = (prompt or "").rstrip()
    return f"{text}, {word}" if text else word


def history(outputs: Path, limit: int = HISTORY_LIMIT) -> list[tuple[str, str]]:
    """The newest pictures in outputs/panels (and Origin's outputs), newest first, as (file, caption)."""
    folder = Path(outputs) / PANELS
    found = list(folder.rglob("*.png")) if folder.is_dir() else []
    found += list(Path(outputs).glob("origin-*.png")) if Path(outputs).is_dir() else []
    found = sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
    return [(str(p), p.stem) for p in found]


def parameters_text(path: Optional[str]) -> str:
    """A picture's settings as A1111 writes them, or a sentence when it has none."""
    from engines.sd15.png_params import format_a1111, read_png_parameters

    if not path:
        return ""
    parameters, _ = read_png_parameters(path)
    if parameters.source == "none":
        return "This picture carries no generation settings."
    return format_a1111(parameters)


def _number(value: Any, default: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return default
    return value


def fields_from_png(path: str, paths: Any) -> dict[str, Any]:
    """The tab's field values a PNG carries (A1111, ComfyUI or Inkframe); absent settings are left out."""
    from engines.sd15.png_params import read_png_parameters

    parameters, inkframe = read_png_parameters(path)
    values: dict[str, Any] = {}
    request = (inkframe or {}).get("request") if (inkframe or {}).get("backend") == "sd15" else None
    if request:
        names = {f.name for f in fields(PanelRequest)}
        values.update({k: v for k, v in request.items() if k in names and v is not None})
        values["vae"] = request.get("vae") or ""
    elif (inkframe or {}).get("backend") == "origin":
        o = inkframe or {}
        checkpoint = Path(str(o.get("model", "")))
        # The very checkpoint when it is still there (to make the picture again), else its run's newest.
        model = str(checkpoint) if (checkpoint / "meta.json").is_file() else checkpoint.parent.parent.name
        values.update(model=model, prompt=o.get("prompt", ""), negative=o.get("negative", ""), steps=o.get("steps"),
                      cfg=o.get("cfg"), seed=o.get("seed"), sampler=o.get("sampler"), width=o.get("base_width"),
                      height=o.get("base_height"), upscale=o.get("upscale"))
    else:
        p = parameters
        values.update(prompt=p.prompt, negative=p.negative, steps=p.steps, sampler=p.sampler, cfg=p.cfg,
                      seed=p.seed, width=p.width, height=p.height, clip_skip=p.clip_skip,
                      hires_scale=p.hires_scale or 1.0, hires_strength=p.hires_strength)
        known = {value for _, value in model_choices(paths)}
        model = next((m for m in known if p.model and Path(m).stem.lower() == p.model.lower()), None)
        if model:
            values["model"] = model
    for name in ("reference", "second_reference"):
        if values.get(name) and not Path(str(values[name])).is_file():
            del values[name]  # a reference moved or deleted since: keep the field as it is
    return {k: v for k, v in values.items() if v is not None and v != ""}


def request_from_values(values: dict[str, Any]) -> PanelRequest:
    """The tab's widgets (by field name) as a request; a seed of -1 is random."""
    seed = values.get("seed")
    seed = None if seed is None or int(seed) < 0 else int(seed)
    whole = ("steps", "width", "height", "batch_count", "batch_size", "clip_skip", "upscale", "preview_every")
    kwargs: dict[str, Any] = {}
    for f in fields(PanelRequest):
        if f.name not in values or f.name == "seed":
            continue
        value = values[f.name]
        if f.name in whole:
            value = int(_number(value, 0))
        elif f.name in ("cfg", "hires_scale", "hires_strength", "detail", "vibrancy", "reference_scale"):
            value = float(_number(value, 0.0))
        elif isinstance(value, str) or value is None:
            value = str(value or "")
        kwargs[f.name] = value
    return PanelRequest(seed=seed, **kwargs)


def progress_html(step: int, total: int, message: str = "", state: str = "idle") -> str:
    return progress_gauge("manga-progress-bar", "Steps", step, total, message, state, step=step, total=total)


