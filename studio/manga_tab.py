"""The Text-to-Manga tab: panels from a prompt with an Origin model or an SD 1.5 checkpoint.

Layout and wiring only; the engine call is ``engines.manga.panels.generate_panels`` and the data
shaping is studio/manga_view.py. The generate job is also the public endpoint ``/generate`` (named
parameters, the request's field names); every other event is private UI plumbing.

Every picture and model a user names goes through ``ctx.access`` (studio/access.py) before any model
loads, and the results go to, and the history is read from, ``ctx.access.outputs``: on a shared studio a
visitor stays inside the data folder, and a demo visitor sees only their own results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

from engines.errors import StudioError
from engines.manga.panels import PanelRequest
from engines.progress import CancelToken
from studio.manga_view import (MODELS, PICTURES, RANDOM_SEED, SD_SAMPLERS, SIZE_PRESETS, embedding_names,
                               fields_from_png, history, lora_names, model_choices, parameters_text,
                               progress_html, request_from_values, with_lora, with_word)
from studio import pages_section
from studio.queue import GPU_QUEUE
from studio.widgets import as_sentence, gallery_path, gradio_hints, selected_item

PREVIEW_EVERY = 2  # steps between live previews
ORIGIN_SAMPLERS = ("ddim", "dpm++", "euler_a", "ddpm")


def build(ctx) -> dict[str, Any]:
    """Lay out the tab inside the current Blocks; returns its components and handlers for wiring and tests."""
    import gradio as gr

    paths = ctx.settings.paths
    f: dict[str, Any] = {}

    def outputs_of(request: Any) -> Path:
        """Where this user's results go and their history is read (a demo visitor: their own folder)."""
        return ctx.access.outputs(request, paths.outputs)

    def checked(values: dict[str, Any], request: Any) -> tuple[PanelRequest, Any]:
        """The widgets' values as a checked request, each picture and model first checked by ``ctx.access``,
        and the context whose engines write to this user's outputs; one sentence before any model loads."""
        from engines.manga.panels import check

        job_ctx = ctx.with_outputs(outputs_of(request))
        with as_sentence():
            job = request_from_values(ctx.access.values(values, request, pictures=PICTURES, models=MODELS))
            check(job, job_ctx.settings.paths)
        return job, job_ctx

    def picture(value: Any, request: Any, what: str = "The picture") -> Optional[str]:
        """A picture picked in a history or dropped in, as ``ctx.access`` lets this user have it."""
        with as_sentence():
            return ctx.access.path(value, request, what=what) or None

    def generate(prompt: str, model: str, negative: str = "", sampler: str = "", steps: int = 0, cfg: float = 0.0,
                 width: int = 0, height: int = 0, seed: int = RANDOM_SEED, batch: int = 1,
                 batch_size: int = 1, clip_skip: int = 2, vae: str = "", reference: str = "",
                 reference_scale: float = 0.6, reference_variant: str = "plain", second_reference: str = "",
                 reference_split: str = "left-right", hires: float = 1.0,
                 hires_strength: float = 0.5, hires_upscaler: str = "lanczos", upscale: int = 1,
                 detail: float = 0.3, vibrancy: float = 0.15, request: gr.Request = None) -> Iterator[Any]:
        """Panels from a prompt; model is an Origin run or an SD 1.5 checkpoint (name in models/, path or HF id);
        reference is a picture of the character on the studio's machine (kept across panels); second_reference
        a second character, drawn in the other half (reference_split "left-right" or "top-bottom"); upscale,
        detail and vibrancy are Origin's. On a shared studio every picture and model path must lie in its data
        folder. The names are `app.py generate`'s flags (batch: how many pictures, seeds seed, seed+1, ...;
        hires: the hires fix's scale, 1 = off); batch_size is how many of them are drawn at once (SD).

        Returns one entry per picture: its file on the studio's machine, its seed and its A1111 parameters
        (streamed after {"progress", "total", "message"} updates: predict() gives the pictures)."""
        from engines.manga.panels import generate_panels

        values = {k: v for k, v in locals().items() if k not in ("request", "batch", "hires")}
        job, job_ctx = checked({**values, "batch_count": batch, "hires_scale": hires}, request)
        # "file", not "path": gradio_client would take a dict with a "path" for a file and download it.
        def pictures(result: Any) -> list[dict]:
            return [{"file": str(path), "seed": seed, "parameters": parameters_text(str(path))}
                    for path, seed in result.pictures]

        with as_sentence():
            yield from ctx.jobs.updates("generate", lambda on_step, cancel: generate_panels(
                job, job_ctx, on_step=on_step, cancel=cancel), pictures)

    def backend_hint(model: Optional[str], request: gr.Request = None) -> str:
        from engines.manga.panels import is_origin_model

        if not model:
            return "Choose a model to draw with."
        try:
            model = ctx.access.model(model, request, what="The model")
        except StudioError as error:
            return str(error)
        if is_origin_model(str(model), paths.runs):
            return "**Origin model**: samplers ddim, dpm++, euler_a, ddpm; Upscale and enhancement apply."
        return "**SD 1.5 checkpoint**: A1111 prompts, LoRAs, embeddings, clip skip and the hires fix apply."

    with gr.Tab("Text-to-Manga", id="manga", elem_id="tab-manga"):
        gr.Markdown("Panels from a prompt, with your Origin model or an SD 1.5 anime checkpoint. SD checkpoints "
                    "read A1111's prompts: `(word:1.2)`, `[word]`, `BREAK`, `<lora:name:0.8>`, embedding names.")
        choices = model_choices(paths)
        with gr.Row():
            with gr.Column(scale=2, min_width=380):
                with gr.Row():
                    f["model"] = gr.Dropdown(label="Model", choices=choices, allow_custom_value=True,
                                             value=choices[0][1] if choices else None,
                                             info="An Origin run or an SD 1.5 checkpoint in models/; or type a "
                                                  "Hugging Face id (downloaded on first use).",
                                             elem_id="manga-model", scale=4)
                    refresh_models = gr.Button("↻", size="sm", min_width=40, elem_id="manga-refresh-models", scale=0)
                backend_note = gr.Markdown(backend_hint(choices[0][1] if choices else None),
                                           elem_id="manga-backend")
                f["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id="manga-prompt",
                                         placeholder="1girl, rooftop, night, (screentone:1.2)")
                f["negative"] = gr.Textbox(label="Negative prompt", lines=2, elem_id="manga-negative",
                                           placeholder="lowres, blurry, extra fingers")
                with gr.Row():
                    f["sampler"] = gr.Dropdown(label="Sampler", choices=list(SD_SAMPLERS) + list(ORIGIN_SAMPLERS),
                                               value=SD_SAMPLERS[0], allow_custom_value=True, elem_id="manga-sampler")
                    f["steps"] = gr.Slider(1, 150, value=25, step=1, label="Steps", elem_id="manga-steps")
                    f["cfg"] = gr.Slider(1, 30, value=7, step=0.5, label="CFG scale", elem_id="manga-cfg")
                size_preset = gr.Radio([*SIZE_PRESETS, "custom"], value="tall 2:3", label="Panel shape",
                                       elem_id="manga-size-preset")
                with gr.Row():
                    f["width"] = gr.Number(label="Width", value=512, precision=0, step=64, elem_id="manga-width")
                    f["height"] = gr.Number(label="Height", value=768, precision=0, step=64, elem_id="manga-height")
                    f["seed"] = gr.Number(label="Seed (-1 = random)", value=RANDOM_SEED, precision=0,
                                          elem_id="manga-seed")
                    random_seed = gr.Button("🎲 Random", size="sm", min_width=90, elem_id="manga-random-seed")
                    reuse_seed = gr.Button("♻ Last seed", size="sm", min_width=90, elem_id="manga-reuse-seed")
                with gr.Row():
                    f["batch_count"] = gr.Slider(1, 16, value=1, step=1, label="Batch count", elem_id="manga-count")
                    f["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size (SD)", elem_id="manga-size")
                with gr.Accordion("Character reference: keep one character across panels", open=False):
                    with gr.Row():
                        f["reference"] = gr.Image(label="Reference picture", type="filepath", height=180,
                                                  sources=["upload", "clipboard"], elem_id="manga-reference")
                        with gr.Column():
                            f["reference_scale"] = gr.Slider(0, 1.5, value=0.6, step=0.05,
                                                             label="Strength (SD)", elem_id="manga-reference-scale")
                            f["reference_variant"] = gr.Radio(["plain", "face"], value="plain", label="IP-Adapter (SD)",
                                                              info="plain: outfit and colours; face: a cropped face")
                        f["second_reference"] = gr.Image(label="Second character (SD, optional)", type="filepath",
                                                         height=180, sources=["upload", "clipboard"],
                                                         elem_id="manga-second-reference")
                    f["reference_split"] = gr.Radio(["left-right", "top-bottom"], value="left-right",
                                                    label="Two characters: first on the left (top), second on the "
                                                          "right (bottom)")
                with gr.Accordion("SD 1.5: clip skip, LoRAs, embeddings, VAE, hires fix", open=False):
                    with gr.Row():
                        f["clip_skip"] = gr.Slider(1, 4, value=2, step=1, label="Clip skip", elem_id="manga-clip")
                        f["vae"] = gr.Textbox(label="VAE (empty: the checkpoint's)", elem_id="manga-vae")
                    with gr.Row():
                        lora = gr.Dropdown(label="LoRA", choices=lora_names(paths), elem_id="manga-lora")
                        lora_weight = gr.Slider(-2, 2, value=0.8, step=0.05, label="Weight")
                        add_lora = gr.Button("Add to prompt", size="sm", elem_id="manga-add-lora")
                    with gr.Row():
                        embedding = gr.Dropdown(label="Embedding", choices=embedding_names(paths),
                                                elem_id="manga-embedding")
                        add_positive = gr.Button("Add to prompt", size="sm")
                        add_negative = gr.Button("Add to negative", size="sm")
                    with gr.Row():
                        f["hires_scale"] = gr.Slider(1, 4, value=1, step=0.25, label="Hires fix: upscale by (1 = off)",
                                                     elem_id="manga-hires")
                        f["hires_strength"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Hires denoising strength")
                        f["hires_upscaler"] = gr.Radio(["lanczos", "latent"], value="lanczos", label="Upscaler")
                with gr.Accordion("Origin: upscale and enhancement", open=False):
                    with gr.Row():
                        f["upscale"] = gr.Radio([1, 2, 4], value=1, label="Upscale (super-resolution)")
                        f["detail"] = gr.Slider(0, 2, value=0.3, step=0.05, label="Detail")
                        f["vibrancy"] = gr.Slider(-1, 2, value=0.15, step=0.05, label="Vibrancy")
            with gr.Column(scale=3):
                with gr.Row():
                    start = gr.Button("Generate", variant="primary", elem_id="manga-generate")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="manga-cancel")
                progress = gr.HTML(progress_html(0, 0, "Ready."), elem_id="manga-progress")
                with gr.Row():
                    preview = gr.Image(label="Forming", type="pil", interactive=False, height=300,
                                       elem_id="manga-preview")
                    results = gr.Gallery(label="Result", columns=2, height=300, elem_id="manga-results")
                shown = gr.Textbox(label="Settings of the picture (A1111 format)", lines=4, interactive=False,
                                   elem_id="manga-parameters")
                with gr.Accordion("History (newest first; click one, then Use these settings)", open=True):
                    # A demo visitor's page starts empty: the load event fills in each user's own history.
                    history_gallery = gr.Gallery(value=[] if ctx.access.demo else history(paths.outputs),
                                                 columns=6, height=260,
                                                 allow_preview=False, interactive=False, elem_id="manga-history")
                    with gr.Row():
                        reuse = gr.Button("Use these settings", size="sm", elem_id="manga-reuse")
                        refresh_history = gr.Button("Refresh", size="sm", elem_id="manga-refresh-history")
                    dropped = gr.File(label="Drop a PNG from A1111, ComfyUI or Inkframe to read its settings",
                                      file_types=[".png", ".jpg", ".jpeg", ".webp"], elem_id="manga-drop")
        # Inside the Tab: a State or an API endpoint directly under gr.Tabs shows up as a phantom tab button.
        session = gr.State({})
        selected = gr.State(None)
        gradio_hints(generate)  # gradio hides the request from the API by its annotation
        gr.api(generate, api_name="generate", **GPU_QUEUE)
        with gr.Accordion("Pages: compose panels into a manga page, letter it, export PNG, PDF or CBZ", open=False,
                          elem_id="manga-pages"):
            pages = pages_section.build(ctx, {"fields": f, "selected": selected})

    names = list(f)

    def generate_handler(state: dict, request: gr.Request, *values: Any):
        from engines.manga.panels import generate_panels

        job, job_ctx = checked({**dict(zip(names, values)), "preview_every": PREVIEW_EVERY}, request)
        outputs = job_ctx.settings.paths.outputs
        token = state["cancel"] = CancelToken()
        yield progress_html(0, 0, "Starting…", "running"), None, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        call = lambda on_step, c: generate_panels(job, job_ctx, on_step=on_step, cancel=c)  # noqa: E731
        step = total = 0
        for event in ctx.jobs.stream("generate", call, token):
            if event.kind == "progress":
                step, total = event.step, event.total
                picture = event.preview if event.preview is not None else gr.skip()
                yield (progress_html(step, total, event.message, "running"), picture,
                       gr.skip(), gr.skip(), gr.skip(), gr.skip())
            elif event.kind == "result":
                made = event.result.pictures
                state["last_seed"] = made[0][1] if made else None
                first = str(made[0][0]) if made else None
                yield (progress_html(total or 1, total or 1, f"{len(made)} picture(s) in "
                                     f"{event.result.seconds:.1f} s", "done"), gr.skip(),
                       [(str(p), f"seed {s}") for p, s in made], parameters_text(first),
                       history(outputs), first)
            elif event.kind == "cancelled":
                yield (progress_html(step, total, event.message, "stopped"), gr.skip(), gr.skip(), gr.skip(),
                       history(outputs), gr.skip())
            else:
                raise gr.Error(event.error)

    def cancel_handler(state: dict) -> None:
        if state.get("cancel") is not None:
            state["cancel"].cancel()

    def select_handler(items: Any, event: gr.SelectData, request: gr.Request):
        path = picture(gallery_path(selected_item(items, event.index)), request)
        return path, parameters_text(path) if path else ""

    def fill_from(path: Optional[str], request: gr.Request):
        path = picture(path, request)
        if not path:
            raise gr.Error("Click a picture in the history first.")
        with as_sentence():
            values = fields_from_png(str(path), paths)
        updates = [gr.update(value=values[n]) if n in values else gr.skip() for n in names]
        return (*updates, "custom", parameters_text(str(path)))

    def drop_handler(file: Any, request: gr.Request):
        if file is None:
            return (*[gr.skip() for _ in names], gr.skip(), gr.skip())
        return fill_from(picture(str(getattr(file, "name", file)), request, "The dropped picture"), request)

    def refresh_choices():
        return (gr.update(choices=model_choices(paths)), gr.update(choices=lora_names(paths)),
                gr.update(choices=embedding_names(paths)))

    def history_handler(request: gr.Request) -> list:
        return history(outputs_of(request))

    page_load, page_outputs = pages["on_load"]

    def per_user(request: gr.Request) -> tuple:
        """This user's history and pages, for the page's load event (studio/app.py)."""
        return (history_handler(request), *page_load(request))

    gradio_hints(backend_hint, generate_handler, select_handler, fill_from, drop_handler, history_handler, per_user)

    inputs = [session, *f.values()]
    start.click(generate_handler, inputs=inputs,
                outputs=[progress, preview, results, shown, history_gallery, selected],
                api_visibility="private", **GPU_QUEUE)
    cancel.click(cancel_handler, inputs=session, queue=False, api_visibility="private")
    private = dict(api_visibility="private", show_progress="hidden")
    f["model"].change(backend_hint, inputs=f["model"], outputs=backend_note, queue=False, **private)
    size_preset.change(lambda p: SIZE_PRESETS.get(p, (gr.skip(), gr.skip())), inputs=size_preset,
                       outputs=[f["width"], f["height"]], queue=False, **private)
    random_seed.click(lambda: RANDOM_SEED, outputs=f["seed"], queue=False, **private)
    reuse_seed.click(lambda state: state.get("last_seed", RANDOM_SEED), inputs=session, outputs=f["seed"],
                     queue=False, **private)
    add_lora.click(with_lora, inputs=[f["prompt"], lora, lora_weight], outputs=f["prompt"], queue=False, **private)
    add_positive.click(with_word, inputs=[f["prompt"], embedding], outputs=f["prompt"], queue=False, **private)
    add_negative.click(with_word, inputs=[f["negative"], embedding], outputs=f["negative"], queue=False, **private)
    refresh_models.click(refresh_choices, outputs=[f["model"], lora, embedding], queue=False, **private)
    history_gallery.select(select_handler, inputs=history_gallery, outputs=[selected, shown], **private)
    results.select(select_handler, inputs=results, outputs=[selected, shown], **private)
    reuse.click(fill_from, inputs=selected, outputs=[*f.values(), size_preset, shown], **private)
    dropped.upload(drop_handler, inputs=dropped, outputs=[*f.values(), size_preset, shown], **private)
    refresh_history.click(history_handler, outputs=history_gallery, queue=False, **private)
    return {"fields": f, "generate": generate, "generate_handler": generate_handler, "fill_from": fill_from,
            "cancel": cancel_handler, "backend_hint": backend_hint, "selected": selected, "pages": pages,
            "on_load": (per_user, [history_gallery, *page_outputs])}
