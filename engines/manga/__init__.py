"""Manga panels over either backend (an Origin model or an SD 1.5 checkpoint); pages come later.

    panels.py   PanelRequest -> generate_panels(): the Text-to-Manga tab's and `/generate`'s engine call
    cli.py      `python app.py generate`: the backend is read from --model
"""
