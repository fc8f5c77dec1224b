"""The Dataset tab: collect a clean, safe, captioned training set, watch it fill, prune it.

Every widget is registered under the dotted name of the request field it fills (``tags``,
``thresholds.min_sharpness``, ``sources.danbooru.api_key``...), and ``request_from_values`` builds the
``CollectRequest`` from those names, so nothing is passed by position. Collection never touches the
GPU: it runs through the job runner with ``uses_gpu=False`` and its own one-at-a-time queue.

The collect job is also the public endpoint ``/collect``, its parameters named like ``app.py collect``'s
flags; every other event is private UI plumbing. Only the owner collects on a demo link, and on a
shared studio every folder a visitor names must lie inside the data folder (studio/access.py).
"""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator, Optional

from engines.dataset.filters import REASONS
from engines.dataset.request import CollectRequest, NetworkSettings, QualityThresholds, SourceSpec
from engines.dataset.sources import DEFAULT_HF_DATASET, SOURCES
from engines.progress import CancelToken
from studio.training_view import shown
from studio.widgets import as_sentence, gradio_hints, progress_gauge, selected_index

GALLERY_SIZE = 60
GALLERY_EVERY_S = 2.0
THUMB_PX = 256
# One collection at a time: two runs filling the same folder would race for the same posts.
DATASET_QUEUE = {"concurrency_id": "dataset", "concurrency_limit": 1}
WHAT = "collect datasets"  # what a demo link keeps for the owner (Access.require_owner)

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

    from engines.dataset.cli import FLAGS, request_from_flags

    paths, access = ctx.settings.paths, ctx.access
    # Shown to others, the page names the folder only (a relative name is in datasets/), not the machine's layout.
    default_out = "default" if access.exposed else str(paths.datasets / "default")
    t, n = QualityThresholds(), NetworkSettings()
    widgets: dict[str, Any] = {}
    source_rows: list[tuple[Any, Any]] = []

    def allowed(request: Any) -> None:
        """Only the owner collects on a demo link (checked here too: a private event can still be called)."""
        with as_sentence():
            access.require_owner(request, WHAT)

    def where(value: Any, request: Any, what: str = "The dataset folder") -> str:
        """The folder a user named (kept inside the data folder on a shared studio); a relative one is in datasets/."""
        with as_sentence():
            text = access.path(value, request, what=what, base=paths.datasets)
        return str(paths.datasets / Path(text).expanduser()) if text else ""

    def collect(source: list[str], tags: str = "", target: int = 100, out: str = "", sensitive: bool = False,
                min_score: Optional[int] = None, since: str = "", caption_template: str = "{tags}",
                endpoint: Optional[list[str]] = None, login: Optional[list[str]] = None,
                api_key: Optional[list[str]] = None, engine_id: Optional[list[str]] = None, dataset: str = "",
                folder: str = "", min_edge: int = t.min_long_edge, min_short_edge: int = t.min_short_edge,
                max_aspect: float = t.max_aspect, min_sharpness: float = t.min_sharpness,
                min_colour_std: float = t.min_colour_std, near_duplicate: int = t.near_duplicate_distance,
                rate_limit: float = n.rate_limit, timeout: float = n.timeout_s, retries: int = n.retries,
                backoff: float = n.backoff_s, request: gr.Request = None) -> Iterator[Any]:
        """Fill a dataset folder, as ``app.py collect`` does with the same flags: source lists one or more of
        danbooru, safebooru, konachan, yandere, wallhaven, hf, cse, folder; endpoint, login, api_key and
        engine_id are lists of VALUE or SOURCE=VALUE. out is a folder in datasets/ (default
        "default") or a path; folder is the folder of your own images (source folder).

        Returns the dataset's images and target, its folder (relative to the data folder when inside
        it) and the summary sentence."""
        from engines.dataset.collector import collect as collect_images
        from engines.dataset.request import check

        allowed(request)
        flags = dict(locals())
        flags.update(out=where(out, request) or None, folder=where(folder, request, "The folder with your images"),
                     endpoint=endpoint or [], login=login or [], api_key=api_key or [], engine_id=engine_id or [])
        with as_sentence():
            collect_request = request_from_flags(ctx.settings, **{k: flags[k] for k in FLAGS})
            check(collect_request, offline=ctx.settings.offline)
            yield from ctx.jobs.updates("collect dataset", lambda on_step, cancel: collect_images(
                collect_request, on_step, cancel, offline=ctx.settings.offline), lambda result: {
                    "images": result.images, "target": result.target, "kept": result.kept,
                    "out": shown(result.out_dir, paths.root), "summary": result.summary(),
                    "problems": result.problems}, uses_gpu=False)

    gradio_hints(collect)

    with gr.Tab("Dataset", id="dataset", elem_id="tab-dataset") as tab:
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
        # Inside the Tab: a State or an endpoint directly under gr.Tabs shows up as a phantom tab button.
        # A value, not a factory: gradio 6 makes a callable default a public endpoint of its own.
        session = gr.State({})
        stems = gr.State([])
        selected = gr.State(None)
        gr.api(collect, api_name="collect", **DATASET_QUEUE)

    names = list(widgets)

    def view(out_dir: str, request: gr.Request = None):
        allowed(request)
        return dataset_view(where(out_dir, request))

    def view_quietly(out_dir: str, request: gr.Request = None):
        """On page load and when the folder changes: nothing at all for a demo visitor, and no error toast."""
        if not access.sees_everything(request):
            return gr.skip(), gr.skip(), gr.skip()
        try:
            return view(out_dir, request)
        except gr.Error:
            return [], [], []  # a folder being typed, outside the data folder so far

    def collect_handler(request: gr.Request, session_state: dict, *values: Any):
        from engines.dataset.collector import collect
        from engines.dataset.request import check

        allowed(request)
        found = dict(zip(names, values))
        found["out_dir"] = where(found["out_dir"], request)
        if found.get("sources.folder.enabled"):
            found["sources.folder.folder"] = where(found.get("sources.folder.folder"), request,
                                                   "The folder with your images")
        collect_request = request_from_values(found)
        with as_sentence():
            check(collect_request, offline=ctx.settings.offline)
        cancel = session_state["cancel"] = CancelToken()
        out_dir = str(collect_request.out_dir)
        yield progress_html(0, collect_request.target, "Starting…", "running"), gr.skip(), gr.skip(), gr.skip()
        # Live: the bar on every event; statistics (every reason) and, when images were kept, the
        # gallery at most every two seconds, so a fast run does not spend its time drawing.
        last_view, new_images, kept = 0.0, False, 0
        call = lambda on_step, c: collect(collect_request, on_step, c, offline=ctx.settings.offline)  # noqa: E731
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
                yield (progress_html(result.images, result.target, result.summary(), "done"),
                       *dataset_view(out_dir))
            elif event.kind == "cancelled":
                yield (progress_html(kept, collect_request.target, event.message, "stopped"), *dataset_view(out_dir))
            else:
                raise gr.Error(event.error)

    def stop_handler(session_state: dict, request: gr.Request = None) -> None:
        allowed(request)
        if session_state.get("cancel") is not None:
            session_state["cancel"].cancel()

    def select_handler(stem_list: list[str], event: gr.SelectData, request: gr.Request = None):
        allowed(request)
        index = selected_index(event.index)
        if not 0 <= index < len(stem_list):
            return "Nothing selected.", None
        return f"Selected **{stem_list[index]}**: press Remove to take it out of the dataset.", stem_list[index]

    def remove_handler(out_dir: str, stem: Optional[str], request: gr.Request = None):
        from engines.dataset.dataset_dir import DatasetDir

        allowed(request)
        out_dir = where(out_dir, request)
        if not stem:
            raise gr.Error("Click an image in the gallery first, then press Remove.")
        dataset = DatasetDir.open_existing(Path(out_dir))
        if dataset is None:
            raise gr.Error(f"There is no dataset in {out_dir}.")
        with dataset:
            row = dataset.remove(stem)
            if row is not None:
                dataset.write_summary()
        note = (f"Removed **{stem}**; it will not be collected again." if row is not None
                else f"**{stem}** is no longer in the dataset.")
        return (note, None, *dataset_view(out_dir))

    def toggle(on: bool, request: gr.Request = None):
        return gr.update(visible=bool(on)) if access.sees_everything(request) else gr.skip()

    gradio_hints(view, view_quietly, collect_handler, stop_handler, select_handler, remove_handler, toggle)

    private = {"api_visibility": "private"}
    for enabled, source_row in source_rows:
        enabled.change(toggle, inputs=enabled, outputs=source_row, queue=False, show_progress="hidden", **private)
    inputs = [session, *widgets.values()]
    outputs = [progress, gallery, stems, stats]
    start.click(collect_handler, inputs=inputs, outputs=outputs, **DATASET_QUEUE, **private)
    stop.click(stop_handler, inputs=session, queue=False, **private)
    gallery.select(select_handler, inputs=stems, outputs=[selected_note, selected], **private)
    remove.click(remove_handler, inputs=[widgets["out_dir"], selected],
                 outputs=[selected_note, selected, gallery, stems, stats], **private)
    refresh.click(view, inputs=widgets["out_dir"], outputs=[gallery, stems, stats], **private)
    # No triggers: runs when the page loads and whenever the folder changes.
    gr.on(triggers=None, fn=view_quietly, inputs=widgets["out_dir"], outputs=[gallery, stems, stats],
          trigger_mode="always_last", show_progress="hidden", **private)
    return {"tab": tab, "fields": widgets, "collect": collect_handler, "collect_api": collect, "stop": stop_handler,
            "remove": remove_handler, "select": select_handler, "view": view, "progress": progress,
            "gallery": gallery, "stats": stats}


def _placeholder(source: str, field: str) -> str:
    if field == "endpoint":
        return SOURCES[source].endpoint
    if field == "dataset":
        return DEFAULT_HF_DATASET
    return ""
