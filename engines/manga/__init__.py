"""Manga panels over either backend (an Origin model or an SD 1.5 checkpoint); pages come later.

    cli.py   `python app.py generate`: the backend is detected from --model
"""
