"""The studio's look: ink and paper with one vermilion accent, system fonts only.

Gradio's default themes fetch Google Fonts; the studio must open instantly offline, so every
font here is a local stack.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SANS = ["Inter", "Segoe UI", "Hiragino Sans", "Yu Gothic UI", "Noto Sans CJK JP", "system-ui", "sans-serif"]
MONO = ["JetBrains Mono", "Cascadia Mono", "Consolas", "ui-monospace", "monospace"]


def build_theme():
    import gradio as gr
    from gradio.themes.utils import colors, sizes

    theme = gr.themes.Base(
        primary_hue=colors.red, secondary_hue=colors.amber, neutral_hue=colors.zinc,
        radius_size=sizes.radius_sm, spacing_size=sizes.spacing_md, text_size=sizes.text_md,
        font=SANS, font_mono=MONO,
    )
    return theme.set(
        body_background_fill="#f4f1ea", body_background_fill_dark="#121214",
        block_background_fill="#fffdf8", block_background_fill_dark="#1b1b1f",
        block_border_color="#d9d3c7", block_border_color_dark="#2c2c33",
        button_primary_background_fill="#d7402b", button_primary_background_fill_hover="#b8321f",
        button_primary_background_fill_dark="#e0533d", button_primary_text_color="#ffffff",
        block_title_text_weight="600", block_label_text_weight="600",
    )


def load_css() -> str:
    return (ASSETS / "studio.css").read_text(encoding="utf-8")
