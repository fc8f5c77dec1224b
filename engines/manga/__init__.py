"""Manga panels over either backend (an Origin model or an SD 1.5 checkpoint), and pages made of them.

Panels:
    panels.py        PanelRequest -> generate_panels(): the Text-to-Manga tab's and `/generate`'s engine call
    cli.py           `python app.py generate`: the backend is read from --model

Pages (Pillow and numpy; no GPU unless a panel is drawn from its prompt):
    page_model.py    PageSpec, PanelSpec, Bubble, Tone: a page as data, and its project JSON
    layouts.py       paper sizes, the templates in assets/page_layouts/, rows like "1; 2 1", pixel geometry
    compose.py       compose_page(): pictures cropped into panels, tone, borders, lettering
    fonts.py, lettering.py, bubbles.py   fonts (IPAexGothic and the system's), horizontal and vertical
                     text layout, the five bubble styles
    tone.py          greyscale for line art, screentone, ink
    pictures.py      transparency flattened onto paper, for every picture the pages read
    project.py       pages on disk: outputs/pages/<name>/page.json and its pictures, saved atomically
    page_fill.py     panels drawn from their prompts through panels.generate_panels
    page_request.py  PageRequest -> make_page(): what `app.py page` and `/compose_page` call
    page_output.py, export.py   PNG, PDF (lossless, img2pdf) and CBZ (stored, ComicInfo.xml)
    page_cli.py, chapter_cli.py `python app.py page` and `python app.py chapter`
"""
