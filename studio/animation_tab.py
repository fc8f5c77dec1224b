"""The Animation tab: a character (or a still) set in motion with AnimateDiff, scored for consistency.

Layout and wiring only; the engine is ``engines.animation`` (check, make_animation) and the data shaping is
studio/animation_view.py. The job is also the public endpoint ``/animate`` (named parameters, the CLI's flag
names); every other event is private UI plumbing.

The still and every model a user names go through ``ctx.access`` (studio/access.py) before any model loads,
and the videos go to, and the history is read from, ``ctx.access.outputs``: on a shared studio a visitor
stays inside the data folder, and a demo visitor sees only their own results.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator, Optional

from engines.animation.request import (DEFAULT_BASE_MODEL, LOOPS, MAX_FPS, MAX_FRAMES, MAX_SIDE, MAX_STEPS,
                                       AnimationRequest)
from engines.progress import CancelToken
from studio.animation_view import (DEFAULT_FORMAT, FORMAT_NAMES, MODELS, PICTURES, RANDOM_SEED, SAMPLER_NAMES,
                                   endpoint_result, history, history_video, model_choices, plays_as_video,
                                   progress_html, read_sidecar, request_from_values, sd_checkpoint,
                                   shown_result, summary_html, values_from_sidecar, video_of)
from studio.queue import GPU_QUEUE
from studio.widgets import as_sentence, gallery_caption, gallery_path, gradio_hints, selected_item

PREVIEW_EVERY = 2  # steps between live previews
JOB = "animation"
REPORT_HEADERS = ["Measure", "Value"]
STILL_MODES = (("Video-to-video: the still itself starts to move", "video2video"),
               ("SparseCtrl: the first frame held to the still", "sparsectrl"),
               ("Reference: the still guides, the prompt draws", "reference"))
PROMPT_HELP = ("A1111 syntax. Prompt travel: a first line for every frame, then lines \"0: ...\", "
               "\"16: ...\" (the prompt from that frame on, blended in between), then a last line for every "
               "frame.")
PROMPT_EXAMPLE = "1girl, red jacket, rooftop\n0: closed eyes\n8: open eyes, smile\nnight sky, wind"
NO_MANGA_PICK = "Pick a picture in Text-to-Manga first: click one in its results or its history."
NO_LIVE_RESULT = "Make a picture in Live-Action first, or click one in its history."


def build(ctx, manga: Optional[dict[str, Any]] = None,
          live: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Lay out the tab inside the current Blocks.

    ``manga`` is the Text-to-Manga tab's dict (its picked picture and its model), ``live`` the Live-Action
    tab's (its last result). Returns the components and handlers, for wiring and tests."""
    import gradio as gr

    paths = ctx.settings.paths
    d = {f.name: f.default for f in fields(AnimationRequest)}
    f: dict[str, Any] = {}
    manga_model = (manga or {}).get("fields", {}).get("model")
    base_model = sd_checkpoint(getattr(manga_model, "value", None), paths.runs) or DEFAULT_BASE_MODEL

    def make(job: AnimationRequest, plan: Any, outputs: Path, on_step: Any, cancel: CancelToken) -> Any:
        from engines.animation.animate import make_animation

        return make_animation(job, ctx.hardware, ctx.models, on_step=on_step, cancel=cancel, outputs=outputs,
                              plan=plan)

    def outputs_of(request: Any) -> Path:
        """Where this user's videos go and their history is read (a demo visitor: their own folder)."""
        return ctx.access.outputs(request, paths.outputs)

    def asked(values: dict[str, Any], request: Any) -> AnimationRequest:
        """The widgets' values as a request into this user's outputs, the still and models checked first."""
        with as_sentence():
            return request_from_values(ctx.access.values(values, request, pictures=PICTURES, models=MODELS, defaults=d),
                                       outputs_of(request))

    def allowed_file(value: Any, request: Any, what: str) -> Optional[str]:
        """A file picked in a history or another tab, as ``ctx.access`` lets this user have it."""
        with as_sentence():
            return ctx.access.path(value, request, what=what) or None

    def checked(job: AnimationRequest) -> Any:
        """check() before the job: a bad still, value or missing model is one sentence, before loading."""
        from engines.animation.request import check

        with as_sentence():
            return check(job, ctx.models)

    def animate(image: str = "", prompt: str = d["prompt"], negative: str = d["negative"],
                base_model: str = d["base_model"], vae: str = "", motion_adapter: str = d["motion_adapter"],
                motion_lora: str = d["motion_lora"], motion_scale: float = d["motion_scale"],
                still_mode: str = d["still_mode"], strength: float = d["strength"],
                identity: bool = d["identity"], identity_scale: float = d["identity_scale"],
                sparsectrl_model: str = d["sparsectrl_model"],
                sparsectrl_scale: float = d["sparsectrl_scale"], frames: int = d["frames"],
                fps: int = d["fps"], steps: int = d["steps"], cfg: float = d["cfg"],
                sampler: str = d["sampler"], seed: int = RANDOM_SEED, width: int = d["width"],
                height: int = d["height"], clip_skip: int = d["clip_skip"], context: int = d["context"],
                stride: int = d["stride"], free_init: bool = d["free_init"],
                free_init_iters: int = d["free_init_iters"], loop: str = d["loop"],
                output_format: str = DEFAULT_FORMAT, save_frames: bool = False,
                request: gr.Request = None) -> Iterator[Any]:
        """A character animated with AnimateDiff: text-to-video, or a still set in motion keeping who it is.

        image is the still's file on the studio's machine ("" = text-to-video); prompt may travel (a first
        line, "0: ...", "16: ...", a last line); models are Hugging Face ids, folders, files or names in
        models/ (vae "" = the checkpoint's own, motion_lora "" = none); still_mode is video2video, sparsectrl
        or reference; seed -1 is random; output_format is mp4, gif, webp or webm; save_frames also writes
        every frame as a PNG beside the video. On a shared studio every file and model path must lie in its
        data folder. Returns the video's file, its sidecar JSON, its first frame, the seed, frames, fps, the
        consistency report's one-line summary and numbers, the frame files and notes, all on the studio's
        machine."""
        job = asked(dict(locals()), request)
        plan = checked(job)
        outputs = outputs_of(request)
        with as_sentence():
            yield from ctx.jobs.updates(JOB, lambda on_step, cancel: make(job, plan, outputs, on_step, cancel),
                                        endpoint_result)

    gradio_hints(animate)

    def shared_history() -> list:
        """The history every page starts with: none in demo mode, where the page's load event shows each user
        their own (a visitor must not see the owner's results, even in the page's first settings)."""
        return [] if ctx.access.demo else history(paths.outputs)

    with gr.Tab("Animation", id="animation", elem_id="tab-animation"):
        gr.Markdown("Your character in motion with AnimateDiff: give a still (a Live-Action or Text-to-Manga "
                    "result) to animate it, or none to make the video from the prompt alone. The consistency "
                    "score says how steady the frames are and how much of the still they keep.")
        with gr.Row():
            with gr.Column(scale=2, min_width=380):
                from_manga, from_live = _still_widgets(gr, f, d, manga is not None, live is not None)
                random_seed, reuse_seed = _motion_widgets(gr, f, d)
                _long_video_widgets(gr, f, d)
                refresh_models = _model_widgets(gr, f, d, model_choices(paths.models, base_model), base_model)
                _file_widgets(gr, f, d)
            with gr.Column(scale=3):
                with gr.Row():
                    start = gr.Button("Animate", variant="primary", elem_id="anim-animate")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="anim-cancel")
                progress = gr.HTML(progress_html(0, 0, "Ready."), elem_id="anim-progress")
                summary = gr.HTML(summary_html(""), elem_id="anim-summary")
                with gr.Row():
                    preview = gr.Image(label="Forming (a few frames side by side)", type="pil",
                                       interactive=False, height=340, elem_id="anim-preview")
                    result_video = gr.Video(label="Result", interactive=False, height=340, autoplay=True,
                                            loop=True, elem_id="anim-result-video")
                    result_image = gr.Image(label="Result", type="filepath", interactive=False, height=340,
                                            visible=False, elem_id="anim-result-image")
                with gr.Accordion("Consistency report", open=True, elem_id="anim-report"):
                    details = gr.Dataframe(headers=REPORT_HEADERS, value=[], interactive=False, wrap=True,
                                           column_widths=["40%", "60%"], max_height=760,
                                           elem_id="anim-report-table")
                    with gr.Accordion("The parameters and the full report (JSON)", open=False):
                        report_json = gr.JSON(label="Sidecar", elem_id="anim-report-json")
                with gr.Accordion("History (newest first; click one to play it and see its report)",
                                  open=True):
                    history_gallery = gr.Gallery(value=shared_history(), label="History",
                                                 show_label=False, columns=6, height=240, allow_preview=False,
                                                 interactive=False, elem_id="anim-history")
                    with gr.Row():
                        reuse = gr.Button("Use these settings", size="sm", elem_id="anim-reuse")
                        refresh_history = gr.Button("Refresh", size="sm", elem_id="anim-refresh-history")
        # Inside the Tab: a State or an API endpoint directly under gr.Tabs shows up as a phantom tab button.
        # {} rather than the dict type: gradio deep-copies a value per session, while a callable becomes a
        # load event that shows up as a public "/dict" endpoint.
        session = gr.State({})
        picked = gr.State(None)  # the video shown: the last one made, or the one clicked in the history
        gr.api(animate, api_name="animate", **GPU_QUEUE)

    names = list(f)

    def values_of(values: tuple) -> dict[str, Any]:
        return dict(zip(names, values))

    def players(video: Optional[str]) -> tuple:
        """The video player for MP4 and WebM, the picture for GIF and WebP; the other one hidden."""
        if plays_as_video(video):
            return gr.update(value=video, visible=True), gr.update(value=None, visible=False)
        return gr.update(value=None, visible=False), gr.update(value=video, visible=True)

    def shown(video: str, document: Optional[dict], seconds: Optional[float] = None) -> tuple:
        view = shown_result(video, document, seconds)
        return view["summary"], view["rows"], view["document"]

    def make_handler(state: dict, request: gr.Request, *values: Any):
        from engines.animation.animate import total_steps

        job = asked({**values_of(values), "preview_every": PREVIEW_EVERY}, request)
        plan = checked(job)
        outputs = outputs_of(request)
        token = state["cancel"] = CancelToken()
        skip = gr.skip()
        total = total_steps(job)
        yield progress_html(0, total, "Starting…", "running"), None, *(skip,) * 7
        step = 0
        for event in ctx.jobs.stream(JOB, lambda on_step, c: make(job, plan, outputs, on_step, c), token):
            if event.kind == "progress":
                step, total = event.step, event.total
                picture = event.preview if event.preview is not None else skip
                yield progress_html(step, total, event.message, "running"), picture, *(skip,) * 7
            elif event.kind == "result":
                made = event.result
                state["last_seed"] = made.seed
                video = str(made.path)
                line, rows, document = shown(video, read_sidecar(video), made.seconds)
                done = f"{made.frames} frames made in {made.seconds:.1f} s (seed {made.seed})"
                yield (progress_html(total or 1, total or 1, done, "done"), skip, *players(video), line, rows,
                       document, history(outputs), video)
            elif event.kind == "cancelled":
                yield progress_html(step, total, event.message, "stopped"), *(skip,) * 8
            else:
                raise gr.Error(event.error)

    def cancel_handler(state: dict) -> None:
        if state.get("cancel") is not None:
            state["cancel"].cancel()

    def select_handler(items: Any, event: gr.SelectData, request: gr.Request):
        item = selected_item(items, event.index)
        caption = gallery_caption(item)
        # The video beside its sidecar; the gallery's own file is a cached copy of the first frame.
        found = history_video(outputs_of(request), caption)
        video = found or video_of(allowed_file(gallery_path(item), request, "The picture"))
        if video is None or not Path(video).is_file():
            return (gr.skip(),) * 6
        video = str(video)
        return (video, *players(video), *shown(video, read_sidecar(video)))

    def reuse_handler(video: Optional[str], request: gr.Request):
        video = allowed_file(video, request, "The animation")
        if not video:
            raise gr.Error("Click an animation in the history first.")
        document = read_sidecar(video)
        if document is None:
            raise gr.Error(f"{Path(video).name} has no sidecar JSON beside it, so its settings are unknown.")
        values = values_from_sidecar(document)
        return [gr.update(value=values[n]) if n in values else gr.skip() for n in names]

    def picture_handler(path: Optional[str], missing: str, request: Any, what: str):
        found = allowed_file(path, request, what)
        if not found or not Path(found).is_file():
            raise gr.Error(missing)
        return found

    def from_manga_handler(path: Optional[str], request: gr.Request):
        return picture_handler(path, NO_MANGA_PICK, request, "The picture picked in Text-to-Manga")

    def from_live_handler(path: Optional[str], request: gr.Request):
        return picture_handler(path, NO_LIVE_RESULT, request, "The Live-Action result")

    def history_handler(request: gr.Request) -> list:
        """This user's history: the page's load event (studio/app.py) and the Refresh button."""
        return history(outputs_of(request))

    gradio_hints(make_handler, select_handler, reuse_handler, from_manga_handler, from_live_handler, history_handler)

    def follow_manga(model: Optional[str]):
        checkpoint = sd_checkpoint(model, paths.runs)
        return gr.update(value=checkpoint) if checkpoint else gr.skip()

    inputs = [session, *f.values()]
    start.click(make_handler, inputs=inputs,
                outputs=[progress, preview, result_video, result_image, summary, details, report_json,
                         history_gallery, picked],
                api_visibility="private", show_progress="minimal", **GPU_QUEUE)
    # queue=False: the press reaches the running job at once; the token releases the GPU lock as it stops.
    cancel.click(cancel_handler, inputs=session, queue=False, api_visibility="private")
    private = dict(api_visibility="private", show_progress="hidden")
    random_seed.click(lambda: RANDOM_SEED, outputs=f["seed"], queue=False, **private)
    reuse_seed.click(lambda state: state.get("last_seed", RANDOM_SEED), inputs=session, outputs=f["seed"],
                     queue=False, **private)
    refresh_models.click(lambda: gr.update(choices=model_choices(paths.models, base_model)),
                         outputs=f["base_model"], queue=False, **private)
    history_gallery.select(select_handler, inputs=history_gallery,
                           outputs=[picked, result_video, result_image, summary, details, report_json],
                           **private)
    reuse.click(reuse_handler, inputs=picked, outputs=list(f.values()), **private)
    refresh_history.click(history_handler, outputs=history_gallery, queue=False, **private)
    if manga is not None:
        from_manga.click(from_manga_handler, inputs=manga["selected"], outputs=f["image"], **private)
        if manga_model is not None:
            manga_model.change(follow_manga, inputs=manga_model, outputs=f["base_model"], queue=False,
                               **private)
    if live is not None:
        from_live.click(from_live_handler, inputs=live["picked"], outputs=f["image"], **private)
    return {"fields": f, "animate": animate, "make_handler": make_handler, "cancel": cancel_handler,
            "reuse": reuse_handler, "select": select_handler, "picked": picked, "follow_manga": follow_manga,
            "players": players, "from_manga": from_manga_handler, "from_live": from_live_handler,
            "on_load": (history_handler, [history_gallery])}


