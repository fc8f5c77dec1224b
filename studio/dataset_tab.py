"""The Dataset tab: collect a clean, safe, captioned training set, watch it fill, prune it.

Every widget is registered under the dotted name of the request field it fills (``tags``,
``thresholds.min_sharpness``, ``sources.danbooru.api_key``...), and ``request_from_values`` builds the
``CollectRequest`` from those names, so nothing is passed by position. Collection never touches the
GPU: it runs through the job runner with ``uses_gpu=False`` and its own one-at-a-time queue.
"""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

from engines.dataset.filters import REASONS
from engines.dataset.request import CollectRequest, NetworkSettings, QualityThresholds, SourceSpec
from engines.dataset.sources import DEFAULT_HF_DATASET, SOURCES
from engines.errors import StudioError
from engines.progress import CancelToken
from studio.widgets import progress_gauge, selected_index

GALLERY_SIZE = 60
GALLERY_EVERY_S = 2.0
THUMB_PX = 256
# One collection at a time: two runs filling the same folder would race for the same posts.
DATASET_QUEUE = {"concurrency_id": "dataset", "concurrency_limit": 1}

FIELD_LABELS = {
    "endpoint": "Endpoint (mirror or test server)", "login": "Login", "api_key": "API key",
    "engine_id": "Search engine id (cx)", "dataset": "Dataset id", "folder": "Folder with your images",
}
LOGIN_LABELS = {"safebooru": "user_id"}
THRESHOLD_LABELS = {
    "min_long_edge": "Minimum long edge (px)", "min_short_edge": "Minimum short edge (px)",
    "max_aspect": "Maximum aspect ratio (4 = 1:4 to 4:1)", "min_sharpness": "Minimum sharpness (Laplacian variance)",
    "min_colour_std": "Minimum colour variation (std)", "near_duplicate_distance": "Near-duplicate distance (pHash bits)",
}
NETWORK_LABELS = {
    "rate_limit": "Requests per second per site (0 = no limit)", "timeout_s": "Timeout (s)",
    "retries": "Retries", "backoff_s": "First wait between retries (s)",
}
INT_FIELDS = {"target", "min_score", "min_long_edge", "min_short_edge", "near_duplicate_distance", "retries"}


def _int_or_none(value: Any) -> Optional[int]:
    if value is None or value == "":
        return None
    return int(value) if float(value) == int(value) else value  # a fraction is left for check() to name


def request_from_values(values: dict[str, Any]) -> CollectRequest:
    """Widget values by dotted field name -> the engine request (check() validates it)."""
    def number(name: str, value: Any) -> Any:
        if name.rsplit(".", 1)[-1] in INT_FIELDS:
            return _int_or_none(value)
        return float(value) if value is not None else value

    sources = []
    for name, info in SOURCES.items():
        if values.get(f"sources.{name}.enabled"):
            sources.append(SourceSpec(name=name, **{f: str(values.get(f"sources.{name}.{f}") or "").strip()
                                                    for f in info.fields}))
    thresholds = QualityThresholds(**{f.name: number(f.name, values[f"thresholds.{f.name}"])
                                      for f in fields(QualityThresholds)})
    network = NetworkSettings(**{f.name: number(f.name, values[f"network.{f.name}"]) for f in fields(NetworkSettings)})
    return CollectRequest(
        out_dir=Path(str(values["out_dir"] or "").strip()), sources=tuple(sources),
        tags=str(values["tags"] or "").strip(), target=number("target", values["target"]),
        allow_sensitive=bool(values["allow_sensitive"]), min_score=number("min_score", values["min_score"]),
        posted_since=str(values["posted_since"] or "").strip(),
        caption_template=str(values["caption_template"] or ""), thresholds=thresholds, network=network,
    )


# --- views ---------------------------------------------------------------------------------------


def progress_html(kept: int, target: int, message: str = "", state: str = "idle") -> str:
    return progress_gauge("dataset-progress-bar", "Kept", kept, target, message, state, kept=kept, target=target)


