"""Builds the studio's Blocks from one module per tab and launches it."""

from __future__ import annotations

import logging
from typing import Any

from studio.queue import DEFAULT_LINE, hold_the_line

log = logging.getLogger(__name__)
STUDIO_NAME = "Inkframe Studio"  # all the login page says


def build_app(ctx, *, queue_size: int = DEFAULT_LINE) -> Any:
    import gradio as gr

    from studio import animation_tab, dataset_tab, live_action_tab, manga_tab, system_tab, training_tab
    from studio.header import render_header
    from studio.widgets import gradio_hints

    access = ctx.access
    with gr.Blocks(title=STUDIO_NAME, analytics_enabled=False, fill_width=True) as demo:
        # The first readout arrives with the page's load event: probing the device imports
        # torch (~1 s), which need not delay the first byte the browser sees.
        header = gr.HTML(render_header(None), elem_id="ink-header-block")
        with gr.Tabs(elem_id="ink-tabs") as tabs:
            manga = manga_tab.build(ctx)
            live_action = live_action_tab.build(ctx, manga)
            animation = animation_tab.build(ctx, manga, live_action)
            dataset = dataset_tab.build(ctx)
            training = training_tab.build(ctx)
            system = system_tab.build(ctx, header)
        # "Generate with this" on a training checkpoint: the Text-to-Manga tab, with that checkpoint chosen.
        def generate_with(run: Any, checkpoint: Any, request: gr.Request):
            return gr.Tabs(selected="manga"), training["model_for"](run, checkpoint, request)

        gradio_hints(generate_with)
        training["generate_with"].click(
            generate_with, inputs=[training["selected_run"], training["picked_checkpoint"]],
            outputs=[tabs, manga["fields"]["model"]], api_visibility="private", show_progress="hidden")
        # Demo mode: what changes the machine or reads the collection starts hidden and is shown to
        # the owner's page only; each user's histories are read from their own outputs.
        owner_only = [dataset["tab"], training["tab"], *system["owner_only"]]
        if access.demo:
            for block in owner_only:
                block.visible = False
        per_user = [part["on_load"] for part in (manga, live_action, animation) if part.get("on_load")]
        refresh, live = system["load"]

        def load(request: gr.Request):
            shown = access.sees_everything(request)
            values = [gr.update(visible=shown) for _ in owner_only]
            for fn, outputs in per_user:
                answer = fn(request)
                values.extend(answer if len(outputs) > 1 else [answer])
            return (*refresh(), *values)

        gradio_hints(load)
        demo.load(load, outputs=[*live, *owner_only, *[o for _, outs in per_user for o in outs]],
                  show_progress="hidden", api_visibility="private")
    demo.queue(default_concurrency_limit=4)
    hold_the_line(demo, queue_size)
    return demo


def launch(ctx, *, host: str, port: int, share: bool, credentials: list[tuple[str, str]],
           open_browser: bool, block: bool = True, queue_size: int = DEFAULT_LINE, guard: Any = None) -> Any:
    from studio.logins import LoginGuard, middleware
    from studio.theme import build_theme, load_css

    demo = build_app(ctx, queue_size=queue_size)
    paths = ctx.settings.paths
    log.info("%s on http://%s:%d (data in %s)", STUDIO_NAME, host, port, paths.root)
    demo.launch(
        server_name=host, server_port=port, share=share, auth=credentials or None,
        inbrowser=open_browser, prevent_thread_lock=not block, show_error=False,
        theme=build_theme(), css=load_css(), footer_links=[],
        # Only what the studio writes (outputs) is served; models, runs and everything
        # outside the data dir stay private even to a logged-in user.
        allowed_paths=[str(paths.outputs)],
        blocked_paths=[str(paths.models), str(paths.runtime), str(paths.runs)],
        # The login page names the studio and nothing else (no paths, flags or version).
        auth_message=STUDIO_NAME,
        # Failed logins: a growing delay per client address, then a lock-out (studio/logins.py).
        app_kwargs={"middleware": middleware(guard or LoginGuard())} if credentials else None,
    )
    return demo
