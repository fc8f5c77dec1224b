"""The Live-Action tab: a drawn character made photoreal, keeping its pose, shape and colours.

Layout and wiring only; the engine is ``engines.live_action`` (check, make_live_action, run_batch) and
the data shaping is studio/live_action_view.py. The job is also the public endpoint ``/live_action``
(named parameters, the request's field names); every other event is private UI plumbing.

Every picture, folder and model a user names goes through ``ctx.access`` (studio/access.py) before any model
loads, and the results go to, and the history is read from, ``ctx.access.outputs``: on a shared studio a
visitor stays inside the data folder, and a demo visitor sees only their own results.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator, Optional

from engines.live_action.request import COLOUR_MODES, DEFAULT_CONTROLNET_CANNY, LiveActionRequest
from engines.progress import CancelToken
from studio.access import path_text
from studio.live_action_view import (MODELS, OUTPUT_FOLDER, PICTURES, RANDOM_SEED, SAMPLER_NAMES, batch_rows,
                                     endpoint_result, history, history_file, model_choices,
                                     progress_html, read_report, request_from_values, shown_result, summary_html,
                                     values_from_report)
from studio.queue import GPU_QUEUE
from studio.widgets import as_sentence, gallery_caption, gallery_path, gradio_hints, selected_item

PREVIEW_EVERY = 2  # steps between live previews
JOB = "live-action"
REPORT_HEADERS = ["Measure", "Value"]
BATCH_HEADERS = ["File", "Result"]
CONTROLNETS = (("depth", "Depth ControlNet: holds the shape"), ("pose", "OpenPose ControlNet: holds the pose"),
               ("canny", "Canny ControlNet: holds the line work (optional; empty = off)"))


def _eid(name: str) -> str:
    return "live-" + name.replace("_", "-")


def build(ctx, manga: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Lay out the tab inside the current Blocks; ``manga`` is the Text-to-Manga tab's dict (its picked picture).

    Returns the components and handlers, for wiring and tests."""
    import gradio as gr

    paths = ctx.settings.paths
    d = {f.name: f.default for f in fields(LiveActionRequest)}
    f: dict[str, Any] = {}

    def make(job: LiveActionRequest, plan: Any, outputs: Path, on_step: Any, cancel: CancelToken) -> Any:
        from engines.live_action.photoreal import make_live_action

        return make_live_action(job, ctx.hardware, ctx.models, on_step=on_step, cancel=cancel, outputs=outputs,
                                plan=plan)

    def outputs_of(request: Any) -> Path:
        """Where this user's results go and their history is read (a demo visitor: their own folder)."""
        return ctx.access.outputs(request, paths.outputs)

    def asked(values: dict[str, Any], request: Any) -> LiveActionRequest:
        """The widgets' values as a request, each picture and model first checked by ``ctx.access``."""
        with as_sentence():
            return request_from_values(ctx.access.values(values, request, pictures=PICTURES, models=MODELS, defaults=d))

    def allowed_file(value: Any, request: Any, what: str) -> Optional[str]:
        """A picture picked in a history or another tab, as ``ctx.access`` lets this user have it."""
        with as_sentence():
            return ctx.access.path(value, request, what=what) or None

    def checked(job: LiveActionRequest) -> Any:
        """check() before the job: a bad picture or a missing model is one sentence before any model loads."""
        from engines.live_action.request import check

        with as_sentence():
            return check(job, ctx.models)

    def live_action(image: str, prompt: str = d["prompt"], negative: str = d["negative"],
                    strength: float = d["strength"], steps: int = d["steps"], cfg: float = d["cfg"],
                    seed: int = RANDOM_SEED, base_model: str = d["base_model"], vae: str = d["vae"],
                    controlnet_depth: str = d["controlnet_depth"], controlnet_pose: str = d["controlnet_pose"],
                    controlnet_canny: str = d["controlnet_canny"], depth_model: str = d["depth_model"],
                    pose_model: str = d["pose_model"], depth_map: str = "", pose_map: str = "",
                    depth_scale: float = d["depth_scale"], pose_scale: float = d["pose_scale"],
                    canny_scale: float = d["canny_scale"], depth_start: float = d["depth_start"],
                    depth_end: float = d["depth_end"], pose_start: float = d["pose_start"],
                    pose_end: float = d["pose_end"], canny_start: float = d["canny_start"],
                    canny_end: float = d["canny_end"], colour_transfer: str = d["colour_transfer"],
                    colour_strength: float = d["colour_strength"], identity: bool = d["identity"],
                    identity_scale: float = d["identity_scale"], clip_skip: int = d["clip_skip"],
                    long_side: int = d["long_side"], width: int = d["width"], height: int = d["height"],
                    sampler: str = d["sampler"], request: gr.Request = None) -> Iterator[Any]:
        """A drawn character made photoreal: SD 1.5 img2img steered by depth and pose ControlNets.

        image is the drawing's file on the studio's machine; models are Hugging Face ids, folders, files or
        names in models/ (vae "" = the checkpoint's own, controlnet_canny "" = off); depth_map and pose_map are
        ready control maps on the studio's machine ("" = estimated); seed -1 is random; width and height 0
        take the long side. On a shared studio every file and model path must lie in its data folder.
        Returns the picture's file, its report file, the seed, the report's one-line summary, the report,
        and the control maps (kind -> file), all on the studio's machine."""
        job = asked(dict(locals()), request)
        plan = checked(job)
        outputs = outputs_of(request)
        with as_sentence():
            yield from ctx.jobs.updates(JOB, lambda on_step, cancel: make(job, plan, outputs, on_step, cancel),
                                        endpoint_result)

    gradio_hints(live_action)

    def shared_history() -> list:
        """The history every page starts with: none in demo mode, where the page's load event shows each user
        their own (a visitor must not see the owner's results, even in the page's first settings)."""
        return [] if ctx.access.demo else history(paths.outputs)

    with gr.Tab("Live-Action", id="live-action", elem_id="tab-live-action"):
        gr.Markdown("Your drawn character as a photo: depth and pose ControlNets keep its shape and pose, the "
                    "colour transfer keeps its colours. Describe the person in the prompt for a better likeness.")
        with gr.Row():
            with gr.Column(scale=2, min_width=380):
                # image_mode=None: the file as it came (gradio would convert it to RGB and lose the transparency;
                # the engine reads CMYK, 16-bit and transparent pictures itself).
                f["image"] = gr.Image(label="The drawn character", type="filepath", sources=["upload", "clipboard"],
                                      height=320, image_mode=None, elem_id="live-image")
                from_manga = gr.Button("Use the picture picked in Text-to-Manga", size="sm",
                                       visible=manga is not None, elem_id="live-from-manga")
                f["prompt"] = gr.Textbox(label="Prompt", value=d["prompt"], lines=3, elem_id="live-prompt",
                                         info="A1111 syntax; add the person: \"young woman, red jacket, city street\"")
                f["negative"] = gr.Textbox(label="Negative prompt", value=d["negative"], lines=2,
                                           elem_id="live-negative")
                with gr.Row():
                    f["strength"] = gr.Slider(0.05, 1, value=d["strength"], step=0.05, label="Strength",
                                              info="How much may change: low keeps the drawing, high the maps only",
                                              elem_id="live-strength")
                    f["steps"] = gr.Slider(1, 150, value=d["steps"], step=1, label="Steps", elem_id="live-steps")
                    f["cfg"] = gr.Slider(1, 30, value=d["cfg"], step=0.5, label="CFG scale", elem_id="live-cfg")
                with gr.Row():
                    f["seed"] = gr.Number(label="Seed (-1 = random)", value=RANDOM_SEED, precision=0,
                                          elem_id="live-seed")
                    random_seed = gr.Button("🎲 Random", size="sm", min_width=90, elem_id="live-random-seed")
                    reuse_seed = gr.Button("♻ Last seed", size="sm", min_width=90, elem_id="live-reuse-seed")
                with gr.Accordion("Keep the drawing: colours and identity", open=False, elem_id="live-keep"):
                    with gr.Row():
                        f["colour_transfer"] = gr.Radio(list(COLOUR_MODES), value=d["colour_transfer"],
                                                        label="Colour transfer (CIELAB, on the character)",
                                                        elem_id="live-colour-transfer")
                        f["colour_strength"] = gr.Slider(0, 1, value=d["colour_strength"], step=0.05,
                                                         label="Colour strength", elem_id="live-colour-strength")
                    with gr.Row():
                        f["identity"] = gr.Checkbox(value=d["identity"], label="Identity (IP-Adapter)",
                                                    info="The drawing as a reference too, so face and outfit "
                                                         "survive a high strength", elem_id="live-identity")
                        f["identity_scale"] = gr.Slider(0, 1.5, value=d["identity_scale"], step=0.05,
                                                        label="Identity scale", elem_id="live-identity-scale")
                with gr.Accordion("ControlNets", open=False, elem_id="live-controlnets"):
                    for kind, title in CONTROLNETS:
                        with gr.Group():
                            f[f"controlnet_{kind}"] = gr.Textbox(
                                label=title, value=d[f"controlnet_{kind}"],
                                placeholder=f"Empty: off; e.g. {DEFAULT_CONTROLNET_CANNY}" if kind == "canny" else "",
                                elem_id=_eid(f"controlnet_{kind}"))
                            with gr.Row():
                                f[f"{kind}_scale"] = gr.Slider(0, 2, value=d[f"{kind}_scale"], step=0.05,
                                                               label="Scale", elem_id=_eid(f"{kind}_scale"))
                                f[f"{kind}_start"] = gr.Slider(0, 1, value=d[f"{kind}_start"], step=0.05,
                                                               label="Starts at", elem_id=_eid(f"{kind}_start"))
                                f[f"{kind}_end"] = gr.Slider(0, 1, value=d[f"{kind}_end"], step=0.05,
                                                             label="Ends at", elem_id=_eid(f"{kind}_end"))
                with gr.Accordion("Models", open=False, elem_id="live-models"):
                    with gr.Row():
                        f["base_model"] = gr.Dropdown(label="Base model (SD 1.5, photoreal)",
                                                      choices=model_choices(paths.models, d["base_model"]),
                                                      value=d["base_model"], allow_custom_value=True, scale=4,
                                                      info="A checkpoint in models/, a path or a Hugging Face id",
                                                      elem_id="live-base-model")
                        refresh_models = gr.Button("↻", size="sm", min_width=40, scale=0,
                                                   elem_id="live-refresh-models")
                    f["vae"] = gr.Textbox(label="VAE (empty: the checkpoint's own)", value=d["vae"] or "",
                                          elem_id="live-vae")
                    with gr.Row():
                        f["depth_model"] = gr.Textbox(label="Depth estimator", value=d["depth_model"],
                                                      elem_id="live-depth-model")
                        f["pose_model"] = gr.Textbox(label="Pose estimator", value=d["pose_model"],
                                                     elem_id="live-pose-model")
                    with gr.Row():
                        f["sampler"] = gr.Dropdown(label="Sampler", choices=list(SAMPLER_NAMES), value=d["sampler"],
                                                   elem_id="live-sampler")
                        f["clip_skip"] = gr.Slider(1, 4, value=d["clip_skip"], step=1, label="Clip skip",
                                                   elem_id="live-clip-skip")
                    f["long_side"] = gr.Slider(256, 1536, value=d["long_side"], step=64, label="Long side",
                                               info="The picture's aspect kept, sides in multiples of 64",
                                               elem_id="live-long-side")
                    with gr.Row():
                        f["width"] = gr.Number(label="Exact width (0 = from the long side)", value=d["width"],
                                               precision=0, step=64, elem_id="live-width")
                        f["height"] = gr.Number(label="Exact height (0 = from the long side)", value=d["height"],
                                                precision=0, step=64, elem_id="live-height")
                with gr.Accordion("Your own control maps (instead of the estimated ones)", open=False,
                                  elem_id="live-own-maps"):
                    with gr.Row():
                        f["depth_map"] = gr.Image(label="Depth map (near = white)", type="filepath", height=180,
                                                  sources=["upload", "clipboard"], image_mode=None,
                                                  elem_id="live-depth-map")
                        f["pose_map"] = gr.Image(label="OpenPose skeleton", type="filepath", height=180,
                                                 sources=["upload", "clipboard"], image_mode=None,
                                                 elem_id="live-pose-map")
            with gr.Column(scale=3):
                with gr.Row():
                    start = gr.Button("Make it real", variant="primary", elem_id="live-make")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="live-cancel")
                progress = gr.HTML(progress_html(0, 0, "Ready."), elem_id="live-progress")
                summary = gr.HTML(summary_html(""), elem_id="live-summary")
                with gr.Row():
                    preview = gr.Image(label="Forming", type="pil", interactive=False, height=340,
                                       elem_id="live-preview")
                    result = gr.Image(label="Result", type="filepath", interactive=False, height=340,
                                      format="png", elem_id="live-result")
                maps = gr.Gallery(label="Control maps the studio used", columns=3, height=260, object_fit="contain",
                                  interactive=False, elem_id="live-maps")
                with gr.Accordion("Realism report", open=True, elem_id="live-report"):
                    details = gr.Dataframe(headers=REPORT_HEADERS, value=[], interactive=False, wrap=True,
                                           column_widths=["34%", "66%"], max_height=560,
                                           elem_id="live-report-table")
                    with gr.Accordion("The full report (JSON)", open=False):
                        report_json = gr.JSON(label="Report", elem_id="live-report-json")
                with gr.Accordion("History (newest first; click one to see its report)", open=True):
                    history_gallery = gr.Gallery(value=shared_history(), label="History", show_label=False,
                                                 columns=6, height=240, allow_preview=False, interactive=False,
                                                 elem_id="live-history")
                    with gr.Row():
                        reuse = gr.Button("Use these settings", size="sm", elem_id="live-reuse")
                        refresh_history = gr.Button("Refresh", size="sm", elem_id="live-refresh-history")
        with gr.Accordion("Batch: a whole folder", open=False, elem_id="live-batch"):
            gr.Markdown("Every picture of the input folder with the settings above; each result goes to the "
                        "output folder under the drawing's name, with its report and maps. A broken file is "
                        "skipped and listed; the models load once.")
            with gr.Row():
                input_dir = gr.Textbox(label="Input folder", placeholder="/path/to/drawings",
                                       elem_id="live-batch-input")
                output_dir = gr.Textbox(label="Output folder", elem_id="live-batch-output",
                                        value=str(paths.outputs / OUTPUT_FOLDER / "batch"))
            with gr.Row():
                batch_start = gr.Button("Run batch", variant="primary", elem_id="live-batch-run")
                batch_cancel = gr.Button("Stop batch", variant="stop", elem_id="live-batch-cancel")
            batch_progress = gr.HTML(progress_html(0, 0, "Ready.", bar_id="live-batch-progress-bar"),
                                     elem_id="live-batch-progress")
            batch_table = gr.Dataframe(headers=BATCH_HEADERS, value=[], interactive=False, wrap=True,
                                       column_widths=["25%", "75%"], elem_id="live-batch-results")
        # Inside the Tab: a State or an API endpoint directly under gr.Tabs shows up as a phantom tab button.
        # {} rather than the dict type: gradio deep-copies a value per session, while a callable becomes a
        # load event that shows up as a public "/dict" endpoint.
        session = gr.State({})
        picked = gr.State(None)
        gr.api(live_action, api_name="live_action", **GPU_QUEUE)

    names = list(f)

    def values_of(values: tuple) -> dict[str, Any]:
        return dict(zip(names, values))

    def shown(picture: str, document: Optional[dict], seconds: Optional[float] = None) -> tuple:
        view = shown_result(picture, document, seconds)
        return view["summary"], view["rows"], view["document"], view["maps"]

    def make_handler(state: dict, request: gr.Request, *values: Any):
        job = asked({**values_of(values), "preview_every": PREVIEW_EVERY}, request)
        plan = checked(job)
        outputs = outputs_of(request)
        token = state["cancel"] = CancelToken()
        skip = gr.skip()
        yield progress_html(0, 0, "Starting…", "running"), None, skip, skip, skip, skip, skip, skip, skip
        step = total = 0
        for event in ctx.jobs.stream(JOB, lambda on_step, c: make(job, plan, outputs, on_step, c), token):
            if event.kind == "progress":
                step, total = event.step, event.total
                picture = event.preview if event.preview is not None else skip
                yield (progress_html(step, total, event.message, "running"), picture,
                       skip, skip, skip, skip, skip, skip, skip)
            elif event.kind == "result":
                made = event.result
                state["last_seed"] = made.seed
                line, rows, document, gallery = shown(str(made.path), read_report(str(made.path)), made.seconds)
                yield (progress_html(total or 1, total or 1, f"Made in {made.seconds:.1f} s (seed {made.seed})",
                                     "done"), skip, str(made.path), gallery, line, rows, document,
                       history(outputs), str(made.path))
            elif event.kind == "cancelled":
                yield (progress_html(step, total, event.message, "stopped"), skip, skip, skip, skip, skip, skip,
                       skip, skip)
            else:
                raise gr.Error(event.error)

    def batch_handler(state: dict, request: gr.Request, source: str, target: str, *values: Any):
        from engines.live_action.batch import run_batch
        from engines.live_action.request import check_settings
        from engines.live_action.source import images_in

        if not path_text(source):
            raise gr.Error("Give the input folder: the drawings to make real.")
        if not path_text(target):
            raise gr.Error("Give the output folder for the results.")
        outputs = outputs_of(request)
        # The picture is each file of the folder; the widget's drawing plays no part.
        job = asked({**values_of(values), "image": ""}, request)
        with as_sentence():
            source = ctx.access.path(source, request, what="The input folder")
            # A relative output folder is taken from the user's own outputs (a demo visitor's folder).
            target = ctx.access.path(target, request, what="The output folder", base=outputs)
            files = images_in(source)
            for file in files:  # a link in the folder to a picture elsewhere is refused like a typed path
                ctx.access.path(file, request, what="The picture")
            check_settings(job, ctx.models)
        token = state["batch_cancel"] = CancelToken()
        yield progress_html(0, 0, f"{len(files)} pictures…", "running", "live-batch-progress-bar"), [], gr.skip()
        call = lambda on_step, c: run_batch(job, Path(source), Path(target),  # noqa: E731
                                            ctx.hardware, ctx.models, on_step=on_step, cancel=c)
        step = total = 0
        for event in ctx.jobs.stream(JOB + "-batch", call, token):
            if event.kind == "progress":
                step, total = event.step, event.total
                yield (progress_html(step, total, event.message, "running", "live-batch-progress-bar"),
                       gr.skip(), gr.skip())
            elif event.kind == "result":
                done = event.result
                state_name = "stopped" if done.cancelled else "done"
                yield (progress_html(step if done.cancelled else total or 1, total or 1, done.summary(), state_name,
                                     "live-batch-progress-bar"), batch_rows(done), history(outputs))
            elif event.kind == "cancelled":
                yield (progress_html(step, total, event.message, "stopped", "live-batch-progress-bar"), gr.skip(),
                       gr.skip())
            else:
                raise gr.Error(event.error)

    def cancel_handler(state: dict, key: str = "cancel") -> None:
        if state.get(key) is not None:
            state[key].cancel()

    def select_handler(items: Any, event: gr.SelectData, request: gr.Request):
        item = selected_item(items, event.index)
        caption = gallery_caption(item)
        # The original beside its report and maps; the gallery's own file is a cached copy.
        found = history_file(outputs_of(request), caption)
        found = found or allowed_file(gallery_path(item), request, "The picture")
        if found is None:
            return (gr.skip(),) * 6
        return (found, found, *shown(found, read_report(found)))

    def reuse_handler(picked_picture: Optional[str], request: gr.Request):
        found = allowed_file(picked_picture, request, "The picture")
        if not found:
            raise gr.Error("Click a picture in the history first.")
        document = read_report(found)
        if document is None:
            raise gr.Error(f"{Path(found).name} has no report beside it, so its settings are unknown.")
        values = values_from_report(document)
        return [gr.update(value=values[n]) if n in values else gr.skip() for n in names]

    def from_manga_handler(path: Optional[str], request: gr.Request):
        found = allowed_file(path, request, "The picture picked in Text-to-Manga")
        if not found or not Path(found).is_file():
            raise gr.Error("Pick a picture in Text-to-Manga first: click one in its results or its history.")
        return found

    def history_handler(request: gr.Request) -> list:
        return history(outputs_of(request))

    def per_user(request: gr.Request) -> tuple:
        """This user's history and batch folder, for the page's load event (studio/app.py)."""
        outputs = outputs_of(request)
        return history(outputs), str(outputs / OUTPUT_FOLDER / "batch")

    gradio_hints(make_handler, batch_handler, select_handler, reuse_handler, from_manga_handler, history_handler,
                 per_user)

    inputs = [session, *f.values()]
    start.click(make_handler, inputs=inputs,
                outputs=[progress, preview, result, maps, summary, details, report_json, history_gallery, picked],
                api_visibility="private", show_progress="minimal", **GPU_QUEUE)
    cancel.click(cancel_handler, inputs=session, queue=False, api_visibility="private")
    batch_start.click(batch_handler, inputs=[session, input_dir, output_dir, *f.values()],
                      outputs=[batch_progress, batch_table, history_gallery], api_visibility="private",
                      show_progress="minimal", **GPU_QUEUE)
    batch_cancel.click(lambda state: cancel_handler(state, "batch_cancel"), inputs=session, queue=False,
                       api_visibility="private")
    private = dict(api_visibility="private", show_progress="hidden")
    random_seed.click(lambda: RANDOM_SEED, outputs=f["seed"], queue=False, **private)
    reuse_seed.click(lambda state: state.get("last_seed", RANDOM_SEED), inputs=session, outputs=f["seed"],
                     queue=False, **private)
    refresh_models.click(lambda: gr.update(choices=model_choices(paths.models, d["base_model"])),
                         outputs=f["base_model"], queue=False, **private)
    history_gallery.select(select_handler, inputs=history_gallery,
                           outputs=[picked, result, summary, details, report_json, maps], **private)
    reuse.click(reuse_handler, inputs=picked, outputs=list(f.values()), **private)
    refresh_history.click(history_handler, outputs=history_gallery, queue=False, **private)
    if manga is not None:
        from_manga.click(from_manga_handler, inputs=manga["selected"], outputs=f["image"], **private)
    return {"fields": f, "live_action": live_action, "make_handler": make_handler, "batch_handler": batch_handler,
            "cancel": cancel_handler, "reuse": reuse_handler, "select": select_handler,
            "from_manga": from_manga_handler, "picked": picked, "batch": {
                "input_dir": input_dir, "output_dir": output_dir, "table": batch_table},
            "on_load": (per_user, [history_gallery, output_dir])}
