"""Filling a page's panels from their prompts with the Text-to-Manga backend.

    spec = fill_panels(spec, folder, ctx, numbers=None, on_step=bar, cancel=token)

Each panel is generated at its own shape (an SD checkpoint gets the panel's aspect ratio at about
512x640 pixels; an Origin model draws at its training size and the picture is
cropped), with the page's character reference, its style prompt, and a seed per panel: the
panel's own when it has one, else a new one that is written into the project so the panel can be
made again. Every request is checked before the first picture is drawn, and the project is saved
after each panel, so a cancel or a crash keeps the panels already made.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from engines.errors import InvalidRequestError
from engines.manga.compose import check_page, with_panel
from engines.manga.page_model import PageSpec
from engines.manga.panels import PanelRequest, backend_of, check, generate_panels
from engines.manga.project import import_picture, save_page
from engines.progress import CancelToken, OnStep, no_progress

def sd_panel_size(box: tuple[int, int, int, int], area: int = 512 * 640) -> tuple[int, int]:
    """An SD 1.5 size with the panel's aspect ratio and about ``area`` pixels, each side a multiple of 8
    (the VAE's factor) between 64 and 1024."""
    aspect = max(0.25, min(4.0, (box[2] - box[0]) / max(1, box[3] - box[1])))
    width = math.sqrt(area * aspect)
    height = width / aspect
    return (min(1024, max(64, round(width / 8) * 8)), min(1024, max(64, round(height / 8) * 8)))


def panels_to_fill(spec: PageSpec, numbers: Optional[list[int]] = None) -> list[int]:
    """Panels with a prompt: the ``numbers`` asked for, else those with no picture yet."""
    count = len(spec.panels)
    if numbers:
        for number in numbers:
            if not 1 <= number <= count or not spec.panels[number - 1].prompt.strip():
                raise InvalidRequestError(f"Panel {number} has no prompt to draw from: write one first.")
        return list(numbers)
    return [i + 1 for i, panel in enumerate(spec.panels) if panel.prompt.strip() and not panel.image]


def panel_requests(spec: PageSpec, paths: Any, numbers: list[int]) -> list[tuple[int, PanelRequest]]:
    """One checked PanelRequest per panel; raises before anything loads."""
    if numbers and not spec.model.strip():
        raise InvalidRequestError("Choose a model for the page to draw its panels from their prompts.")
    geometry = check_page(spec)
    requests = []
    for number in numbers:
        panel = spec.panels[number - 1]
        prompt = ", ".join(part for part in (spec.style_prompt.strip(), panel.prompt.strip()) if part)
        seed = panel.seed if panel.seed is not None else int.from_bytes(os.urandom(4), "little")
        request = PanelRequest(model=spec.model, prompt=prompt, negative=panel.negative, seed=seed,
                               reference=spec.reference, sampler=spec.sampler, steps=spec.steps, cfg=spec.cfg)
        if backend_of(request, paths.runs) == "sd15":
            width, height = sd_panel_size(geometry.panels[number - 1].box, spec.panel_pixels)
            request = replace(request, width=width, height=height)
        check(request, paths)
        requests.append((number, request))
    return requests


def fill_panels(spec: PageSpec, folder: Path, ctx: Any, *, numbers: Optional[list[int]] = None,
                on_step: OnStep = no_progress, cancel: Optional[CancelToken] = None,
                on_panel: Optional[Callable[[PageSpec], None]] = None) -> PageSpec:
    """Generate the panels' pictures; returns the spec with each panel's picture and seed filled in."""
    requests = panel_requests(spec, ctx.settings.paths, panels_to_fill(spec, numbers))
    for index, (number, request) in enumerate(requests):
        def step(s: int, total: int, message: str = "", preview: Any = None, index: int = index,
                 number: int = number) -> None:
            on_step(index * total + s, len(requests) * total, message or f"panel {number}", preview)

        if cancel is not None:
            cancel.raise_if_cancelled()
        result = generate_panels(request, ctx, on_step=step, cancel=cancel)
        path, seed = result.pictures[0]
        spec = with_panel(spec, number, image=import_picture(folder, number, Path(path)), seed=seed)
        save_page(spec, folder)
        if on_panel is not None:
            on_panel(spec)
    return spec
