"""AUTOMATIC1111's generation parameters text: the ``parameters`` PNG chunk that Civitai, A1111's "PNG Info"
tab and most image sites read, as ``GenerationParameters`` and back.

The text is three parts::

    <positive prompt, one or more lines>
    Negative prompt: <negative prompt, one or more lines>       (absent when there is none)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, ...

The last line is ``Key: value`` pairs; a value with a comma, colon or line break is JSON-quoted. The format
has no escape for a prompt line that starts with ``Negative prompt:``: like A1111, the first such line
starts the negative prompt. The words in the middle of a line are only words.

Writing then reading gives the same parameters back, except where the format has no room: text at the
ends of a prompt (stripped), a prompt line starting with ``Negative prompt:``, colons and commas in LoRA
names (dropped, as A1111 drops them) and a size with only one side.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NEGATIVE = "Negative prompt:"
# A1111 1.9+ schedule types. Older versions folded them into the sampler name ("DPM++ 2M Karras"), which is
# the name artists know, so reading folds them in and writing splits them out again. Longest first.
_SCHEDULES = ("Align Your Steps", "Polyexponential", "SGM Uniform", "KL Optimal", "Exponential", "Karras",
              "Uniform", "Simple", "Normal", "Beta", "DDIM")
_AUTOMATIC_SCHEDULE = "Automatic"  # the sampler's own default: nothing to fold in
# Plain fields: A1111 key -> (field, type). Sampler, Size and Lora hashes need their own parsing.
_PLAIN = {
    "Steps": ("steps", int), "CFG scale": ("cfg", float), "Seed": ("seed", int),
    "Model hash": ("model_hash", str), "Model": ("model", str), "Clip skip": ("clip_skip", int),
    "Hires upscale": ("hires_scale", float), "Hires steps": ("hires_steps", int),
    "Denoising strength": ("hires_strength", float),
}
_KNOWN_KEYS = {*_PLAIN, "Sampler", "Schedule type", "Size", "Lora hashes"}
# One ``Key: value`` pair: a key without commas, colons or quotes; a JSON-quoted value or one up to a comma.
_PAIR = re.compile(r'\s*([^\s,:"][^,:"\n]*?)\s*:\s*("(?:\\.|[^\\"])*"|[^,]*?)\s*(?:,|$)')
_SIZE = re.compile(r"\s*(\d+)\s*x\s*(\d+)\s*")


@dataclass(frozen=True)
class GenerationParameters:
    """What A1111's parameters text holds, read from or written to an image."""

    prompt: str = ""
    negative: str = ""
    steps: int | None = None
    sampler: str | None = None  # the artist's name, e.g. "DPM++ 2M Karras" (schedule folded in)
    cfg: float | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    model_hash: str | None = None
    clip_skip: int | None = None
    loras: tuple[tuple[str, str], ...] = ()  # (name, short hash) for "Lora hashes"
    hires_scale: float | None = None
    hires_steps: int | None = None
    hires_strength: float | None = None  # "Denoising strength"
    extra: tuple[tuple[str, str], ...] = ()  # every other key, in order, as text
    source: str = "a1111"  # where they were read from: "a1111" | "comfyui" | "inkframe" | "none"


# --- writing A1111's text -------------------------------------------------------------------------------


def model_label(model: str) -> str:
    """The name A1111 shows for a model reference: a path's file name, without a weights suffix; an HF id as is."""
    name = Path(model).name if ("/" in model or "\\" in model) else model
    return Path(name).stem if name.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth")) else name


