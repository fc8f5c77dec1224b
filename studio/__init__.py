"""The Gradio studio: the only package that imports gradio; one module per tab."""
