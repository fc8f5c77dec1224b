"""The Training tab: start, watch and steer Origin runs, each its own ``app.py train`` process.

Nothing here holds a run in memory: a run is its folder (``engines/origin/training/runs.py``), so a
closed browser or a restarted studio finds every run as it is, and the buttons steer through the
folder's control flags. A 2-second timer refreshes the selected run's view from its folder
(``training_view.py``); plots are sent only when the run logged something new.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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
    sample_grid,
    sample_steps,
)

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


def _fail(error: StudioError):
    import gradio as gr

    return gr.Error(str(error))


def build(ctx) -> dict[str, Any]:
    """Lay out the tab inside the current Blocks; returns its components and handlers for tests."""
    import gradio as gr

    from engines.origin.training import runs

    paths = ctx.settings.paths
    defaults = OriginConfig()
    views = RunViews()
    fields: dict[str, Any] = {}
    plots: dict[str, Any] = {}

    def train_runs() -> list[dict]:
        """Every run in runs/: name, state, step, total_steps, epoch, epochs, error, checkpoints."""
        return [{"name": i.name, "state": i.state, "step": i.step, "total_steps": i.total_steps,
                 "epoch": i.epoch, "epochs": i.epochs, "error": i.error, "checkpoints": i.checkpoints,
                 "newest_checkpoint": i.newest_checkpoint, "description": i.describe()}
                for i in runs.list_runs(paths.runs)]

    with gr.Tab("Training", id="training", elem_id="tab-training"):
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
        session = gr.State(dict)  # inside the Tab: a State directly under gr.Tabs shows up as a tab button
        picked = gr.State(None)
        gr.api(train_runs, api_name="train_runs")  # inside too, for the same reason

    names = list(fields)
    plot_list = [plots[key] for key in PLOTS]

    # -- the view ---------------------------------------------------------------------------------
    def _run_dir(name: Any) -> Path | None:
        return paths.runs / str(name) if name and (paths.runs / str(name)).is_dir() else None

    def refresh(state: dict, name: Any, smooth: float, log: bool, log_choice: str, level_choice: str):
        infos = runs.list_runs(paths.runs)
        choices = [info.name for info in infos]
        if name not in choices:
            name = next((info.name for info in infos if info.active), choices[0] if choices else None)
        run_dir = _run_dir(name)
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

    def show_sample(name: Any, index: float):
        steps = sample_steps(_run_dir(name)) if _run_dir(name) else {}
        if not steps:
            return None
        keys = list(steps)
        step = keys[max(0, min(len(keys) - 1, int(index or 0)))]
        return sample_grid(steps[step])

    # -- actions -----------------------------------------------------------------------------------
    def start_run(*values: Any):
        try:
            found = dict(zip(names, values))
            run_name = check_run_name(found["run"])
            data = str(found["data"] or "").strip()
            if not data:
                raise StudioError("Choose the dataset folder to train on.")
            data_dir = paths.datasets / data if (paths.datasets / data).is_dir() else Path(data).expanduser()
            config = config_from_values(found)
            runs.start(ctx.settings, data=data_dir, run_dir=paths.runs / run_name, config=config)
        except (StudioError, ValueError, TypeError) as error:
            raise _fail(error if isinstance(error, StudioError) else StudioError(str(error))) from error
        return (f"Started **{run_name}**. It trains in its own process: close the browser or restart the "
                "studio whenever you like.", gr.update(value=run_name, choices=[run_name]))

    def steer(action: str, name: Any):
        run_dir = _run_dir(name)
        if run_dir is None:
            raise gr.Error("Choose a run first.")
        info = runs.judge(run_dir)
        try:
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
        except StudioError as error:
            raise _fail(error) from error
        return {"stop": f"Stopping **{info.name}** after this step, with a checkpoint (forced after a minute).",
                "save": f"**{info.name}** saves a checkpoint after this step.",
                "sample": f"**{info.name}** draws its sample prompts after this step."}[action]

    def chart(name: Any):
        from engines.origin.training.chart import write_chart

        run_dir = _run_dir(name)
        if run_dir is None:
            raise gr.Error("Choose a run first.")
        # Written where the studio serves files from (the runs folder is private).
        out = paths.outputs / "charts" / f"{run_dir.name}-chart.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            return str(write_chart(run_dir, out))
        except StudioError as error:
            raise _fail(error) from error

    live = [runs_table, selected, progress, findings_box, *plot_list, sample_image, sample_slider,
            checkpoints_table, log_text]
    view_inputs = [session, selected, smoothing, log_scale, log_name, level]
    timer.tick(refresh, inputs=view_inputs, outputs=live, show_progress="hidden", api_visibility="private",
               queue=False)
    for control in (selected, smoothing, log_scale, log_name, level):
        control.change(refresh, inputs=view_inputs, outputs=live, show_progress="hidden",
                       api_visibility="private", queue=False)
    start.click(start_run, inputs=[fields[n] for n in names], outputs=[message, selected], api_name="train")
    for button, action in ((stop, "stop"), (save, "save"), (sample, "sample"), (resume, "resume"),
                           (force, "force")):
        button.click(lambda name, a=action: steer(a, name), inputs=selected, outputs=message,
                     api_name=f"train_{action}", queue=False)
    sample_slider.release(show_sample, inputs=[selected, sample_slider], outputs=sample_image,
                          api_visibility="private", queue=False)
    chart_button.click(chart, inputs=selected, outputs=chart_button, api_name="train_chart")

    def pick_checkpoint(rows: Any, event: gr.SelectData):
        row = getattr(event, "row_value", None) or []
        name = str(row[0]) if row else None
        return name, (f"**{name}** chosen: Generate with this opens it in Text-to-Manga." if name else
                      "Click a checkpoint to choose it (default: the newest).")

    pick_checkpoint.__annotations__["event"] = gr.SelectData  # gradio reads the event type from the annotation

    def model_for(name: Any, checkpoint: Any) -> str:
        """What Text-to-Manga's model field gets: the chosen checkpoint's folder, or the run (its newest)."""
        run_dir = _run_dir(name)
        if run_dir is None:
            raise gr.Error("Choose a run with a checkpoint first.")
        folder = run_dir / "checkpoints" / str(checkpoint) if checkpoint else None
        if folder is not None and (folder / "meta.json").is_file():
            return str(folder)
        if not checkpoint_rows(run_dir):
            raise gr.Error(f"Run {run_dir.name} has no checkpoint yet; wait for its first one or press Save now.")
        return run_dir.name

    checkpoints_table.select(pick_checkpoint, inputs=checkpoints_table, outputs=[picked, picked_note],
                             api_visibility="private", show_progress="hidden")
    return {"fields": fields, "refresh": refresh, "generate_with": generate_with, "model_for": model_for,
            "selected_run": selected, "picked_checkpoint": picked, "start": start_run, "steer": steer, "chart": chart,
            "show_sample": show_sample, "live": live, "view_inputs": view_inputs, "views": views,
            "loss_fields": [n for n in LossConfig.__dataclass_fields__ if n != "min_snr_gamma"]}


def _plot(gr, key: str):
    title, y_title = PLOTS[key]
    return gr.LinePlot(x="step", y="value", color="series", title=title, x_title="step", y_title=y_title,
                       height=220, elem_id=f"training-plot-{key}")