def _open(out_dir: str):
    from engines.dataset.dataset_dir import DatasetDir

    text = str(out_dir or "").strip()
    return DatasetDir.open_existing(Path(text)) if text else None


def _thumbnail(dataset, image: Path):
    """A small copy for the gallery, cached in .inkframe/thumbs (a non-image suffix, so no trainer reads it)."""
    from PIL import Image

    cached = dataset.state / "thumbs" / f"{image.stem}.thumb"
    if cached.is_file() and cached.stat().st_mtime >= image.stat().st_mtime:
        with Image.open(cached) as thumb:
            return thumb.convert("RGB")
    with Image.open(image) as full:
        full.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a fraction of the size
        full.thumbnail((THUMB_PX, THUMB_PX))
        thumb = full.convert("RGB")
    cached.parent.mkdir(exist_ok=True)
    thumb.save(cached, "JPEG", quality=85)
    return thumb


def gallery_view(out_dir: str) -> tuple[list, list[str]]:
    """Gallery items (newest first, with their captions) and their stems."""
    dataset = _open(out_dir)
    if dataset is None:
        return [], []
    items, stems = [], []
    with dataset:
        for path, caption in dataset.kept_images(limit=GALLERY_SIZE):
            try:
                items.append((_thumbnail(dataset, path), caption[:120]))
            except OSError:
                continue
            stems.append(path.stem)
    return items, stems


def stats_rows(out_dir: str, with_size: bool = True) -> list[list[Any]]:
    """Images per source, rejections per reason, removals: the dataset's statistics table."""
    dataset = _open(out_dir)
    if dataset is None:
        return [["Images", 0]]
    with dataset:
        summary = dataset.summary()
        rows: list[list[Any]] = [["Images", summary["images"]]]
        if with_size:
            files = [dataset.root / r.file_name for r in dataset.manifest.rows("kept")]
            rows.append(["On disk", f"{sum(f.stat().st_size for f in files if f.exists()) / 2**20:.1f} MB"])
    rows += [[f"from {SOURCES[s].label if s in SOURCES else s}", n] for s, n in summary["kept_by_source"].items()]
    rows += [[f"rejected: {REASONS.get(r, r)}", n] for r, n in summary["rejected_by_reason"].items()]
    rows += [["removed by you", summary["removed"]], ["posts seen", summary["posts_seen"]]]
    return rows


def dataset_view(out_dir: str) -> tuple[list, list[str], list[list[Any]]]:
    """Gallery items, their stems, and the statistics rows of the dataset at ``out_dir``."""
    items, stems = gallery_view(out_dir)
    return items, stems, stats_rows(out_dir) if str(out_dir or "").strip() else []


# --- layout and wiring ---------------------------------------------------------------------------


def _number_row(prefix: str, settings: Any, labels: dict[str, str]) -> dict[str, Any]:
    """One number box per field of a settings dataclass, in a row, keyed ``prefix.field``."""
    import gradio as gr

    boxes = {}
    with gr.Row():
        for f in fields(settings):
            boxes[f"{prefix}.{f.name}"] = gr.Number(
                label=labels[f.name], value=getattr(settings, f.name), minimum=0,
                precision=0 if f.name in INT_FIELDS else None, min_width=160)
    return boxes


