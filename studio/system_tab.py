"""The System tab: what the one HardwareManager sees, live, and the controls over its budget."""

from __future__ import annotations

from html import escape
from typing import Any

from engines.progress import CancelToken
from studio.progress import GradioProgress
from studio.queue import GPU_QUEUE
from studio.widgets import as_sentence, fmt_bytes, gauge, gradio_hints

TIER_LABEL = {"device": "GPU", "host": "CPU RAM", "unloaded": "unloaded"}
POOL_HEADERS = ["Model", "Where", "Placement", "Size", "Shared", "On device", "Last used"]


def device_html(t) -> str:
    b = t.budget
    rows = [
        ("Device", f"{t.device} ({t.device_type})"),
        ("Precision", f"{t.precision} — {t.precision_reason}"),
        ("Model budget", f"{fmt_bytes(b.models)} on the device ({b.source})"),
        ("Hard cap", fmt_bytes(b.device_cap)),
        ("Kept free", f"{fmt_bytes(b.floor)} for activations, {fmt_bytes(b.reserve)} for the system"),
        ("Training share", fmt_bytes(b.reserved_by_training) if b.reserved_by_training else "none"),
        ("Offload RAM", fmt_bytes(b.host)),
        ("Job", t.busy or "idle"),
    ]
    body = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return f'<dl class="ink-device" id="ink-device">{body}</dl>'


def gauges_html(t, pool_device: int, pool_host: int) -> str:
    m = t.memory
    parts = [
        gauge("System RAM", m.ram_used, m.ram_total, f"this process: {fmt_bytes(m.process_rss)}"),
        gauge("VRAM", m.vram_used, m.vram_total,
              f"torch: {fmt_bytes(m.torch_allocated)} allocated, {fmt_bytes(m.torch_reserved)} reserved"
              if m.vram_total else "no GPU in use"),
        gauge("Model pool on device", pool_device, t.budget.models, "weights counted once when shared"),
        gauge("Offloaded to RAM", pool_host, t.budget.host, "evicted models waiting for re-use"),
    ]
    if m.gpu_utilization is not None:
        parts.append(gauge("GPU load", m.gpu_utilization, 100,
                           f"{m.gpu_temperature} °C" if m.gpu_temperature is not None else ""))
    return f'<div class="ink-gauges" id="ink-gauges">{"".join(parts)}</div>'


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def pool_rows(t) -> list[list[str]]:
    return [[r.name, TIER_LABEL.get(r.tier, r.tier), r.placement, fmt_bytes(r.size_bytes),
             fmt_bytes(r.shared_bytes) if r.shared_bytes else "–",
             fmt_bytes(r.device_bytes) if r.device_bytes else "–",
             "in use" if r.in_use else _ago(r.idle_seconds)] for r in t.models]


def snapshot(ctx) -> dict[str, Any]:
    """Everything the tab and header show, computed once per refresh."""
    from studio.header import render_header

    t = ctx.hardware.telemetry()
    pool = ctx.hardware.pool
    loaded = [r.name for r in t.models if r.tier != "unloaded"]
    return {
        "telemetry": t, "header": render_header(t), "device": device_html(t),
        "gauges": gauges_html(t, pool.device_bytes(), pool.host_bytes()),
        "pool": pool_rows(t), "loaded": loaded,
        "events": "\n".join(reversed(ctx.hardware.events[-20:])) or "No model activity yet.",
    }


