"""What the Animation tab shows, as plain data: the request from the widgets, the consistency report, the
history.

No gradio and no torch here, so each piece is tested on its own (tests/test_animation_tab.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, Optional

from engines.animation.output import FIRST_FRAME, OUTPUT_FOLDER
from engines.animation.output import new_video_path, sidecar_path_for
from engines.animation.request import DEFAULT_SAMPLER, AnimationRequest
from engines.animation.video_io import VIDEO_FORMATS as FORMATS
from engines.sd15.library import Sd15Library
from engines.sd15.samplers import SAMPLERS
from studio.widgets import progress_gauge

HISTORY_LIMIT = 60
RANDOM_SEED = -1
FORMAT_NAMES = tuple(suffix.lstrip(".") for suffix in FORMATS)  # "mp4", "gif", "webp", "webm"
DEFAULT_FORMAT = FORMAT_NAMES[0]
PLAYER_FORMATS = (".mp4", ".webm")  # shown in a video player; GIF and WebP play as pictures
SAMPLER_NAMES = (DEFAULT_SAMPLER, *(name for name in SAMPLERS if name != DEFAULT_SAMPLER))
# Request fields the tab does not show as such: the output file and the frames folder are the studio's to
# choose (from the format and the "save the frames" box below), previews the handler's.
NOT_WIDGETS = ("output", "frames_dir", "preview_every")
# Widgets that are not request fields: they decide `output` and `frames_dir`.
FILE_WIDGETS = ("output_format", "save_frames")
_WHOLE = ("frames", "fps", "steps", "width", "height", "clip_skip", "context", "stride", "free_init_iters",
          "preview_every")
_FLAGS = ("identity", "free_init")
# What the still and each model are called in the sentence that refuses them on a shared studio.
PICTURES = {"image": "The still"}
MODELS = {"base_model": "The base model", "vae": "The VAE", "motion_adapter": "The motion adapter",
          "motion_lora": "The motion LoRA", "sparsectrl_model": "The SparseCtrl model"}


def widget_fields() -> list[str]:
    """What the tab has a widget for: the request's fields in order, then the file's format and frames."""
    return [f.name for f in fields(AnimationRequest) if f.name not in NOT_WIDGETS] + list(FILE_WIDGETS)


def _number(value: Any, default: Any) -> Any:
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return default
    return value


def format_name(value: Any) -> str:
    """A format as the dropdown names it ("gif"), from "gif", ".GIF" or a file name; unknown: mp4."""
    text = str(value or "").strip().lower()
    text = Path(text).suffix.lstrip(".") if "." in text.strip(".") else text.lstrip(".")
    return text if text in FORMAT_NAMES else DEFAULT_FORMAT


def output_for(outputs: Path, output_format: str, seed: Optional[int],
               now: Optional[datetime] = None) -> Path:
    """Where a new video goes: the engine's place and name, with the chosen format's suffix."""
    return new_video_path(outputs, "." + format_name(output_format), seed, now)


def frames_dir_for(video: Path) -> Path:
    """The folder of a video's PNG frames: beside it, under its name (hero-frames/hero-0000.png...)."""
    return Path(video).with_name(f"{Path(video).stem}-frames")


def request_from_values(values: dict[str, Any], outputs: Optional[Path] = None) -> AnimationRequest:
    """The tab's widgets (by name) as a request: a seed of -1 is random, no still is text-to-video.

    With ``outputs`` the request names its file (the format is its suffix) and, when "save_frames" is on,
    the frames' folder beside it; without, the engine's defaults (an MP4 in outputs/animation, no frames)."""
    defaults = {f.name: f.default for f in fields(AnimationRequest)}
    kwargs: dict[str, Any] = {}
    for name, default in defaults.items():
        if name not in values or name in ("seed", "output", "frames_dir"):
            continue
        value = values[name]
        if name == "image":
            text = str(getattr(value, "path", value) or "").strip()  # an upload may arrive as a file object
            value = Path(text) if text else None
        elif name in _WHOLE:
            value = int(_number(value, default or 0))
        elif name in _FLAGS:
            value = bool(value)
        elif isinstance(default, float):
            value = float(_number(value, default))
        elif name == "vae":
            value = str(value or "").strip() or None
        else:
            value = str(value if value is not None else default or "")
        kwargs[name] = value
    seed = values.get("seed")
    seed = None if seed is None or seed == "" or int(seed) < 0 else int(seed)
    output = frames_dir = None
    if outputs is not None:
        output = output_for(outputs, values.get("output_format") or DEFAULT_FORMAT, seed)
        frames_dir = frames_dir_for(output) if values.get("save_frames") else None
    return AnimationRequest(seed=seed, output=output, frames_dir=frames_dir, **kwargs)


