"""The Pages section of the Text-to-Manga tab: compose panels into a page, letter it, export it.

Layout and wiring only; the page engine is ``engines.manga`` (compose, page_fill, page_output) and the
data shaping is studio/pages_view.py. Every change is written to the page's project file at once
(``outputs/pages/<name>/page.json``) and the preview is drawn from it again, so closing the browser
never loses a page. The jobs are also the public endpoints ``/compose_page`` (`app.py page`) and
``/chapter``, with the CLI's options as named parameters (the file's format instead of ``--output``).

Every picture, page and model a user names goes through ``ctx.access`` (studio/access.py), and pages
are made in, and found by name in, ``ctx.access.outputs``: a demo visitor's own folder, where the
pages the studio writes to must lie.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional

from engines.errors import InvalidRequestError
from engines.manga.page_model import ALIGNMENTS, BUBBLE_STYLES, TONE_MODES, PageSpec, Tone
from engines.progress import CancelToken
from studio.access import path_text
from studio.access import prompt_loras
from studio.pages_view import (CLICK_MODES, CUSTOM, add_bubble, bubble_choices, bubble_fields, clicked_bubble,
                               clicked_panel, delete_bubble, direction_value, edit_bubble, layout_choices,
                               page_choices, paper_choices, point_in_panel, refocus, render, settings_changes,
                               status, without_empty_tail)
from studio.queue import GPU_QUEUE
from studio.widgets import as_sentence, gradio_hints, progress_gauge

READINGS = ("right to left (manga)", "left to right")


def _progress(step: int, total: int, message: str = "", state: str = "idle") -> str:
    return progress_gauge("pages-progress-bar", "Panels", step, total, message, state)


def build(ctx, manga: dict[str, Any]) -> dict[str, Any]:
    """Lay out the section inside the current Blocks; ``manga`` is the tab's fields (model, reference, ...)."""
    import gradio as gr

    from engines.manga.fonts import FontBook
    from engines.manga.project import load_page, new_page_name, page_folder, save_page

    paths = ctx.settings.paths
    fonts = FontBook([paths.root / "fonts"])
    c: dict[str, Any] = {}

    # --- who may name what (studio/access.py) ------------------------------------------------------------
    def outputs_of(request: Any) -> Path:
        """Where this user's pages are made and found by name (a demo visitor: their own folder)."""
        return ctx.access.outputs(request, paths.outputs)

    def page_path(value: Any, request: Any, what: str, *, own: bool = False) -> Optional[Path]:
        """A page by its name in this user's outputs/pages, else by path, as ``ctx.access`` allows it; ``own``
        (the studio will write to it): a demo visitor's must be one of their own pages."""
        from engines.manga.project import find_page

        text = path_text(value)
        if not text:
            return None
        outputs = outputs_of(request)
        path = Path(ctx.access.path(str(find_page(outputs, text) or text), request, what=what))
        if own and outputs != paths.outputs and not path.resolve().is_relative_to(outputs.resolve()):
            raise InvalidRequestError(f"{what} '{text}' is not one of your pages: on a demo link, use a page you made.")
        return path

    def numbered_path(value: str, request: Any) -> str:
        """A "[N=]picture" value with its picture checked by ``ctx.access``."""
        number, path = re.match(r"^(\d+=)?(.*)$", str(value), re.S).groups()
        return (number or "") + ctx.access.path(path, request, what="The panel's picture")

    def check_models(model: Any, reference: Any, prompts: list[str], request: Any) -> tuple[str, str]:
        """The model and reference as ``ctx.access`` allows them, and every LoRA the prompts name checked."""
        for name in prompt_loras(*prompts):
            ctx.access.model(name, request, what="The LoRA")
        return (ctx.access.model(model, request, what="The model"),
                ctx.access.path(reference, request, what="The reference picture"))

    # --- the page on disk and on screen --------------------------------------------------------
    def current(state: dict) -> tuple[PageSpec, Path]:
        if not state.get("folder"):
            raise gr.Error("Start a new page or open one first.")
        with as_sentence():
            return load_page(Path(state["folder"]))

    def commit(state: dict, spec: PageSpec, folder: Path, *, bubble: Optional[int] = None,
               panel: Optional[int] = None) -> tuple:
        """Save, draw, remember what was drawn; the updates every edit returns."""
        with as_sentence():
            save_page(spec, folder)
            composed = render(spec, folder, fonts)
        state.update(folder=str(folder), composed=composed)
        if bubble is not None:
            state["bubble"] = bubble
        bubble = state.get("bubble")
        if bubble is not None and not 0 <= bubble < len(spec.bubbles):
            bubble = state["bubble"] = None
        panels = list(range(1, len(composed.geometry.panels) + 1))
        panel = panel if panel in panels else state.get("panel") if state.get("panel") in panels else 1
        state["panel"] = panel
        values = bubble_fields(spec, bubble)
        if values:
            values["font"] = values["font"] or None  # "" is the default font: the picker shows none chosen
        editor = [gr.update(value=values[k]) if k in values else gr.skip()
                  for k in ("text", "style", "font_size", "bold", "align", "direction", "font")]
        return (state, composed.image, status(spec, folder, composed),
                gr.update(choices=bubble_choices(spec), value=bubble), gr.update(choices=panels, value=panel),
                gr.update(value=spec.panels[panel - 1].prompt if panel <= len(spec.panels) else ""),
                gr.update(value=spec.panels[panel - 1].fit if panel <= len(spec.panels) else "cover"), *editor)

    # --- public endpoints ------------------------------------------------------------------------
    def compose_page(layout: str = "", project: str = "", panel: Optional[list[str]] = None,
                     prompt: Optional[list[str]] = None, bubble: Optional[list[str]] = None, reading: str = "",
                     tone: str = "", lpi: Optional[float] = None, tone_angle: Optional[float] = None, size: str = "",
                     dpi: int = 0, margin: Optional[float] = None, gutter: Optional[float] = None,
                     bleed: Optional[float] = None, fit: str = "", model: str = "", reference: str = "",
                     style: str = "", seed: Optional[int] = None, sampler: str = "", steps: int = 0,
                     cfg: float = 0.0, name: str = "", output_format: str = "png", request: gr.Request = None) -> Iterator[Any]:
        """Compose a page, as `app.py page` does. project: a saved page to start from (its name or path); panel:
        pictures on the studio's machine, "[N=]path"; prompt: "[N=]text", drawn with model; bubble:
        "N:text[:style]"; reading "rtl"/"ltr"; tone none/grey/screentone/ink; size B5/A5/A4/US comic/WxHmm;
        margin, gutter, bleed in mm; fit cover/contain. On a shared studio every path must lie in its data folder.
        Returns the written file and the project's folder (the page opens in the studio's Pages section)."""
        from engines.manga.page_request import PageRequest, make_page

        job_ctx = ctx.with_outputs(outputs_of(request))
        with as_sentence():
            model, reference = check_models(model, reference, [*(prompt or ()), style], request)
            found = page_path(project, request, "The page project", own=True)
            job = PageRequest(layout=layout or None, panels=tuple(numbered_path(p, request) for p in panel or ()),
                              prompts=tuple(prompt or ()), bubbles=tuple(bubble or ()), reading=reading or None,
                              tone=tone or None, lpi=lpi, tone_angle=tone_angle, size=size or None,
                              dpi=int(dpi) or None, margin=margin, gutter=gutter, bleed=bleed, fit=fit or None,
                              model=model or None, reference=reference or None, style=style or None, seed=seed,
                              sampler=sampler or None, steps=int(steps) or None, cfg=float(cfg) or None,
                              name=name or None, project=str(found) if found else None)
            yield from ctx.jobs.updates("page", lambda on_step, cancel: make_page(
                job, job_ctx, suffix=f".{output_format.strip('.').lower()}", on_step=on_step, cancel=cancel,
                fonts=fonts), lambda result: {"file": str(result.output), "project": str(result.folder),
                                              "width": result.size[0], "height": result.size[1]})

    def chapter(page: list[str], reading: str = "", title: str = "", output_format: str = "cbz",
                request: gr.Request = None) -> dict:
        """Pages in order (page folders or names under outputs/pages, or page images) as one CBZ or PDF, as
        `app.py chapter` does; reading "rtl"/"ltr" (default: what the page projects say, else right to left)."""
        from engines.manga.page_output import export_chapter, reading_of

        if not page:
            raise gr.Error("Choose the pages of the chapter, in reading order.")
        folder = outputs_of(request) / "pages" / "chapters"
        stem = (title or "chapter").strip().replace("/", "-").replace("\\", "-") or "chapter"
        output = folder / f"{stem}.{output_format.strip('.').lower()}"
        with as_sentence():
            sources = [page_path(p, request, "The page") or Path() for p in page]
            rtl = (reading or reading_of(sources) or "rtl") != "ltr"
            folder.mkdir(parents=True, exist_ok=True)
            images = ctx.jobs.run("chapter", lambda on_step, cancel: export_chapter(
                sources, output, rtl=rtl, title=title, fonts=fonts), uses_gpu=False)
        return {"file": str(output), "pages": len(images)}

    gradio_hints(compose_page, chapter)  # gradio hides the request from the API by its annotation

    # --- layout ---------------------------------------------------------------------------------------
    gr.Markdown("Compose panels into a page: pick a layout, drop a picture into each panel (or draw it from a "
                "prompt with the model above), click the page to place speech bubbles, then export. Panel 1 is "
                "read first; every change is saved in `outputs/pages/`.")
    with gr.Row():
        # A demo visitor's page starts with no pages: the load event fills in each user's own.
        own_pages = [] if ctx.access.demo else page_choices(paths.outputs)
        c["page_pick"] = gr.Dropdown(label="Page", choices=own_pages, elem_id="pages-pick", scale=3)
        new_page = gr.Button("New page", variant="primary", elem_id="pages-new", scale=1)
        refresh_pages = gr.Button("↻", size="sm", min_width=40, elem_id="pages-refresh", scale=0)
    with gr.Row():
        with gr.Column(scale=2, min_width=380):
            with gr.Accordion("Page: layout, paper, reading order", open=True):
                with gr.Row():
                    c["layout"] = gr.Dropdown(label="Layout", choices=layout_choices(), value="2x2",
                                              elem_id="pages-layout")
                    c["rows"] = gr.Textbox(label="Custom rows", placeholder="1; 2 1; 1 1 1", elem_id="pages-rows")
                c["reading"] = gr.Radio(list(READINGS), value=READINGS[0], label="Reading order",
                                        elem_id="pages-reading")
                with gr.Row():
                    c["paper"] = gr.Dropdown(label="Paper", choices=paper_choices(), value="B5", elem_id="pages-paper")
                    c["custom_size"] = gr.Textbox(label="Custom size", placeholder="182x257mm or 7x10in")
                    c["dpi"] = gr.Slider(72, 600, value=300, step=1, label="DPI", elem_id="pages-dpi")
                with gr.Row():
                    c["margin"] = gr.Number(label="Margin (mm)", value=10, minimum=0, maximum=40)
                    c["gutter"] = gr.Number(label="Gutter (mm)", value=4, minimum=0, maximum=30)
                    c["bleed"] = gr.Number(label="Bleed (mm)", value=0, minimum=0, maximum=10)
            with gr.Accordion("Manga look: greyscale, screentone, ink", open=False):
                with gr.Row():
                    c["tone_mode"] = gr.Radio(list(TONE_MODES), value="none", label="Tone", elem_id="pages-tone")
                    c["tone_scope"] = gr.Radio(["whole page", "selected panel"], value="whole page", label="Apply to")
                with gr.Row():
                    c["lpi"] = gr.Slider(20, 150, value=60, step=1, label="Screentone lines per inch")
                    c["angle"] = gr.Slider(0, 90, value=45, step=1, label="Screentone angle")
                    c["threshold"] = gr.Slider(1, 254, value=128, step=1, label="Ink threshold")
            with gr.Accordion("Panel: picture or prompt", open=True):
                with gr.Row():
                    c["panel"] = gr.Dropdown(label="Panel", choices=[1, 2, 3, 4], value=1, elem_id="pages-panel")
                    c["fit"] = gr.Radio(["cover", "contain"], value="cover", label="Fit",
                                    info="cover crops to fill (set the focus point by a click); contain shows all")
                c["picture"] = gr.Image(label="Drop a picture for this panel", type="filepath", height=150,
                                        sources=["upload", "clipboard"], elem_id="pages-picture")
                use_history = gr.Button("Use the picture chosen in the history above", size="sm",
                                        elem_id="pages-use-history")
                c["prompt"] = gr.Textbox(label="Panel prompt (drawn with the model above)", lines=2,
                                         elem_id="pages-prompt")
                c["style_prompt"] = gr.Textbox(label="Added to every panel's prompt", elem_id="pages-style",
                                               placeholder="monochrome, manga, screentone")
                with gr.Row():
                    draw_one = gr.Button("Draw this panel", elem_id="pages-draw")
                    draw_all = gr.Button("Draw every empty panel", elem_id="pages-draw-all")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="pages-cancel")
                progress = gr.HTML(_progress(0, 0, "Ready."), elem_id="pages-progress")
            with gr.Accordion("Lettering: click the page to place a bubble", open=True):
                c["click_mode"] = gr.Radio(list(CLICK_MODES), value=CLICK_MODES[0], label="A click on the page will",
                                           elem_id="pages-click-mode")
                c["bubble"] = gr.Dropdown(label="Bubble", choices=[], elem_id="pages-bubble")
                c["text"] = gr.Textbox(label="Text", lines=2, elem_id="pages-text", placeholder="行くぞ！ / Let's go!")
                with gr.Row():
                    c["style"] = gr.Dropdown(list(BUBBLE_STYLES), value="speech", label="Style",
                                             elem_id="pages-style-pick")
                    c["font_size"] = gr.Slider(4, 36, value=9, step=0.5, label="Size (pt)")
                    c["bold"] = gr.Checkbox(label="Bold")
                with gr.Row():
                    c["align"] = gr.Radio(list(ALIGNMENTS), value="center", label="Align")
                    c["direction"] = gr.Radio(["auto", "vertical", "horizontal"], value="auto", label="Direction",
                                              info="auto: vertical for Japanese")
                    c["font"] = gr.Dropdown(fonts.names(), value=None, label="Font", allow_custom_value=False)
                delete = gr.Button("Delete bubble", size="sm", variant="stop", elem_id="pages-delete")
        with gr.Column(scale=3):
            c["preview"] = gr.Image(label="Page (click to letter)", type="pil", interactive=False, height=820,
                                    buttons=["fullscreen"], elem_id="pages-preview")
            c["status"] = gr.Markdown("Start a new page or open one.", elem_id="pages-status")
            with gr.Row():
                export_png = gr.Button("Export PNG", elem_id="pages-export-png")
                export_pdf = gr.Button("Export PDF", elem_id="pages-export-pdf")
            c["export"] = gr.File(label="Exported page", interactive=False, elem_id="pages-export-file")
            with gr.Accordion("Chapter: pages in order as CBZ or PDF", open=False):
                c["chapter_pages"] = gr.Dropdown(label="Pages, in reading order", multiselect=True,
                                                 choices=own_pages, elem_id="pages-chapter-pages")
                with gr.Row():
                    c["chapter_title"] = gr.Textbox(label="Title", value="chapter-01")
                    c["chapter_reading"] = gr.Radio(["rtl", "ltr"], value="rtl", label="Book reads")
                with gr.Row():
                    make_cbz_button = gr.Button("Make CBZ", elem_id="pages-make-cbz")
                    make_pdf_button = gr.Button("Make PDF", elem_id="pages-make-pdf")
                c["chapter_file"] = gr.File(label="Chapter", interactive=False, elem_id="pages-chapter-file")
    state = gr.State({})
    gr.api(compose_page, api_name="compose_page", **GPU_QUEUE)
    gr.api(chapter, api_name="chapter")

    # --- handlers ------------------------------------------------------------------------------------
    shown = [state, c["preview"], c["status"], c["bubble"], c["panel"], c["prompt"], c["fit"], c["text"],
             c["style"], c["font_size"], c["bold"], c["align"], c["direction"], c["font"]]
    settings_inputs = [c[k] for k in ("layout", "rows", "reading", "paper", "custom_size", "dpi", "margin", "gutter",
                                      "bleed")]

    def tone_of(mode: str, lpi: float, angle: float, threshold: float) -> Tone:
        return Tone(mode=mode, lpi=float(lpi), angle=float(angle), threshold=int(threshold))

    def new(state: dict, request: gr.Request, *values: Any):
        outputs = outputs_of(request)
        with as_sentence():
            spec = PageSpec(name=new_page_name(outputs), **settings_changes(*values))
        state["bubble"] = None
        folder = page_folder(outputs, spec.name)
        return (*commit(state, spec, folder, panel=1),
                gr.update(choices=page_choices(outputs), value=str(folder)))

    def open_page(state: dict, folder: Optional[str], request: gr.Request):
        if not folder:
            return tuple(gr.skip() for _ in shown) + tuple(gr.skip() for _ in settings_inputs)
        with as_sentence():
            folder = str(page_path(folder, request, "The page", own=True))
        state.update(folder=folder, bubble=None)
        spec, where = current(state)
        layouts = {value for _, value in layout_choices()}
        papers = set(paper_choices())
        settings = [gr.update(value=spec.layout if spec.layout in layouts else CUSTOM),
                    gr.update(value="" if spec.layout in layouts else spec.layout),
                    gr.update(value=READINGS[0] if spec.reading == "rtl" else READINGS[1]),
                    gr.update(value=spec.size if spec.size in papers else CUSTOM),
                    gr.update(value="" if spec.size in papers else spec.size), gr.update(value=spec.dpi),
                    gr.update(value=spec.margin_mm), gr.update(value=spec.gutter_mm), gr.update(value=spec.bleed_mm)]
        return (*commit(state, spec, where, panel=1), *settings)

    def apply_settings(state: dict, *values: Any):
        if not state.get("folder"):
            return tuple(gr.skip() for _ in shown)
        spec, folder = current(state)
        with as_sentence():
            return commit(state, without_empty_tail(replace(spec, **settings_changes(*values))), folder)

    def apply_tone(state: dict, mode: str, scope: str, lpi: float, angle: float, threshold: float, panel: int):
        from engines.manga.compose import with_panel

        spec, folder = current(state)
        tone = tone_of(mode, lpi, angle, threshold)
        if scope == "selected panel":
            spec = with_panel(spec, int(panel or 1), tone=None if mode == "none" else tone)
        else:
            spec = replace(spec, tone=tone)
        return commit(state, spec, folder)

    def choose_panel(state: dict, panel: Optional[int]):
        if not state.get("folder") or not panel:
            return tuple(gr.skip() for _ in shown)
        spec, folder = current(state)
        return commit(state, spec, folder, panel=int(panel))

    def set_picture(state: dict, panel: int, picture: Optional[str], request: gr.Request):
        from engines.manga.compose import with_panel
        from engines.manga.project import import_picture

        if not picture:
            return (*tuple(gr.skip() for _ in shown), gr.skip())
        spec, folder = current(state)
        with as_sentence():
            picture = ctx.access.path(picture, request, what="The panel's picture")
            name = import_picture(folder, int(panel or 1), Path(str(picture)))
        number = int(panel or 1)
        spec = with_panel(spec, number, image=name, focus=(0.5, 0.5))
        return (*commit(state, spec, folder, panel=next_empty(spec, number)), None)

    def next_empty(spec: PageSpec, after: int) -> int:
        """The panel to fill next, in reading order: so dropping pictures one after another fills the page."""
        from engines.manga.layouts import resolve_layout

        count = len(resolve_layout(spec.layout).panels)
        for number in [*range(after + 1, count + 1), *range(1, after)]:
            if number > len(spec.panels) or not (spec.panels[number - 1].image or spec.panels[number - 1].prompt):
                return number
        return after

    def from_history(state: dict, panel: int, chosen: Optional[str], request: gr.Request):
        if not chosen:
            raise gr.Error("Click a picture in the history first (the Panels section above).")
        return set_picture(state, panel, chosen, request)[:-1]

    def set_panel_text(state: dict, panel: int, prompt: str, fit: str, style_prompt: str):
        from engines.manga.compose import with_panel

        spec, folder = current(state)
        spec = with_panel(replace(spec, style_prompt=style_prompt or ""), int(panel or 1), prompt=prompt or "",
                          fit=fit or "cover")
        return commit(state, spec, folder)

    def click(state: dict, mode: str, bubble: Optional[int], text: str, style: str, font_size: float, bold: bool,
              align: str, direction: str, font: Optional[str], event: gr.SelectData):
        spec, folder = current(state)
        composed = state.get("composed") or render(spec, folder, fonts)
        x, y = (event.index or (0, 0))[:2]
        hit = clicked_bubble(composed, x, y)
        if hit is not None and mode in (CLICK_MODES[0], CLICK_MODES[2]) and hit != bubble:
            return commit(state, spec, folder, bubble=hit, panel=spec.bubbles[hit].panel)  # a click selects it
        where = clicked_panel(composed, x, y)
        with as_sentence():
            if mode == CLICK_MODES[0]:
                if where is None:
                    raise gr.Error("Click inside a panel to place the bubble.")
                values = dict(text=text, style=style, font_size=font_size, bold=bold, align=align, direction=direction,
                              font=font)
                spec = add_bubble(spec, where[0], where[1], where[2], values)
                return commit(state, spec, folder, bubble=len(spec.bubbles) - 1, panel=where[0])
            if mode == CLICK_MODES[3]:
                if where is None:
                    raise gr.Error("Click inside the panel whose picture should move.")
                return commit(state, refocus(spec, folder, composed, *where), folder, panel=where[0])
            if bubble is None:
                raise gr.Error("Choose a bubble first: click it on the page, or pick it in the Bubble list.")
            panel = spec.bubbles[int(bubble)].panel
            fx, fy = point_in_panel(composed, panel, x, y)
            changes = dict(tail_x=fx, tail_y=fy) if mode == CLICK_MODES[1] else dict(x=fx, y=fy)
            return commit(state, edit_bubble(spec, int(bubble), **changes), folder)

    def edit(state: dict, bubble: Optional[int], text: str, style: str, font_size: float, bold: bool, align: str,
             direction: str, font: Optional[str]):
        if bubble is None or not state.get("folder"):
            return tuple(gr.skip() for _ in shown)
        spec, folder = current(state)
        with as_sentence():
            spec = edit_bubble(spec, int(bubble), text=text or "…", style=style, font_size=float(font_size),
                               bold=bool(bold), align=align, vertical=direction_value(direction), font=font or "")
            return commit(state, spec, folder)

    def pick_bubble(state: dict, bubble: Optional[int]):
        if bubble is None or not state.get("folder"):
            return tuple(gr.skip() for _ in shown)
        spec, folder = current(state)
        return commit(state, spec, folder, bubble=int(bubble))

    def remove(state: dict, bubble: Optional[int]):
        spec, folder = current(state)
        with as_sentence():
            spec = delete_bubble(spec, -1 if bubble is None else int(bubble))
        state["bubble"] = None
        return commit(state, spec, folder)

    def draw(state: dict, numbers: Optional[list[int]], prompt: Optional[str], style_prompt: str, model: str,
             reference: Optional[str], sampler: str, steps: float, cfg: float, request: Any):
        from engines.manga.compose import with_panel
        from engines.manga.page_fill import fill_panels, panel_requests, panels_to_fill

        spec, folder = current(state)
        job_ctx = ctx.with_outputs(outputs_of(request))
        spec = replace(spec, sampler=sampler or "", steps=int(steps or 0), cfg=float(cfg or 0),
                       style_prompt=style_prompt or "")
        if numbers and prompt is not None:  # the prompt as typed, even if the box has not lost focus yet
            spec = with_panel(spec, numbers[0], prompt=prompt)
        with as_sentence():
            wanted = panels_to_fill(spec, numbers)
            if not wanted:
                raise gr.Error("No panel to draw: write a prompt for a panel that has no picture.")
            prompts = [spec.style_prompt, *(spec.panels[n - 1].prompt for n in wanted)]
            model, reference = check_models(model, reference, prompts, request)
            spec = replace(spec, model=str(model or ""), reference=str(reference or ""))
            panel_requests(spec, job_ctx.settings.paths, wanted)
        token = state["cancel"] = CancelToken()
        skip = tuple(gr.skip() for _ in shown)
        yield (_progress(0, 0, "Starting…", "running"), *skip)
        step = total = 0
        call = lambda on_step, c: fill_panels(spec, folder, job_ctx, numbers=wanted,  # noqa: E731
                                              on_step=on_step, cancel=c)
        for event in ctx.jobs.stream("page", call, token):
            if event.kind == "progress":
                step, total = event.step, event.total
                yield (_progress(step, total, event.message, "running"), *skip)
            elif event.kind == "result":
                yield (_progress(total or 1, total or 1, f"{len(wanted)} panel(s) drawn", "done"),
                       *commit(state, event.result, folder))
            elif event.kind == "cancelled":
                spec, folder = current(state)  # the panels made before the cancel are saved
                yield (_progress(step, total, event.message, "stopped"), *commit(state, spec, folder))
            else:
                raise gr.Error(event.error)

    def draw_panel(state: dict, panel: int, prompt: str, style_prompt: str, model: str, reference: Optional[str],
                   sampler: str, steps: float, cfg: float, request: gr.Request):
        yield from draw(state, [int(panel or 1)], prompt, style_prompt, model, reference, sampler, steps, cfg,
                        request)

    def draw_empty(state: dict, style_prompt: str, model: str, reference: Optional[str], sampler: str, steps: float,
                   cfg: float, request: gr.Request):
        yield from draw(state, None, None, style_prompt, model, reference, sampler, steps, cfg, request)

    def export(state: dict, suffix: str):
        from engines.manga.page_output import export_page
        from engines.manga.project import export_name

        spec, folder = current(state)
        with as_sentence():
            target = export_name(folder, spec, suffix)
            export_page(spec, folder, target, fonts=fonts)
        return str(target)

    def make_chapter(pages: Optional[list[str]], title: str, reading: str, output_format: str, request: Any) -> str:
        return chapter(list(pages or []), reading, title, output_format, request)["file"]

    def make_cbz(pages: Optional[list[str]], title: str, reading: str, request: gr.Request) -> str:
        return make_chapter(pages, title, reading, "cbz", request)

    def make_pdf(pages: Optional[list[str]], title: str, reading: str, request: gr.Request) -> str:
        return make_chapter(pages, title, reading, "pdf", request)

    def pages_of(request: gr.Request) -> tuple:
        """This user's pages for the page picker and the chapter's list (also the page's load event)."""
        choices = page_choices(outputs_of(request))
        return gr.update(choices=choices), gr.update(choices=choices)

    gradio_hints(new, open_page, set_picture, from_history, click, draw_panel, draw_empty, make_cbz, make_pdf,
                 pages_of)

    private = dict(api_visibility="private", show_progress="hidden")
    new_page.click(new, inputs=[state, *settings_inputs], outputs=[*shown, c["page_pick"]], **private)
    refresh_pages.click(pages_of, outputs=[c["page_pick"], c["chapter_pages"]], queue=False, **private)
    c["page_pick"].input(open_page, inputs=[state, c["page_pick"]], outputs=[*shown, *settings_inputs], **private)
    for widget in settings_inputs:
        widget.input(apply_settings, inputs=[state, *settings_inputs], outputs=shown, trigger_mode="always_last",
                     **private)
    tone_inputs = [state, c["tone_mode"], c["tone_scope"], c["lpi"], c["angle"], c["threshold"], c["panel"]]
    for widget in tone_inputs[1:-1]:
        widget.input(apply_tone, inputs=tone_inputs, outputs=shown, trigger_mode="always_last", **private)
    c["panel"].input(choose_panel, inputs=[state, c["panel"]], outputs=shown, **private)
    c["picture"].upload(set_picture, inputs=[state, c["panel"], c["picture"]], outputs=[*shown, c["picture"]],
                        **private)
    use_history.click(from_history, inputs=[state, c["panel"], manga["selected"]], outputs=shown, **private)
    panel_text = [state, c["panel"], c["prompt"], c["fit"], c["style_prompt"]]
    for widget in (c["prompt"], c["style_prompt"]):
        widget.blur(set_panel_text, inputs=panel_text, outputs=shown, **private)
    c["fit"].input(set_panel_text, inputs=panel_text, outputs=shown, **private)
    lettering = [c["text"], c["style"], c["font_size"], c["bold"], c["align"], c["direction"], c["font"]]
    c["preview"].select(click, inputs=[state, c["click_mode"], c["bubble"], *lettering], outputs=shown, **private)
    for widget in lettering:
        widget.input(edit, inputs=[state, c["bubble"], *lettering], outputs=shown, trigger_mode="always_last",
                     **private)
    c["bubble"].input(pick_bubble, inputs=[state, c["bubble"]], outputs=shown, **private)
    delete.click(remove, inputs=[state, c["bubble"]], outputs=shown, **private)
    model_inputs = [manga["fields"][k] for k in ("model", "reference", "sampler", "steps", "cfg")]
    draw_one.click(draw_panel, inputs=[state, c["panel"], c["prompt"], c["style_prompt"], *model_inputs],
                   outputs=[progress, *shown], api_visibility="private", **GPU_QUEUE)
    draw_all.click(draw_empty, inputs=[state, c["style_prompt"], *model_inputs], outputs=[progress, *shown],
                   api_visibility="private", **GPU_QUEUE)
    cancel.click(lambda s: s.get("cancel") and s["cancel"].cancel(), inputs=state, queue=False,
                 api_visibility="private")
    export_png.click(lambda s: export(s, ".png"), inputs=state, outputs=c["export"], **private)
    export_pdf.click(lambda s: export(s, ".pdf"), inputs=state, outputs=c["export"], **private)
    chapter_inputs = [c["chapter_pages"], c["chapter_title"], c["chapter_reading"]]
    make_cbz_button.click(make_cbz, inputs=chapter_inputs, outputs=c["chapter_file"], **private)
    make_pdf_button.click(make_pdf, inputs=chapter_inputs, outputs=c["chapter_file"], **private)
    return {"fields": c, "compose_page": compose_page, "chapter": chapter, "state": state, "new": new,
            "open_page": open_page, "set_picture": set_picture, "draw_panel": draw_panel,
            "on_load": (pages_of, [c["page_pick"], c["chapter_pages"]])}