# -- the left column, a group of widgets each; ``f`` gets the request's widgets by field name ---------------


def _still_widgets(gr: Any, f: dict, d: dict, from_manga: bool, from_live: bool) -> tuple[Any, Any]:
    # image_mode=None: the file as it came; the engine reads CMYK, 16-bit and transparent pictures itself.
    f["image"] = gr.Image(label="The still to animate (empty: from the prompt alone)", type="filepath",
                          sources=["upload", "clipboard"], height=280, image_mode=None, elem_id="anim-image")
    with gr.Row():
        manga = gr.Button("Use the picture picked in Text-to-Manga", size="sm", visible=from_manga,
                          elem_id="anim-from-manga")
        live = gr.Button("Use the last Live-Action result", size="sm", visible=from_live,
                         elem_id="anim-from-live")
    f["prompt"] = gr.Textbox(label="Prompt", value=d["prompt"], lines=4, info=PROMPT_HELP,
                             placeholder=PROMPT_EXAMPLE, elem_id="anim-prompt")
    f["negative"] = gr.Textbox(label="Negative prompt", value=d["negative"], lines=2, elem_id="anim-negative")
    with gr.Accordion("The still: how it moves", open=True, elem_id="anim-still"):
        f["still_mode"] = gr.Radio(list(STILL_MODES), value=d["still_mode"], label="Still mode",
                                   info="Video-to-video keeps the character best; SparseCtrl and Reference "
                                        "move more freely (SparseCtrl: one window of frames)",
                                   elem_id="anim-still-mode")
        f["strength"] = gr.Slider(0.05, 1, value=d["strength"], step=0.05, label="Strength",
                                  info="Video-to-video: low stays close to the still, high moves more",
                                  elem_id="anim-strength")
        with gr.Row():
            f["identity"] = gr.Checkbox(value=d["identity"], label="Identity (IP-Adapter)",
                                        info="The still as a reference too, so face and outfit stay",
                                        elem_id="anim-identity")
            f["identity_scale"] = gr.Slider(0, 1.5, value=d["identity_scale"], step=0.05,
                                            label="Identity scale", elem_id="anim-identity-scale")
    return manga, live