def model_choices(models_dir: Path, default: str) -> list[str]:
    """The base model picker: the default checkpoint first, then every SD 1.5 checkpoint in models/."""
    return list(dict.fromkeys([default, *Sd15Library(Path(models_dir)).checkpoints()]))


def values_from_sidecar(document: dict[str, Any]) -> dict[str, Any]:
    """A sidecar's request as widget values (to make the video again, seed included); unknown keys left out.

    The still stays as it is in the tab, as A1111's "send to" does: the file may be gone, or outside what the
    studio serves. The format is the video's, and "save the frames" is on when frames were saved."""
    request = dict(document.get("request") or {})
    names = set(widget_fields()) - {"image", *FILE_WIDGETS}
    values = {k: v for k, v in request.items() if k in names}
    if "vae" in values and values["vae"] is None:
        values["vae"] = ""
    if document.get("video"):
        values["output_format"] = format_name(document["video"])
    values["save_frames"] = bool(document.get("frames_dir"))
    return values


# -- the result ----------------------------------------------------------------------------------------------

MASK_SOURCES = {"mask": "the mask given", "alpha": "the still's transparency",
                "background": "guessed from the background", "whole picture": "the whole picture"}
MODES = {"video2video": "video-to-video from the still", "sparsectrl": "SparseCtrl from the still",
         "reference": "the still as reference", "text": "text-to-video"}