def build(ctx) -> dict[str, Any]:
    """Lay out the tab inside the current Blocks; returns its components and handlers for wiring and tests."""
    import gradio as gr

    default_out = str(ctx.settings.paths.datasets / "default")
    t, n = QualityThresholds(), NetworkSettings()
    widgets: dict[str, Any] = {}
    source_rows: list[tuple[Any, Any]] = []

    with gr.Tab("Dataset", id="dataset", elem_id="tab-dataset"):
        gr.Markdown("Collect a training set from image sites or your own folder. Only safe ratings are "
                    "taken, blacklisted tags are skipped, and every image is checked for size, sharpness, "
                    "colour and duplicates. Run it again to continue where it stopped.")
        with gr.Row():
            with gr.Column(scale=2, min_width=380):
                widgets["out_dir"] = gr.Textbox(label="Dataset folder", value=default_out, elem_id="dataset-out")
                widgets["tags"] = gr.Textbox(label="Tags or search words", placeholder="e.g. 1girl scenery",
                                             elem_id="dataset-tags")
                with gr.Row():
                    widgets["target"] = gr.Number(label="Target images", value=100, precision=0, minimum=1,
                                                  elem_id="dataset-target")
                    widgets["allow_sensitive"] = gr.Checkbox(
                        label="Also 'sensitive' posts", value=False,
                        info="Danbooru 's' / Gelbooru 'sensitive'; never questionable or explicit.")
                with gr.Accordion("Sources", open=True):
                    gr.Markdown("Tick the sources to use; their keys and addresses appear below them.")
                    for name, info in SOURCES.items():
                        with gr.Group():
                            enabled = widgets[f"sources.{name}.enabled"] = gr.Checkbox(
                                label=info.label, value=name == "danbooru", info=info.hint,
                                elem_id=f"dataset-source-{name}")
                            with gr.Row(visible=name == "danbooru") as source_row:
                                source_rows.append((enabled, source_row))
                                for field in info.fields:
                                    widgets[f"sources.{name}.{field}"] = gr.Textbox(
                                        label=LOGIN_LABELS.get(name, FIELD_LABELS[field]) if field == "login"
                                        else FIELD_LABELS[field],
                                        type="password" if field == "api_key" else "text",
                                        placeholder=_placeholder(name, field), min_width=160,
                                        elem_id=f"dataset-{name}-{field}")
                with gr.Accordion("Quality filters", open=False):
                    widgets.update(_number_row("thresholds", t, THRESHOLD_LABELS))
                with gr.Accordion("Captions and site rules", open=False):
                    widgets["caption_template"] = gr.Textbox(
                        label="Caption template", value="{tags}",
                        info="{tags} {characters} {copyrights} {artists} {general} {rating} {source}")
                    with gr.Row():
                        widgets["min_score"] = gr.Number(label="Minimum score (empty: site default)",
                                                         value=None, precision=0)
                        widgets["posted_since"] = gr.Textbox(label="Posted since (YYYY-MM-DD, empty: site default)")
                with gr.Accordion("Network", open=False):
                    widgets.update(_number_row("network", n, NETWORK_LABELS))
            with gr.Column(scale=3):
                with gr.Row():
                    start = gr.Button("Collect", variant="primary", elem_id="dataset-start")
                    stop = gr.Button("Stop", variant="stop", elem_id="dataset-stop")
                progress = gr.HTML(progress_html(0, 100, "Not started."), elem_id="dataset-progress")
                gallery = gr.Gallery(label="Kept images (newest first; click one to select it)", columns=6,
                                     height=420, allow_preview=False, elem_id="dataset-gallery")
                with gr.Row():
                    selected_note = gr.Markdown("Nothing selected.", elem_id="dataset-selected")
                    remove = gr.Button("Remove from dataset", variant="stop", size="sm", elem_id="dataset-remove")
                    refresh = gr.Button("Refresh", size="sm", elem_id="dataset-refresh")
                stats = gr.Dataframe(headers=["", "Count"], value=[], interactive=False, elem_id="dataset-stats")
        # Inside the Tab: a State created directly under gr.Tabs shows up as a phantom tab button.
        session = gr.State(dict)
        stems = gr.State(list)
        selected = gr.State(None)

    names = list(widgets)

    def view(out_dir: str):
        items, stem_list, rows = dataset_view(out_dir)
        return items, stem_list, rows

    def collect_handler(session_state: dict, *values: Any):
        from engines.dataset.collector import collect
        from engines.dataset.request import check

        request = request_from_values(dict(zip(names, values)))
        try:
            check(request, offline=ctx.settings.offline)
        except StudioError as error:
            raise gr.Error(str(error)) from error
        cancel = session_state["cancel"] = CancelToken()
        out_dir = str(request.out_dir)
        yield progress_html(0, request.target, "Starting…", "running"), gr.skip(), gr.skip(), gr.skip()
        # Live: the bar on every event; statistics (every reason) and, when images were kept, the
        # gallery at most every two seconds, so a fast run does not spend its time drawing.
        last_view, new_images, kept = 0.0, False, 0
        call = lambda on_step, c: collect(request, on_step, c, offline=ctx.settings.offline)  # noqa: E731
        for event in ctx.jobs.stream("collect dataset", call, cancel, uses_gpu=False):
            if event.kind == "progress":
                kept = event.step
                bar = progress_html(event.step, event.total, event.message, "running")
                new_images = new_images or event.preview is not None
                if time.monotonic() - last_view < GALLERY_EVERY_S:
                    yield bar, gr.skip(), gr.skip(), gr.skip()
                    continue
                last_view = time.monotonic()
                gallery_update = gallery_view(out_dir) if new_images else (gr.skip(), gr.skip())
                new_images = False
                yield bar, *gallery_update, stats_rows(out_dir, with_size=False)
            elif event.kind == "result":
                result = event.result
                yield (progress_html(result.images, result.target, result.summary(), "done"), *view(out_dir))
            elif event.kind == "cancelled":
                yield (progress_html(kept, request.target, event.message, "stopped"), *view(out_dir))
            else:
                raise gr.Error(event.error)

    def stop_handler(session_state: dict) -> None:
        if session_state.get("cancel") is not None:
            session_state["cancel"].cancel()

    def select_handler(stem_list: list[str], event: gr.SelectData):
        index = selected_index(event.index)
        if not 0 <= index < len(stem_list):
            return "Nothing selected.", None
        return f"Selected **{stem_list[index]}**: press Remove to take it out of the dataset.", stem_list[index]

    # gradio finds the event-data parameter by its annotation; postponed annotations are strings
    # naming a module-level ``gr`` that this module does not have (gradio loads only inside build).
    select_handler.__annotations__["event"] = gr.SelectData

    def remove_handler(out_dir: str, stem: Optional[str]):
        from engines.dataset.dataset_dir import DatasetDir

        if not stem:
            raise gr.Error("Click an image in the gallery first, then press Remove.")
        dataset = DatasetDir.open_existing(Path(str(out_dir).strip()))
        if dataset is None:
            raise gr.Error(f"There is no dataset in {out_dir}.")
        with dataset:
            row = dataset.remove(stem)
            if row is not None:
                dataset.write_summary()
        note = (f"Removed **{stem}**; it will not be collected again." if row is not None
                else f"**{stem}** is no longer in the dataset.")
        return (note, None, *view(out_dir))

    for enabled, source_row in source_rows:
        enabled.change(lambda on: gr.update(visible=bool(on)), inputs=enabled, outputs=source_row,
                       queue=False, show_progress="hidden", api_visibility="private")
    inputs = [session, *widgets.values()]
    outputs = [progress, gallery, stems, stats]
    start.click(collect_handler, inputs=inputs, outputs=outputs, api_name="collect_dataset", **DATASET_QUEUE)
    stop.click(stop_handler, inputs=session, queue=False, api_visibility="private")
    gallery.select(select_handler, inputs=stems, outputs=[selected_note, selected], api_visibility="private")
    remove.click(remove_handler, inputs=[widgets["out_dir"], selected],
                 outputs=[selected_note, selected, gallery, stems, stats], api_name="remove_dataset_image")
    refresh.click(view, inputs=widgets["out_dir"], outputs=[gallery, stems, stats], api_name="dataset_view")
    # No triggers: runs when the page loads and whenever the folder changes.
    gr.on(triggers=None, fn=view, inputs=widgets["out_dir"], outputs=[gallery, stems, stats],
          trigger_mode="always_last", show_progress="hidden", api_visibility="private")
    return {"fields": widgets, "collect": collect_handler, "stop": stop_handler, "remove": remove_handler,
            "select": select_handler, "view": view, "progress": progress, "gallery": gallery, "stats": stats}


def _placeholder(source: str, field: str) -> str:
    if field == "endpoint":
        return SOURCES[source].endpoint
    if field == "dataset":
        return DEFAULT_HF_DATASET
    return ""
