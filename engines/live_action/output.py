"""What a Live-Action job leaves on disk: the PNG, its report, and the control maps beside it.

    hero.png          the picture, with A1111's ``parameters`` (the ControlNet units written the way
                      A1111's ControlNet extension writes them) and Inkframe's JSON to make it again
    hero.json         the realism report, the background found, what was converted
    hero.depth.png    the control maps that steered it (depth, pose, and canny when used)
    hero.pose.png

Each file is written atomically: a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines import __version__
from engines.files import atomic_write, atomic_write_bytes

MAP_NAMES = {"depth": "Depth", "pose": "OpenPose", "canny": "Canny"}


@dataclass(frozen=True)
class Saved:
    report_path: Path
    maps: dict[str, Path]


def report_path_for(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def map_path_for(path: Path, kind: str) -> Path:
    return Path(path).with_name(f"{Path(path).stem}.{kind}.png")


def parameters_for(plan: Any, seed: int, store: Any) -> Any:
    """A1111's parameters of the picture: img2img's ``Denoising strength`` and one ``ControlNet N`` per unit."""
    from engines.sd15.file_hashes import job_hashes
    from engines.sd15.a1111_text import model_label
    from engines.sd15.png_params import GenerationParameters

    r, sd = plan.request, plan.sd
    hashed = job_hashes(store, sd.checkpoint.model, sd.loras)
    modules = {"depth": "depth" if plan.depth_map is not None else "depth_estimated",
               "pose": "openpose" if plan.pose_map is not None else "openpose_vitpose", "canny": "canny"}
    extra: list[tuple[str, str]] = []
    for index, (kind, model, scale, start, end) in enumerate(plan.controlnets):
        extra.append((f"ControlNet {index}", f"Module: {modules[kind]}, Model: {model_label(model)}, "
                                             f"Weight: {scale:g}, Guidance Start: {start:g}, Guidance End: {end:g}"))
    if r.identity:
        extra += [("IP-Adapter", "ip-adapter plain (the picture itself)"), ("IP-Adapter scale", f"{r.identity_scale:g}")]
    if sd.checkpoint.vae:
        extra.append(("VAE", model_label(sd.checkpoint.vae)))
    if r.colour_transfer != "off":
        extra.append(("Colour transfer", f"{r.colour_transfer} {r.colour_strength:g}"))
    extra.append(("Version", f"Inkframe {__version__}"))
    width, height = plan.size
    return GenerationParameters(
        prompt=r.prompt, negative=r.negative, steps=r.steps, sampler=sd.sampler, cfg=float(r.cfg), seed=seed,
        width=width, height=height, model=model_label(sd.checkpoint.model), model_hash=hashed.model,
        clip_skip=r.clip_skip, loras=hashed.loras, hires_strength=float(r.strength), extra=tuple(extra))


def request_fields(request: Any, seed: int) -> dict[str, Any]:
    """The request that makes the picture again, as JSON-safe values."""
    again = dataclasses.replace(request, seed=seed, preview_every=0, output=None)
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(again).items()}


def save_result(image: Any, path: Path, plan: Any, seed: int, report: Any, background: str, maps: Any, store: Any,
                notes: tuple[str, ...]) -> Saved:
    """Write the PNG, its JSON report and the control maps; returns where the report and maps went."""
    from engines.sd15.png_params import save_png

    path = Path(path)
    parameters = parameters_for(plan, seed, store)
    inkframe = {"backend": "live-action", "studio_version": __version__, "request": request_fields(plan.request, seed),
                "sampler": plan.sd.sampler, "size": list(plan.size), "background": background,
                "report": report.as_dict()}
    save_png(image, path, parameters, inkframe)
    saved_maps: dict[str, Path] = {}
    for kind in ("depth", "pose", "canny"):
        picture = getattr(maps, kind)
        if picture is not None:
            target = map_path_for(path, kind)
            atomic_write(target, lambda tmp, p=picture: p.save(tmp, format="PNG"))
            saved_maps[kind] = target
    document = {
        "picture": path.name, "source": str(plan.source.path), "seed": seed, "size": list(plan.size),
        "background": background, "summary": report.summary(), "report": report.as_dict(),
        "notes": list(notes), "maps": {k: p.name for k, p in saved_maps.items()},
        "request": request_fields(plan.request, seed), "studio_version": __version__,
    }
    report_path = report_path_for(path)
    atomic_write_bytes(report_path, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return Saved(report_path, saved_maps)
