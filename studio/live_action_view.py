"""What the Live-Action tab shows, as plain data: the request from the widgets, the report, the maps, the history.

No gradio and no torch here, so each piece is tested on its own (tests/test_live_action_tab.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from html import escape
from pathlib import Path
from typing import Any, Optional

from engines.live_action.output import MAP_NAMES, map_path_for, report_path_for
from engines.live_action.photoreal import OUTPUT_FOLDER
from engines.live_action.request import LiveActionRequest
from engines.sd15.library import Sd15Library
from engines.sd15.samplers import DEFAULT_SAMPLER, SAMPLERS
from studio.widgets import progress_gauge

HISTORY_LIMIT = 60
RANDOM_SEED = -1
MAP_KINDS = tuple(MAP_NAMES)  # "depth", "pose", "canny": the order the maps are shown in
SAMPLER_NAMES = (DEFAULT_SAMPLER, *(name for name in SAMPLERS if name != DEFAULT_SAMPLER))
# Request fields the tab does not show: the output file is the studio's to choose, previews the handler's.
NOT_WIDGETS = ("output", "preview_every")
_WHOLE = ("steps", "width", "height", "long_side", "clip_skip", "preview_every")
_PATHS = ("image", "depth_map", "pose_map")
# What each picture and model is called in the sentence that refuses it on a shared studio (studio/access.py).
PICTURES = {"image": "The drawing", "depth_map": "The depth map", "pose_map": "The pose map"}
MODELS = {"base_model": "The base model", "vae": "The VAE", "controlnet_depth": "The depth ControlNet",
          "controlnet_pose": "The pose ControlNet", "controlnet_canny": "The canny ControlNet",
          "depth_model": "The depth estimator", "pose_model": "The pose estimator"}
# A1111's LoRA tag, as engines/sd15/prompt_syntax.py cuts it: the name is what comes before the first ':'.


def widget_fields() -> list[str]:
    """The request fields the tab has a widget for, in the request's order."""
    return [f.name for f in fields(LiveActionRequest) if f.name not in NOT_WIDGETS]


def _number(value: Any, default: Any) -> Any:
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return default
    return value


def request_from_values(values: dict[str, Any]) -> LiveActionRequest:
    """The tab's widgets (by field name) as a request; a seed of -1 is random, an empty map is none."""
    defaults = {f.name: f.default for f in fields(LiveActionRequest)}
    kwargs: dict[str, Any] = {}
    for name, default in defaults.items():
        if name not in values or name in ("seed", "output"):
            continue
        value = values[name]
        if name in _PATHS:
            text = str(getattr(value, "path", value) or "").strip()  # an upload may arrive as a file object
            # An empty picture stays "" (not Path("") == "."), so check() says to give one.
            value = Path(text) if text else ("" if name == "image" else None)
        elif name in _WHOLE:
            value = int(_number(value, default or 0))
        elif name == "identity":
            value = bool(value)
        elif isinstance(default, float):
            value = float(_number(value, default))
        else:
            value = str(value or "")
        kwargs[name] = value
    kwargs.setdefault("image", "")
    seed = values.get("seed")
    seed = None if seed is None or seed == "" or int(seed) < 0 else int(seed)
    output = values.get("output")
    return LiveActionRequest(seed=seed, output=Path(output) if output else None, **kwargs)


def model_choices(models_dir: Path, default: str) -> list[str]:
    """The base model picker: the default checkpoint first, then every SD 1.5 checkpoint in models/."""
    return list(dict.fromkeys([default, *Sd15Library(Path(models_dir)).checkpoints()]))


def values_from_report(document: dict[str, Any]) -> dict[str, Any]:
    """A saved report's request as widget values (to make the picture again); unknown keys left out."""
    request = dict(document.get("request") or {})
    # The settings only: the pictures (the drawing, the maps) stay as they are in the tab, as A1111's
    # "send to" does; the files may be gone, or outside what the studio serves.
    names = set(widget_fields()) - set(_PATHS)
    values = {k: v for k, v in request.items() if k in names}
    if "vae" in values and values["vae"] is None:
        values["vae"] = ""
    return values


# -- the result ----------------------------------------------------------------------------------------------


def maps_gallery(maps: dict[str, Any]) -> list[tuple[str, str]]:
    """The control maps as (file, caption), depth, pose, canny in that order."""
    return [(str(maps[kind]), f"{MAP_NAMES[kind]} map") for kind in MAP_KINDS if maps.get(kind)]


def _percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