def build(ctx, header) -> dict[str, Any]:
    """Lay out the tab inside the current Blocks; returns its components for wiring and tests."""
    import gradio as gr

    with gr.Tab("System", id="system", elem_id="tab-system"):
        gr.Markdown("What the studio's hardware manager sees. Updates every two seconds.")
        with gr.Row():
            with gr.Column(scale=2):
                device = gr.HTML(elem_id="system-device")
            with gr.Column(scale=3):
                gauges = gr.HTML(elem_id="system-gauges")
        gr.Markdown("### Model pool")
        pool = gr.Dataframe(headers=POOL_HEADERS, value=[], interactive=False, wrap=True,
                            elem_id="system-pool")
        # What changes the machine (unload, budget, the device check) and the folders' paths are the
        # owner's: in demo mode a visitor's page hides them (studio/app.py) and the handlers refuse.
        with gr.Row() as pool_controls:
            model = gr.Dropdown(label="Model", choices=[], value=None, scale=3, elem_id="system-model")
            to_ram = gr.Button("Move to RAM", scale=1, elem_id="system-to-ram")
            unload = gr.Button("Unload", scale=1, variant="stop", elem_id="system-unload")
            unload_all = gr.Button("Unload all", scale=1, elem_id="system-unload-all")
        status = gr.Markdown(elem_id="system-status")
        with gr.Row() as check_row:
            check = gr.Button("Check device speed", elem_id="system-check")
            stop_check = gr.Button("Stop", size="sm", scale=0)
            check_result = gr.Markdown(elem_id="system-check-result")
        with gr.Accordion("Memory budget", open=False, elem_id="system-budget") as budget_box:
            gr.Markdown("0 means automatic: the card's memory minus a reserve for the system and "
                        "room for activations. Lower it if other programs need the GPU.")
            with gr.Row():
                vram = gr.Number(label="VRAM limit (GB)", value=ctx.settings.vram_limit_gb or 0, minimum=0)
                ram = gr.Number(label="RAM limit for offloaded models (GB)",
                                value=ctx.settings.ram_limit_gb or 0, minimum=0)
                apply_budget = gr.Button("Apply budget", variant="primary")
        with gr.Accordion("Folders", open=False, elem_id="system-folders") as folders_box:
            gr.Dataframe(headers=["Folder", "Path"], interactive=False,
                         value=[[k, str(v)] for k, v in ctx.settings.paths.all().items()])
        with gr.Accordion("Activity and raw telemetry", open=False):
            events = gr.Textbox(label="Recent model activity", lines=6, interactive=False)
            raw = gr.JSON(label="Telemetry", elem_id="system-telemetry")
            refresh = gr.Button("Refresh telemetry", size="sm")
        timer = gr.Timer(2.0)
        # A fresh dict per browser session holds that session's cancel token. Created inside the
        # Tab: a State directly under gr.Tabs shows up as a phantom tab button.
        session = gr.State({})

    live = [header, device, gauges, pool, model, events]

    def refresh_view(selected=None):
        s = snapshot(ctx)
        choice = selected if selected in s["loaded"] else (s["loaded"][0] if s["loaded"] else None)
        return (s["header"], s["device"], s["gauges"], s["pool"],
                gr.update(choices=s["loaded"], value=choice), s["events"])

    def telemetry_json():
        return ctx.hardware.telemetry().as_dict()

    def act(action, name, request: Any):
        with as_sentence():
            ctx.access.require_owner(request, "unload or move models")
            if action == "all":
                reports = ctx.hardware.unload_all()
                message = f"Unloaded {len(reports)} model(s)."
            elif not name:
                message = "Pick a model first."
            elif action == "ram":
                ctx.hardware.pool.offload(name)
                message = f"Moved **{name}** to CPU RAM."
            else:
                report = ctx.hardware.unload(name)
                message = (f"Unloaded **{name}**, freed {fmt_bytes(report.freed_bytes)}."
                           if report.released else
                           f"Unloaded **{name}**, but part of it is still referenced by a running tab.")
        return (message, *refresh_view(None))

    def apply(vram_gb, ram_gb, request: gr.Request):
        with as_sentence():
            ctx.access.require_owner(request, "change the memory budget")
            budget = ctx.hardware.set_limits(vram_gb or None, ram_gb or None)
        return (f"Budget applied: {fmt_bytes(budget.models)} for models ({budget.source}).",
                *refresh_view(None))

    def device_check(session, request: gr.Request, progress=gr.Progress()):
        from engines.hardware.speed_check import run_device_check

        with as_sentence():
            ctx.access.require_owner(request, "run the device check")
        cancel = session["cancel"] = CancelToken()
        bar = GradioProgress(progress)
        for event in ctx.jobs.stream("device check", lambda on_step, c: run_device_check(
                ctx.hardware, on_step, c), cancel):
            if event.kind == "progress":
                bar(event.step, event.total, event.message)
            elif event.kind == "result":
                return event.result.summary()
            elif event.kind == "cancelled":
                return event.message
            else:
                raise gr.Error(event.error)

    def stop(session):
        if session.get("cancel") is not None:
            session["cancel"].cancel()

    def move_to_ram(name, request: gr.Request):
        return act("ram", name, request)

    def unload_one(name, request: gr.Request):
        return act("one", name, request)

    def unload_every(request: gr.Request):
        return act("all", None, request)

    gradio_hints(apply, device_check, move_to_ram, unload_one, unload_every)
    private = {"api_visibility": "private"}
    # Stop skips the queue so it is not stuck behind the job it stops.
    check.click(device_check, inputs=session, outputs=check_result, **GPU_QUEUE, **private)
    stop_check.click(stop, inputs=session, queue=False, **private)
    timer.tick(refresh_view, inputs=[model], outputs=live, show_progress="hidden", queue=False, **private)
    refresh.click(telemetry_json, outputs=raw, **private)
    to_ram.click(move_to_ram, inputs=model, outputs=[status, *live], **private)
    unload.click(unload_one, inputs=model, outputs=[status, *live], **private)
    unload_all.click(unload_every, outputs=[status, *live], **private)
    apply_budget.click(apply, inputs=[vram, ram], outputs=[status, *live], **private)
    return {"load": (refresh_view, live), "owner_only": [pool_controls, check_row, budget_box, folders_box],
            "device": device, "gauges": gauges, "pool": pool,
            "model": model, "vram": vram, "ram": ram, "events": events, "raw": raw, "timer": timer}