def _motion_widgets(gr: Any, f: dict, d: dict) -> tuple[Any, Any]:
    with gr.Row():
        f["frames"] = gr.Slider(2, MAX_FRAMES, value=d["frames"], step=1, label="Frames",
                                info="More than the context window: see Long videos", elem_id="anim-frames")
        f["fps"] = gr.Slider(1, MAX_FPS, value=d["fps"], step=1, label="Frame rate (fps)",
                             elem_id="anim-fps")
    with gr.Row():
        f["steps"] = gr.Slider(1, MAX_STEPS, value=d["steps"], step=1, label="Steps", elem_id="anim-steps")
        f["cfg"] = gr.Slider(0, 30, value=d["cfg"], step=0.5, label="CFG scale", elem_id="anim-cfg")
    with gr.Row():
        f["width"] = gr.Slider(64, MAX_SIDE, value=d["width"], step=8, label="Width", elem_id="anim-width")
        f["height"] = gr.Slider(64, MAX_SIDE, value=d["height"], step=8, label="Height",
                                elem_id="anim-height")
    with gr.Row(equal_height=True):
        f["sampler"] = gr.Dropdown(label="Sampler", choices=list(SAMPLER_NAMES), value=d["sampler"],
                                   info="DDIM: what AnimateDiff was trained with", elem_id="anim-sampler")
        f["seed"] = gr.Number(label="Seed (-1 = random)", value=RANDOM_SEED, precision=0, elem_id="anim-seed")
        with gr.Column(min_width=100, scale=0):
            random_seed = gr.Button("🎲 Random", size="sm", min_width=90, elem_id="anim-random-seed")
            reuse_seed = gr.Button("♻ Last seed", size="sm", min_width=90, elem_id="anim-reuse-seed")
    return random_seed, reuse_seed