def _number(value: float) -> str:
    """7.0 -> "7", 0.55 -> "0.55": the shortest text that reads back as the same number."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _quote(value: str) -> str:
    if any(mark in value for mark in ',:\n"') or value != value.strip():
        return json.dumps(value, ensure_ascii=False)
    return value


def _split_schedule(sampler: str) -> tuple[str, str | None]:
    for schedule in _SCHEDULES:
        base = sampler[: -len(schedule) - 1]
        if sampler.endswith(" " + schedule) and base.strip():
            return base, schedule
    return sampler, None


def format_a1111(p: GenerationParameters) -> str:
    """The parameters as A1111 writes them; keys whose value is None are left out."""
    pairs: list[tuple[str, Any]] = [("Steps", p.steps)]
    if p.sampler is not None:
        sampler, schedule = _split_schedule(p.sampler)
        pairs += [("Sampler", sampler), ("Schedule type", schedule)]
    pairs += [("CFG scale", p.cfg), ("Seed", p.seed)]
    if p.width is not None and p.height is not None:
        pairs.append(("Size", f"{p.width}x{p.height}"))
    pairs += [("Model hash", p.model_hash), ("Model", p.model), ("Clip skip", p.clip_skip)]
    if p.loras:
        # A1111 drops colons and commas from LoRA names here, as they would break the list.
        names = [re.sub(r"[:,]", "", name) for name, _ in p.loras]
        pairs.append(("Lora hashes", ", ".join(f"{n}: {h}" for n, (_, h) in zip(names, p.loras))))
    pairs += [("Hires upscale", p.hires_scale), ("Hires steps", p.hires_steps),
              ("Denoising strength", p.hires_strength), *p.extra]
    line = ", ".join(
        f"{key}: {_number(value) if isinstance(value, float) else _quote(str(value))}"
        for key, value in pairs if value is not None
    )
    text = p.prompt
    if p.negative:
        text += f"\n{_NEGATIVE} {p.negative}"
    return f"{text}\n{line}" if line else text


# --- reading A1111's text -------------------------------------------------------------------------------


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def _pairs(line: str) -> list[tuple[str, str]] | None:
    """The line's ``Key: value`` pairs, or None when it does not start with one.

    A stretch without a colon (an unquoted value with a comma in it, written by some extension) is
    glued back onto the value before it rather than dropped."""
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        if match is not None:
            pairs.append((match[1], _unquote(match[2])))
            position = match.end()
            continue
        if not pairs:
            return None
        comma = line.find(",", position)
        end = len(line) if comma < 0 else comma
        if line[position:end].strip():
            key, value = pairs[-1]
            pairs[-1] = (key, f"{value},{line[position:end]}".rstrip())
        position = end + 1
    return pairs


def _is_parameters_line(pairs: list[tuple[str, str]] | None) -> bool:
    keys = [key for key, _ in pairs or ()]
    return "Steps" in keys or sum(key in _KNOWN_KEYS for key in keys) >= 2


def _typed(kind: type, text: str) -> Any:
    """``text`` as ``kind``, or None when it is not one ("20.0" is an int; "7" is a float)."""
    try:
        if kind is int:
            try:
                return int(text)
            except ValueError:
                number = float(text)
                return int(number) if number.is_integer() else None
        return kind(text.strip())
    except (ValueError, OverflowError):
        return None


def _lora_hashes(text: str) -> tuple[tuple[str, str], ...]:
    entries = (item.rpartition(":") if ":" in item else (item, "", "") for item in text.split(","))
    return tuple((name.strip(), short.strip()) for name, _, short in entries if name.strip())


def _apply_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    extra: list[tuple[str, str]] = []
    values = dict(pairs)
    for key, text in pairs:
        value = None
        if key in _PLAIN:
            field, kind = _PLAIN[key]
            value = found[field] = _typed(kind, text)
        elif key == "Sampler":
            schedule = values.get("Schedule type", "").strip()
            folded = schedule and schedule != _AUTOMATIC_SCHEDULE and not text.endswith(" " + schedule)
            value = found["sampler"] = f"{text} {schedule}" if folded else text
        elif key == "Schedule type" and "Sampler" in values:
            continue
        elif key == "Size" and (size := _SIZE.fullmatch(text)):
            value = found["width"] = int(size[1])
            found["height"] = int(size[2])
        elif key == "Lora hashes":
            value = found["loras"] = _lora_hashes(text)
        if value is None:  # an unknown key, or a known one whose value does not read: kept as text
            extra.append((key, text))
    return {**{k: v for k, v in found.items() if v is not None}, "extra": tuple(extra)}


def parse_a1111(text: str) -> GenerationParameters:
    """A1111's parameters text as fields; odd text gives what could be read and never raises."""
    text = text if isinstance(text, str) else ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    pairs = _pairs(lines[-1])
    found: dict[str, Any] = {}
    if _is_parameters_line(pairs):
        found = _apply_pairs(pairs or [])
        lines = lines[:-1]
    negative_at = next((i for i, line in enumerate(lines) if line.startswith(_NEGATIVE)), len(lines))
    prompt = "\n".join(lines[:negative_at]).strip()
    negative = "\n".join(lines[negative_at:])[len(_NEGATIVE):].strip()
    return GenerationParameters(prompt=prompt, negative=negative, source="a1111", **found)
