"""The Training tab: start, watch and steer Origin runs, each its own ``app.py train`` process.

Nothing here holds a run in memory: a run is its folder (``engines/origin/training/runs.py``), so a
closed browser or a restarted studio finds every run as it is, and the buttons steer through the
folder's control flags. A 2-second timer refreshes the selected run's view from its folder
(``training_view.py``); plots are sent only when the run logged something new.

The public endpoints are ``/train_start`` (``app.py train``'s flags by name), ``/train_status`` and
``/train_stop``; every other event is private UI plumbing. Only the owner trains on a demo link, and on
a shared studio every folder a visitor names must lie inside the data folder (studio/access.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from engines.errors import StudioError
from engines.origin.model.config import EXPERT_NAMES, LossConfig, OriginConfig
from studio.training_view import (
    LEVELS,
    LOG_NAMES,
    PRECISION_CHOICES,
    RunViews,
    chart_frames,
    check_run_name,
    checkpoint_rows,
    config_from_values,
    dataset_choices,
    findings,
    findings_markdown,
    log_tail,
    progress_html,
    run_rows,
    run_status,
    sample_grid,
    sample_steps,
    start_from_flags,
)
from studio.widgets import as_sentence, gradio_hints

WHAT = "train models"  # what a demo link keeps for the owner (Access.require_owner)
REFRESH_S = 2.0
PLOTS_RESEND_S = 10.0
PLOTS = {  # key -> (title, y axis)
    "loss": ("Total loss", "loss"),
    "validation": ("Diffusion and validation loss", "loss"),
    "art": ("Art losses", "loss"),
    "experts": ("Experts' auxiliary losses", "loss"),
    "routing": ("Routing weights", "share"),
    "lr": ("Learning rate", "LR"),
    "speed": ("Images per second", "images/s"),
    "memory": ("RAM and VRAM", "MB"),
}
LOSS_LABELS = {"line_art": "Line art", "color": "Colour", "anatomy": "Anatomy", "perspective": "Perspective",
               "color_harmony": "Colour harmony", "expert_aux": "Experts' auxiliary heads"}


def build(ctx) -> dict[str, Any]:
    """Lay out the tab inside the current Blocks; returns its components and handlers for tests."""
    import gradio as gr

    from engines.origin.training import runs

    paths, access = ctx.settings.paths, ctx.access
    defaults = OriginConfig()
    views = RunViews()
    fields: dict[str, Any] = {}
    plots: dict[str, Any] = {}

    def allowed(request: Any) -> None:
        """Only the owner trains on a demo link (checked here too: a private event can still be called)."""
        with as_sentence():
            access.require_owner(request, WHAT)

    def where(value: Any, request: Any, what: str, base: Path) -> Optional[Path]:
        """A folder or file a user named, kept inside the data folder on a shared studio; relative: in ``base``."""
        with as_sentence():
            text = access.path(value, request, what=what, base=base)
        return base / Path(text).expanduser() if text else None

    def dataset_dir(value: Any, request: Any) -> Optional[Path]:
        """A dataset: a folder in datasets/, or any folder's path (confined on a shared studio)."""
        text = str(value or "").strip()
        named = bool(text) and (paths.datasets / text).is_dir()
        # Any other relative path is taken from the studio's working folder, as it always was.
        return where(text, request, "The dataset folder", paths.datasets if named else Path.cwd())

    def _run_dir(name: Any, request: Any = None) -> Path | None:
        """The run folder of a run's name (or path), if it exists; confined to the data folder on a shared studio."""
        run_dir = where(name, request, "The run folder", paths.runs) if name else None
        return run_dir if run_dir is not None and run_dir.is_dir() else None

    # -- the public endpoints: app.py train's flags by name ----------------------------------------
    def train_start(run: str, data: str = "", resolution: Optional[int] = None, space: str = "auto", vae: str = "",
                    epochs: Optional[int] = None, batch_size: Optional[int] = None, config: str = "",
                    resume: bool = False, stage: str = "main", search: Optional[int] = None,
                    max_steps: Optional[int] = None, sr_scale: int = 2, request: gr.Request = None) -> dict:
        """Start a training run in its own process, as ``app.py train`` does with the same flags: run is a
        name in runs/ (or a folder), data a folder in datasets/ (or a folder; a resumed run remembers its own),
        space auto, pixel or latent, vae a hub id, folder or file, stage main or sr, config an OriginConfig
        JSON file. Returns the run's name, status and a sentence."""
        allowed(request)
        if not str(run or "").strip():
            raise gr.Error("Name the run to start with run.")
        run_dir = where(run, request, "The run folder", paths.runs)
        data_dir = dataset_dir(data, request)
        config_file = where(config, request, "The config file", paths.root)
        try:
            start_from_flags(ctx.settings, run_dir, data=data_dir, config=config_file, resolution=resolution,
                             space=space, vae=access.model(vae, request, what="The VAE") or None, epochs=epochs,
                             batch_size=batch_size, resume=resume, stage=stage, search=search,
                             max_steps=max_steps, sr_scale=sr_scale)
        except (StudioError, ValueError, TypeError) as error:
            raise gr.Error(str(error)) from error  # a bad number is a sentence too
        info = runs.judge(run_dir)
        return {"run": info.name, "status": info.state,
                "message": f"{'Resuming' if resume else 'Started'} {info.name}: it trains in its own process; "
                           "/train_status follows it."}

    def train_status(run: str, request: gr.Request = None) -> dict:
        """A run's status (queued, starting, running, finished, stopped or crashed), step and total steps,
        epoch, newest loss, images per second, ETA in seconds, and its newest checkpoint and samples."""
        allowed(request)
        run_dir = _run_dir(run, request)
        if run_dir is None:
            raise gr.Error(f"There is no run {run} in the runs folder.")
        return run_status(runs.judge(run_dir), views.snapshot(run_dir), paths.root)

    def train_stop(run: str, request: gr.Request = None) -> dict:
        """Stop a run as the Stop button does: a checkpoint after this step, then it ends (forced after a minute)."""
        allowed(request)
        run_dir = _run_dir(run, request)
        if run_dir is None:
            raise gr.Error(f"There is no run {run} in the runs folder.")
        message = steer("stop", run, request)
        info = runs.judge(run_dir)
        return {"run": info.name, "status": info.state, "message": message.replace("**", "")}

    gradio_hints(train_start, train_status, train_stop)

    with gr.Tab("Training", id="training", elem_id="tab-training") as tab:
        findings_box = gr.Markdown(elem_id="training-findings")
        with gr.Row():
            with gr.Column(scale=2, min_width=380):
                gr.Markdown("### New run")
                fields["data"] = gr.Dropdown(label="Dataset (a folder in datasets/, or any folder's path)",
                                             choices=dataset_choices(paths.datasets), allow_custom_value=True,
                                             elem_id="training-data")
                fields["run"] = gr.Textbox(label="Run name", placeholder="my_style", elem_id="training-name")
                with gr.Row():
                    fields["model.resolution"] = gr.Number(label="Resolution (px)", value=defaults.model.resolution,
                                                           precision=0, minimum=16, elem_id="training-resolution")
                    fields["train.epochs"] = gr.Number(label="Epochs", value=defaults.train.epochs, precision=0,
                                                       minimum=1, elem_id="training-epochs")
                    fields["train.batch_size"] = gr.Number(label="Batch size", value=defaults.train.batch_size,
                                                           precision=0, minimum=1, elem_id="training-batch")
                fields["train.mixed_precision"] = gr.Dropdown(label="Precision", choices=PRECISION_CHOICES,
                                                              value="auto")
                with gr.Accordion("Advanced (the defaults are shown)", open=False):
                    fields["model.expert_count"] = gr.Slider(
                        1, len(EXPERT_NAMES), value=len(defaults.model.expert_names), step=1, label="Experts",
                        info="1: the colour expert alone, which trained best in our measurements "
                             "(docs/origin-model.md); more add line art, light, anatomy...")
                    fields["train.learning_rate"] = gr.Number(label="Learning rate",
                                                              value=defaults.train.learning_rate)
                    with gr.Row():
                        for name in LOSS_LABELS:
                            fields[f"loss.{name}"] = gr.Number(label=f"{LOSS_LABELS[name]} loss weight",
                                                               value=getattr(defaults.loss, name), min_width=120)
                    fields["train.sample_prompts"] = gr.Textbox(
                        label="Sample prompts (one per line; drawn every "
                              f"{defaults.train.sample_every_steps} steps and on Sample now)",
                        value="\n".join(defaults.train.sample_prompts), lines=3)
                    with gr.Row():
                        fields["train.checkpoint_every_epochs"] = gr.Number(
                            label="Checkpoint every N epochs", value=defaults.train.checkpoint_every_epochs,
                            precision=0, minimum=1)
                        fields["train.safety_checkpoint_minutes"] = gr.Number(
                            label="Safety checkpoint every N minutes (0: off)",
                            value=defaults.train.safety_checkpoint_minutes, minimum=0)
                        fields["train.validate_every_steps"] = gr.Number(
                            label="Validation loss every N steps (0: off)",
                            value=defaults.train.validate_every_steps, precision=0, minimum=0)
                    fields["base_config"] = gr.Textbox(
                        label="Start from a config file (optional)", elem_id="training-base-config",
                        placeholder="e.g. runs/my_search/search/best_config.json; the fields above override it")
                start = gr.Button("Start training", variant="primary", elem_id="training-start")
                gr.Markdown("### Runs")
                runs_table = gr.Dataframe(headers=["Run", "State", "Checkpoints", "Updated"], value=[],
                                          interactive=False, wrap=True, elem_id="training-runs")
                # Custom values: the API's steering endpoints take any run's name (the choices fill by timer).
                selected = gr.Dropdown(label="Run shown", choices=[], value=None, allow_custom_value=True,
                                       elem_id="training-selected")
                with gr.Row():
                    stop = gr.Button("Stop", variant="stop", size="sm", elem_id="training-stop")
                    save = gr.Button("Save now", size="sm", elem_id="training-save")
                    sample = gr.Button("Sample now", size="sm", elem_id="training-sample")
                    resume = gr.Button("Resume", size="sm", elem_id="training-resume")
                    force = gr.Button("Force stop", size="sm", elem_id="training-force")
                message = gr.Markdown(elem_id="training-message")
            with gr.Column(scale=3):
                progress = gr.HTML(progress_html(None, None), elem_id="training-progress-block")
                with gr.Row():
                    smoothing = gr.Slider(0, 0.99, value=0.6, step=0.01, label="Smoothing (EMA)")
                    log_scale = gr.Checkbox(label="Log scale (log10 of the losses)", value=False)
                with gr.Row():
                    for key in ("loss", "validation"):
                        plots[key] = _plot(gr, key)
                with gr.Row():
                    for key in ("art", "experts"):
                        plots[key] = _plot(gr, key)
                with gr.Row():
                    for key in ("routing", "lr"):
                        plots[key] = _plot(gr, key)
                with gr.Row():
                    for key in ("speed", "memory"):
                        plots[key] = _plot(gr, key)
                chart_button = gr.DownloadButton("Download the 3x3 chart (PNG)", size="sm",
                                                 elem_id="training-chart")
                sample_image = gr.Image(label="Newest samples", type="pil", interactive=False, height=280,
                                        elem_id="training-samples")
                sample_slider = gr.Slider(0, 1, value=0, step=1, label="Samples through the run (oldest to newest)",
                                          elem_id="training-sample-slider")
                with gr.Accordion("Checkpoints", open=False):
                    checkpoints_table = gr.Dataframe(headers=["Checkpoint", "Kind", "Step", "Epoch", "Loss"],
                                                     value=[], interactive=False, elem_id="training-checkpoints")
                    with gr.Row():
                        picked_note = gr.Markdown("Click a checkpoint to choose it (default: the newest).",
                                                  elem_id="training-picked")
                        generate_with = gr.Button("Generate with this", size="sm", variant="primary",
                                                  elem_id="training-generate-with")
                with gr.Accordion("Logs", open=False):
                    with gr.Row():
                        log_name = gr.Dropdown(label="Log", choices=list(LOG_NAMES), value="main")
                        level = gr.Dropdown(label="Level", choices=list(LEVELS), value="all")
                    log_text = gr.Textbox(label="Newest lines", lines=14, max_lines=14, interactive=False,
                                          autoscroll=True, elem_id="training-log")
        timer = gr.Timer(REFRESH_S)
        # Inside the Tab: a State or an endpoint directly under gr.Tabs shows up as a phantom tab button.
        # A value, not a factory: gradio 6 makes a callable default a public endpoint of its own.
        session = gr.State({})
        picked = gr.State(None)
        gr.api(train_start, api_name="train_start")
        gr.api(train_status, api_name="train_status", queue=False)
        gr.api(train_stop, api_name="train_stop", queue=False)

    names = list(fields)
    plot_list = [plots[key] for key in PLOTS]

    # -- the view ---------------------------------------------------------------------------------
    def refresh(state: dict, name: Any, smooth: float, log: bool, log_choice: str, level_choice: str,
                request: gr.Request = None):
        if not access.sees_everything(request):  # the timer of a demo visitor's page: nothing, and no error toast
            return tuple(gr.skip() for _ in live)
        infos = runs.list_runs(paths.runs)
        choices = [info.name for info in infos]
        if name not in choices:
            name = next((info.name for info in infos if info.active), choices[0] if choices else None)
        try:
            run_dir = _run_dir(name, request)
        except gr.Error:  # a run folder linked from outside the data folder: not for a visitor
            run_dir = None
        log_choice = log_choice if log_choice in LOG_NAMES else "main"
        info = next((i for i in infos if i.name == name), None)
        snapshot = views.snapshot(run_dir) if run_dir is not None else None
        key = (name, snapshot.records if snapshot else 0, round(float(smooth or 0), 3), bool(log))
        # Sent again now and then even when nothing is new: a chart drawn while the browser was busy
        # (a hidden tab, a redraw racing the next data) mends itself within PLOTS_RESEND_S.
        stale = time.monotonic() - state.get("plotted_at", 0.0) > PLOTS_RESEND_S
        if snapshot is not None and (state.get("plotted") != key or stale):
            state["plotted_at"] = time.monotonic()
            frames = chart_frames(snapshot, smoothing=float(smooth or 0), log=bool(log))
            state["plotted"] = key
            plot_values = [_plot_value(state, k, name, frames[k]) for k in PLOTS]
        elif snapshot is None:
            state.pop("plotted", None)
            plot_values = [None] * len(PLOTS)
        else:
            plot_values = [gr.skip()] * len(PLOTS)
        image, slider = _samples_update(state, run_dir)
        return (run_rows(infos), gr.update(choices=choices, value=name), progress_html(info, snapshot),
                findings_markdown(findings(run_dir)) if run_dir else "", *plot_values, image, slider,
                checkpoint_rows(run_dir) if run_dir else [],
                log_tail(run_dir, log_choice or "main", level_choice or "all") if run_dir else "")

    def _plot_value(state: dict, key: str, name: Any, frame: Any):
        """The frame, with the chart told to redraw itself whole.

        gradio's chart takes its legend (which lines exist) from its first data and later only
        swaps the data, so a line that appears later (another run, the first validation loss)
        would never be drawn; a change of ``x_lim`` rebuilds it, and ``x_lim=None`` is not sent
        by gradio, so each update carries the data's step range, nudged by a billionth of it
        every other time so that equal ranges still count as a change.
        """
        steps = frame["step"]
        low, high = (float(steps.min()), float(steps.max())) if len(steps) else (0.0, 1.0)
        flip = state.setdefault("flip", {})
        flip[key] = not flip.get(key, False)
        return gr.update(value=frame, x_lim=[low, high + (abs(high) + 1.0) * 1e-9 * flip[key]])

    def _samples_update(state: dict, run_dir: Path | None):
        steps = sample_steps(run_dir) if run_dir is not None else {}
        if not steps:
            state["samples"] = (str(run_dir), 0)
            return None, gr.update(maximum=1, value=0, label="Samples through the run (none yet)")
        count = len(steps)
        if state.get("samples") == (str(run_dir), count):
            return gr.skip(), gr.skip()
        state["samples"] = (str(run_dir), count)
        newest = list(steps)[-1]
        return (sample_grid(steps[newest]),
                # A slider needs maximum > minimum: with one grid, 1 shows the same (show_sample clamps).
                gr.update(maximum=max(1, count - 1), value=count - 1, label=f"Samples through the run: step {newest} "
                                                                    f"(newest of {count})"))

    def show_sample(name: Any, index: float, request: gr.Request = None):
        allowed(request)
        run_dir = _run_dir(name, request)
        steps = sample_steps(run_dir) if run_dir else {}
        if not steps:
            return None
        keys = list(steps)
        step = keys[max(0, min(len(keys) - 1, int(index or 0)))]
        return sample_grid(steps[step])

    # -- actions -----------------------------------------------------------------------------------
    def start_run(request: gr.Request, *values: Any):
        allowed(request)
        try:
            found = dict(zip(names, values))
            run_name = check_run_name(found["run"])
            run_dir = where(run_name, request, "The run folder", paths.runs)
            data_dir = dataset_dir(found["data"], request)
            if data_dir is None:
                raise StudioError("Choose the dataset folder to train on.")
            config_file = where(found["base_config"], request, "The config file", paths.root)
            config = config_from_values({**found, "base_config": str(config_file or "")})
            runs.start(ctx.settings, data=data_dir, run_dir=run_dir, config=config)
        except (StudioError, ValueError, TypeError) as error:
            raise gr.Error(str(error)) from error  # a bad number is a sentence too
        return (f"Started **{run_name}**. It trains in its own process: close the browser or restart the "
                "studio whenever you like.", gr.update(value=run_name, choices=[run_name]))

    def steer(action: str, name: Any, request: Any = None):
        allowed(request)
        run_dir = _run_dir(name, request)
        if run_dir is None:
            raise gr.Error("Choose a run first.")
        info = runs.judge(run_dir)
        with as_sentence():
            if action == "resume":
                runs.resume(ctx.settings, run_dir)
                return f"Resuming **{info.name}** from {info.newest_checkpoint or 'the start'}."
            if action == "force":
                if not runs.force_stop(run_dir):
                    return f"**{info.name}** is not running."
                return f"Force-stopped **{info.name}**; its newest checkpoint ({info.newest_checkpoint or 'none'}) " \
                       "is intact."
            if not info.active:
                return f"**{info.name}** is {info.state}, not running."
            {"stop": runs.stop, "save": runs.save_now, "sample": runs.sample_now}[action](run_dir)
        return {"stop": f"Stopping **{info.name}** after this step, with a checkpoint (forced after a minute).",
                "save": f"**{info.name}** saves a checkpoint after this step.",
                "sample": f"**{info.name}** draws its sample prompts after this step."}[action]

    def chart(name: Any, request: gr.Request = None):
        from engines.origin.training.chart import write_chart

        allowed(request)
        run_dir = _run_dir(name, request)
        if run_dir is None:
            raise gr.Error("Choose a run first.")
        # Written where the studio serves files from (the runs folder is private).
        out = paths.outputs / "charts" / f"{run_dir.name}-chart.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        with as_sentence():
            return str(write_chart(run_dir, out))

    gradio_hints(refresh, show_sample, start_run, chart)
    live = [runs_table, selected, progress, findings_box, *plot_list, sample_image, sample_slider,
            checkpoints_table, log_text]
    view_inputs = [session, selected, smoothing, log_scale, log_name, level]
    private = {"api_visibility": "private"}
    timer.tick(refresh, inputs=view_inputs, outputs=live, show_progress="hidden", queue=False, **private)
    for control in (selected, smoothing, log_scale, log_name, level):
        control.change(refresh, inputs=view_inputs, outputs=live, show_progress="hidden", queue=False, **private)
    start.click(start_run, inputs=[fields[n] for n in names], outputs=[message, selected], **private)

    def button(action: str):
        def press(name: Any, request: gr.Request = None) -> str:
            return steer(action, name, request)

        press.__name__ = f"{action}_button"  # the private event's name: never one of the public endpoints'
        gradio_hints(press)
        return press

    for widget, action in ((stop, "stop"), (save, "save"), (sample, "sample"), (resume, "resume"),
                           (force, "force")):
        widget.click(button(action), inputs=selected, outputs=message, queue=False, **private)
    sample_slider.release(show_sample, inputs=[selected, sample_slider], outputs=sample_image, queue=False,
                          **private)
    chart_button.click(chart, inputs=selected, outputs=chart_button, **private)

    def pick_checkpoint(rows: Any, event: gr.SelectData, request: gr.Request = None):
        allowed(request)
        row = getattr(event, "row_value", None) or []
        name = str(row[0]) if row else None
        return name, (f"**{name}** chosen: Generate with this opens it in Text-to-Manga." if name else
                      "Click a checkpoint to choose it (default: the newest).")

    gradio_hints(pick_checkpoint)

    def model_for(name: Any, checkpoint: Any, request: Any = None) -> str:
        """What Text-to-Manga's model field gets: the chosen checkpoint's folder, or the run (its newest)."""
        allowed(request)
        run_dir = _run_dir(name, request)
        if run_dir is None:
            raise gr.Error("Choose a run with a checkpoint first.")
        # The checkpoint's name comes from the browser (the table's clicked row): kept inside the run too.
        folder = where(str(checkpoint), request, "The checkpoint", run_dir / "checkpoints") if checkpoint else None
        if folder is not None and (folder / "meta.json").is_file():
            return str(folder)
        if not checkpoint_rows(run_dir):
            raise gr.Error(f"Run {run_dir.name} has no checkpoint yet; wait for its first one or press Save now.")
        return run_dir.name

    checkpoints_table.select(pick_checkpoint, inputs=checkpoints_table, outputs=[picked, picked_note],
                             show_progress="hidden", **private)
    return {"tab": tab, "fields": fields, "refresh": refresh, "generate_with": generate_with, "model_for": model_for,
            "selected_run": selected, "picked_checkpoint": picked, "pick_checkpoint": pick_checkpoint,
            "start": start_run, "steer": steer, "chart": chart, "show_sample": show_sample, "train_start": train_start, "train_status": train_status,
            "train_stop": train_stop, "live": live, "view_inputs": view_inputs, "views": views,
            "loss_fields": [n for n in LossConfig.__dataclass_fields__ if n != "min_snr_gamma"]}


def _plot(gr, key: str):
    title, y_title = PLOTS[key]
    return gr.LinePlot(x="step", y="value", color="series", title=title, x_title="step", y_title=y_title,
                       height=220, elem_id=f"training-plot-{key}")