def _long_video_widgets(gr: Any, f: dict, d: dict) -> None:
    with gr.Accordion("Long videos", open=False, elem_id="anim-long"):
        gr.Markdown("The motion modules see a window of frames at once; longer videos and prompt travel "
                    "slide overlapping windows along the frames (FreeNoise).")
        with gr.Row():
            f["context"] = gr.Slider(2, 32, value=d["context"], step=1, label="Context window (frames)",
                                     info="16 is what the motion modules were trained on",
                                     elem_id="anim-context")
            f["stride"] = gr.Slider(1, 31, value=d["stride"], step=1, label="Window stride (frames)",
                                    info="Below the window; smaller is smoother and slower",
                                    elem_id="anim-stride")
        with gr.Row():
            f["free_init"] = gr.Checkbox(value=d["free_init"], label="FreeInit",
                                         info="Steadier motion in one window, for x iterations the time",
                                         elem_id="anim-free-init")
            f["free_init_iters"] = gr.Slider(1, 5, value=d["free_init_iters"], step=1,
                                             label="FreeInit iterations", elem_id="anim-free-init-iters")


def _model_widgets(gr: Any, f: dict, d: dict, choices: list[str], base_model: str) -> Any:
    with gr.Accordion("Models", open=False, elem_id="anim-models"):
        with gr.Row():
            f["base_model"] = gr.Dropdown(label="Base model (SD 1.5)", choices=choices, value=base_model,
                                          allow_custom_value=True, scale=4, elem_id="anim-base-model",
                                          info="Follows the SD 1.5 checkpoint chosen in Text-to-Manga; or a "
                                               "checkpoint in models/, a path, a Hugging Face id")
            refresh = gr.Button("↻", size="sm", min_width=40, scale=0, elem_id="anim-refresh-models")
        f["vae"] = gr.Textbox(label="VAE (empty: the checkpoint's own)", value=d["vae"] or "",
                              elem_id="anim-vae")
        f["motion_adapter"] = gr.Textbox(label="Motion adapter (the AnimateDiff motion module)",
                                         value=d["motion_adapter"], elem_id="anim-motion-adapter",
                                         info="A Hugging Face id, a folder, or a file like mm_sd_v15_v2.ckpt")
        with gr.Row():
            f["motion_lora"] = gr.Textbox(label="Motion LoRA (empty: none)", value=d["motion_lora"], scale=3,
                                          placeholder="guoyww/animatediff-motion-lora-zoom-in",
                                          elem_id="anim-motion-lora")
            f["motion_scale"] = gr.Slider(0, 2, value=d["motion_scale"], step=0.05, label="Motion LoRA scale",
                                          elem_id="anim-motion-scale")
        with gr.Row():
            f["sparsectrl_model"] = gr.Textbox(label="SparseCtrl model (the SparseCtrl still mode)", scale=3,
                                               value=d["sparsectrl_model"], elem_id="anim-sparsectrl-model")
            f["sparsectrl_scale"] = gr.Slider(0, 2, value=d["sparsectrl_scale"], step=0.05,
                                              label="SparseCtrl scale", elem_id="anim-sparsectrl-scale")
        f["clip_skip"] = gr.Slider(1, 12, value=d["clip_skip"], step=1, label="Clip skip",
                                   elem_id="anim-clip-skip")
    return refresh


def _file_widgets(gr: Any, f: dict, d: dict) -> None:
    with gr.Row():
        f["output_format"] = gr.Dropdown(label="File format", choices=list(FORMAT_NAMES),
                                         value=DEFAULT_FORMAT, elem_id="anim-format",
                                         info="GIF and WebP play anywhere; MP4 and WebM are smaller")
        f["loop"] = gr.Radio(list(LOOPS), value=d["loop"], label="Loop",
                             info="Ping-pong plays forwards, then backwards", elem_id="anim-loop")
    f["save_frames"] = gr.Checkbox(value=False, label="Also save the frames as PNGs",
                                   info="In a folder beside the video, to retouch them one by one",
                                   elem_id="anim-save-frames")
