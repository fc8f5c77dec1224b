"""Builds the studio's Blocks from one module per tab and launches it."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def build_app(ctx) -> Any:
    import gradio as gr

    from studio import animation_tab, dataset_tab, live_action_tab, manga_tab, system_tab, training_tab
    from studio.header import render_header

    with gr.Blocks(title="Inkframe Studio", analytics_enabled=False, fill_width=True) as demo:
        # The first readout arrives with the page's load event: probing the device imports
        # torch (~1 s), which need not delay the first byte the browser sees.
        header = gr.HTML(render_header(None), elem_id="ink-header-block")
        with gr.Tabs(elem_id="ink-tabs") as tabs:
            manga = manga_tab.build(ctx)
            live_action = live_action_tab.build(ctx, manga)
            animation_tab.build(ctx, manga, live_action)
            dataset_tab.build(ctx)
            training = training_tab.build(ctx)
            system = system_tab.build(ctx, header)
        # "Generate with this" on a training checkpoint: the Text-to-Manga tab, with that checkpoint chosen.
        training["generate_with"].click(
            lambda run, checkpoint: (gr.Tabs(selected="manga"), training["model_for"](run, checkpoint)),
            inputs=[training["selected_run"], training["picked_checkpoint"]],
            outputs=[tabs, manga["fields"]["model"]], api_visibility="private", show_progress="hidden")
        refresh, outputs = system["load"]
        demo.load(refresh, outputs=outputs, show_progress="hidden", api_visibility="private")
    demo.queue(default_concurrency_limit=4)
    return demo


def launch(ctx, *, host: str, port: int, share: bool, credentials: list[tuple[str, str]],
           open_browser: bool, block: bool = True) -> Any:
    from studio.theme import build_theme, load_css

    demo = build_app(ctx)
    paths = ctx.settings.paths
    log.info("Inkframe Studio on http://%s:%d (data in %s)", host, port, paths.root)
    demo.launch(
        server_name=host, server_port=port, share=share, auth=credentials or None,
        inbrowser=open_browser, prevent_thread_lock=not block, show_error=False,
        theme=build_theme(), css=load_css(), footer_links=[],
        # Only what the studio writes (outputs) is served; models, runs and everything
        # outside the data dir stay private even to a logged-in user.
        allowed_paths=[str(paths.outputs)],
        blocked_paths=[str(paths.models), str(paths.runtime), str(paths.runs)],
        auth_message="Inkframe Studio: log in with the credentials given to --auth.",
    )
    return demo