def _fixed(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _percent(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:.0f} %"


def report_rows(document: dict[str, Any]) -> list[list[str]]:
    """The sidecar's numbers as (measure, value) rows an artist reads: the consistency report, then the video.

    ``document`` is the sidecar JSON; its "consistency" is engines/animation/consistency.py's as_dict()."""
    r = document.get("consistency") or {}
    against = "the still" if r.get("reference") == "still" else "frame 0"
    jump = r.get("biggest_jump")
    rows = [
        ["Stability (each frame with the next)", _fixed(r.get("stability"))],
        [f"Identity (against {against})", _fixed(r.get("identity"))],
        ["Colours kept", _fixed(r.get("identity_colour"))],
        ["Shape kept", _fixed(r.get("identity_structure"))],
        ["Colour drift (Lab units)", _fixed(r.get("colour_drift"), 1)],
        ["Weakest frame", str(r.get("weakest_frame", "–"))],
        ["Biggest jump", "–" if jump is None else f"at frame {jump}"],
        ["The character", f"{_percent(r.get('mask_coverage'))} of the picture, "
                          f"{MASK_SOURCES.get(r.get('mask_source'), r.get('mask_source') or '–')}"
         if r.get("mask_coverage") is not None else "–"],
    ]
    size = r.get("working_size")
    if size:
        rows.append(["Measured at", "x".join(str(v) for v in size)])
    video = [("Mode", MODES.get(document.get("mode"), document.get("mode"))),
             ("Frames", document.get("frames")), ("Frames in the file", document.get("frames_in_file")),
             ("Frame rate", f"{document['fps']} fps" if document.get("fps") else None),
             ("Loop", document.get("loop")), ("Seed", document.get("seed")),
             ("Size", "x".join(str(v) for v in document["size"]) if document.get("size") else None)]
    rows += [[label, str(value)] for label, value in video if value is not None]
    if document.get("seconds") is not None:
        rows.append(["Time", f"{float(document['seconds']):.1f} s"])
    rows.append(["Notes", " ".join(document.get("notes") or []) or "–"])
    return rows


def summary_html(summary: str, detail: str = "") -> str:
    """The consistency report's one line, prominent; ``detail`` in small print under it (file, time)."""
    if not summary:
        return '<div class="ink-summary ink-summary--empty">The consistency report appears here.</div>'
    small = f'<div class="ink-summary__detail">{escape(detail)}</div>' if detail else ""
    return f'<div class="ink-summary"><div class="ink-summary__line">{escape(summary)}</div>{small}</div>'


def video_of(path: Optional[str]) -> Optional[Path]:
    """The video a history or result file stands for: itself, or the video beside its first frame."""
    if not path:
        return None
    path = Path(path)
    if not path.name.endswith(FIRST_FRAME):
        return path
    stem = path.name[: -len(FIRST_FRAME)]
    named = Path(str((_read_json(path.with_name(f"{stem}.json")) or {}).get("video") or "")).name
    if named and path.with_name(named).is_file():  # the sidecar names it: a file beside, never elsewhere
        return path.with_name(named)
    found = [path.with_name(stem + suffix) for suffix in FORMATS if path.with_name(stem + suffix).is_file()]
    return found[0] if found else None


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def read_sidecar(video: Optional[str]) -> Optional[dict[str, Any]]:
    """The sidecar JSON beside a video (or its first frame); None when there is none or it is unreadable."""
    shown = video_of(video)
    return _read_json(sidecar_path_for(shown)) if shown is not None else None


def plays_as_video(video: Optional[str]) -> bool:
    """MP4 and WebM go to the video player; GIF and WebP are animated pictures."""
    return bool(video) and Path(str(video)).suffix.lower() in PLAYER_FORMATS


def endpoint_result(result: Any) -> dict[str, Any]:
    """What `/animate` returns: "file", not "path" (gradio_client downloads a dict with a "path")."""
    return {"file": str(result.path), "sidecar_file": str(result.sidecar_path),
            "first_frame": str(result.first_frame),
            "seed": int(result.seed), "frames": int(result.frames), "fps": int(result.fps),
            "summary": result.report.summary(), "consistency": result.report.as_dict(),
            "frame_files": [str(p) for p in result.frame_paths], "notes": list(result.notes),
            "seconds": round(float(result.seconds), 2)}


def shown_result(video: str, document: Optional[dict[str, Any]],
                 seconds: Optional[float] = None) -> dict[str, Any]:
    """Everything the right column shows for one video: the summary line, the rows, the JSON."""
    document = dict(document or {})
    if seconds is not None:
        document["seconds"] = seconds
    summary = str(document.get("summary") or "")
    detail = Path(video).name + (f" · {seconds:.1f} s" if seconds is not None else "")
    if document.get("frames_dir"):
        detail += f" · frames in {Path(document['frames_dir']).name}/"
    if not summary:
        summary, detail = "This video has no report beside it.", Path(video).name
    return {"summary": summary_html(summary, detail), "rows": report_rows(document) if document else [],
            "document": document or None}


# -- the history ------------------------------------------------------------------------------------------


def history(outputs: Path, limit: int = HISTORY_LIMIT) -> list[tuple[str, str]]:
    """The animations in outputs/animation, newest first, as (first frame, caption).

    The caption is the video's place in outputs/animation ("2026-12-05/143012-7"): a gallery hands the server
    a cached copy of the picture, and the caption leads back to the video and its sidecar."""
    folder = Path(outputs) / OUTPUT_FOLDER
    found = list(folder.rglob(f"*{FIRST_FRAME}")) if folder.is_dir() else []
    found = sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
    return [(str(p), p.relative_to(folder).as_posix()[: -len(FIRST_FRAME)]) for p in found]


def history_video(outputs: Path, caption: Optional[str]) -> Optional[str]:
    """The video a history caption names, or None (never a file outside outputs/animation)."""
    folder = (Path(outputs) / OUTPUT_FOLDER).resolve()
    if not caption:
        return None
    first = (folder / f"{caption}{FIRST_FRAME}").resolve()
    if not first.is_relative_to(folder) or not first.is_file():
        return None
    video = video_of(str(first))
    return str(video) if video is not None and video.resolve().is_relative_to(folder) else None


def progress_html(step: int, total: int, message: str = "", state: str = "idle",
                  bar_id: str = "anim-progress-bar") -> str:
    return progress_gauge(bar_id, "Steps", step, total, message, state, step=step, total=total)


def sd_checkpoint(model: Any, runs: Path) -> Optional[str]:
    """Text-to-Manga's model when it is an SD 1.5 checkpoint (what AnimateDiff animates); None for Origin."""
    from engines.manga.panels import is_origin_model

    text = str(model or "").strip()
    return text if text and not is_origin_model(text, Path(runs)) else None
