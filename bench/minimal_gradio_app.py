"""The startup baseline: the smallest gradio app, launched the way the studio is (loopback, no browser).

    python bench/minimal_gradio_app.py --port P
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # as the studio sets it; no network either way
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as demo:
        gr.Markdown("# Baseline")
    demo.launch(server_name="127.0.0.1", server_port=args.port, inbrowser=False)


if __name__ == "__main__":
    main()