def report_rows(document: dict[str, Any]) -> list[list[str]]:
    """The report's numbers as (measure, value) rows an artist reads; ``document`` is the saved JSON."""
    r = document.get("report") or {}
    drift = r.get("colour_drift")
    before = r.get("colour_drift_before_correction")
    rows = [
        ["Structure kept (fidelity)", _percent(r.get("fidelity"))],
        ["Edge correlation", _fixed(r.get("edge_correlation"), 3)],
        ["Edge strength ratio", _fixed(r.get("variance_ratio"), 3)],
        ["Colour score", _percent(r.get("colour_score"))],
        ["Colour score before correction",
         _percent(r.get("colour_score_before_correction")) if r.get("colour_score_before_correction") is not None
         else "no colour transfer"],
        ["Colour drift (Lab units)", _fixed(drift, 1) + (f" (before correction {before:.1f})" if before is not None
                                                           else "")],
        ["Texture (entropy ratio)", f"{r['entropy_ratio']:.2f}x" if r.get("entropy_ratio") is not None else "–"],
        ["Background", str(document.get("background") or "–")],
        ["Character coverage", _percent(r.get("mask_coverage"))],
        ["Seed", str(document.get("seed", "–"))],
    ]
    if document.get("size"):
        rows.append(["Size", "x".join(str(v) for v in document["size"])])
    if document.get("seconds") is not None:
        rows.append(["Time", f"{float(document['seconds']):.1f} s"])
    rows.append(["Notes", " ".join(document.get("notes") or []) or "–"])
    return rows


def _fixed(value: Optional[float], digits: int) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def summary_html(summary: str, detail: str = "") -> str:
    """The report's one line, prominent; ``detail`` in small print under it (the file, the time)."""
    if not summary:
        return '<div class="ink-summary ink-summary--empty">The realism report appears here.</div>'
    small = f'<div class="ink-summary__detail">{escape(detail)}</div>' if detail else ""
    return f'<div class="ink-summary"><div class="ink-summary__line">{escape(summary)}</div>{small}</div>'


def read_report(picture: Optional[str]) -> Optional[dict[str, Any]]:
    """The JSON report saved beside a result picture, or None when there is none (or it is unreadable)."""
    if not picture:
        return None
    try:
        return json.loads(report_path_for(Path(picture)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def saved_maps(picture: str, document: Optional[dict[str, Any]]) -> dict[str, Path]:
    """The control maps saved beside a picture: those its report names, else those found on disk."""
    folder = Path(picture).parent
    named = (document or {}).get("maps") or {}
    found = {kind: folder / name for kind, name in named.items() if (folder / name).is_file()}
    for kind in MAP_KINDS:
        candidate = map_path_for(Path(picture), kind)
        if kind not in found and candidate.is_file():
            found[kind] = candidate
    return found


def endpoint_result(result: Any) -> dict[str, Any]:
    """What `/live_action` returns: "file", not "path" (gradio_client downloads a dict with a "path")."""
    return {"file": str(result.path), "report_file": str(result.report_path), "seed": int(result.seed),
            "summary": result.report.summary(), "report": result.report.as_dict(),
            "background": result.background, "maps": {kind: str(p) for kind, p in result.maps.items()},
            "notes": list(result.notes), "seconds": round(float(result.seconds), 2)}


def shown_result(picture: str, document: Optional[dict[str, Any]], seconds: Optional[float] = None) -> dict[str, Any]:
    """Everything the right column shows for one result picture: summary, rows, the JSON, the maps."""
    document = dict(document or {})
    if seconds is not None:
        document["seconds"] = seconds
    summary = str(document.get("summary") or "")
    detail = Path(picture).name + (f" · {seconds:.1f} s" if seconds is not None else "")
    if not summary:
        summary, detail = "This picture has no report beside it.", Path(picture).name
    return {"summary": summary_html(summary, detail), "rows": report_rows(document) if document else [],
            "document": document or None, "maps": maps_gallery(saved_maps(picture, document))}


# -- the history and the batch -------------------------------------------------------------------------------


def is_map_file(path: Path) -> bool:
    return any(Path(path).name.endswith(f".{kind}.png") for kind in MAP_KINDS)


def history(outputs: Path, limit: int = HISTORY_LIMIT) -> list[tuple[str, str]]:
    """The pictures in outputs/live-action, newest first, as (file, caption); the control maps left out.

    The caption is the picture's place in outputs/live-action ("2026-12-05/143012-7"): a gallery hands
    the server a cached copy of the file, and the caption leads back to the original and its report."""
    folder = Path(outputs) / OUTPUT_FOLDER
    found = [p for p in folder.rglob("*.png") if not is_map_file(p)] if folder.is_dir() else []
    found = sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
    return [(str(p), p.relative_to(folder).with_suffix("").as_posix()) for p in found]


def history_file(outputs: Path, caption: Optional[str]) -> Optional[str]:
    """The original picture a history caption names, or None (never a file outside outputs/live-action)."""
    folder = (Path(outputs) / OUTPUT_FOLDER).resolve()
    if not caption:
        return None
    path = (folder / f"{caption}.png").resolve()
    return str(path) if path.is_relative_to(folder) and path.is_file() else None


def batch_rows(result: Any) -> list[list[str]]:
    """One row per file of a batch: the picture made and its summary, or why it was skipped."""
    rows = [[Path(r.path).name, r.report.summary()] for r in result.done]
    rows += [[Path(file).name, f"Skipped: {reason}"] for file, reason in result.failed]
    return sorted(rows, key=lambda row: row[0].lower())


def progress_html(step: int, total: int, message: str = "", state: str = "idle",
                  bar_id: str = "live-progress-bar") -> str:
    return progress_gauge(bar_id, "Steps", step, total, message, state, step=step, total=total)
