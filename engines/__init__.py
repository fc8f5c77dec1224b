"""Inkframe Studio engines: plain Python, no gradio, nothing heavy at import time."""

__version__ = "0.1.0"
