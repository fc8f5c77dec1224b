"""Small helpers shared by the tabs: HTML renderers (escaped, no scripts) and reading gallery values."""

from __future__ import annotations

from contextlib import contextmanager
from html import escape
from pathlib import Path
from typing import Any, Iterator, Optional

from engines.errors import StudioError

GB = 2**30


def fmt_bytes(value: Optional[float]) -> str:
    if value is None:
        return "–"
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}" if unit != "GB" else f"{value / size:.2f} {unit}"
    return f"{int(value)} B"


def level_class(percent: Optional[float], warn: float = 80, alert: float = 92) -> str:
    if percent is None:
        return "ink-gauge--off"
    if percent >= alert:
        return "ink-gauge--alert"
    if percent >= warn:
        return "ink-gauge--warn"
    return "ink-gauge--ok"


def gauge(label: str, used: Optional[float], total: Optional[float], detail: str = "") -> str:
    """A labelled bar; ``used``/``total`` in bytes. An absent total renders a muted 'not available'."""
    if not total or used is None:
        return (f'<div class="ink-gauge ink-gauge--off"><div class="ink-gauge__label">'
                f'<span>{escape(label)}</span><span>not available</span></div>'
                f'<div class="ink-gauge__track"></div>'
                f'<div class="ink-gauge__detail">{escape(detail)}</div></div>')
    percent = max(0.0, min(100.0, 100.0 * used / total))
    return (
        f'<div class="ink-gauge {level_class(percent)}" data-label="{escape(label)}" '
        f'data-percent="{percent:.1f}"><div class="ink-gauge__label"><span>{escape(label)}</span>'
        f'<span>{fmt_bytes(used)} / {fmt_bytes(total)} · {percent:.0f}%</span></div>'
        f'<div class="ink-gauge__track"><div class="ink-gauge__fill" style="width:{percent:.1f}%"></div></div>'
        f'<div class="ink-gauge__detail">{escape(detail)}</div></div>'
    )


def chip(text: str, kind: str = "") -> str:
    return f'<span class="ink-chip {escape(kind)}">{escape(text)}</span>'


def progress_gauge(bar_id: str, label: str, done: int, of: int, message: str = "", state: str = "idle",
                   **data: object) -> str:
    """A job's progress bar, ``done`` of ``of``; ``data-state`` and the ``data`` attributes let tests read it."""
    percent = max(0.0, min(100.0, 100.0 * done / of)) if of else 0.0
    attributes = "".join(f' data-{escape(k)}="{escape(str(v))}"' for k, v in data.items())
    return (
        f'<div class="ink-gauge ink-gauge--ok" id="{escape(bar_id)}"{attributes} data-state="{escape(state)}">'
        f'<div class="ink-gauge__label"><span>{escape(label)}</span><span>{done} / {of} · {percent:.0f}%</span>'
        f'</div><div class="ink-gauge__track"><div class="ink-gauge__fill" style="width:{percent:.1f}%"></div></div>'
        f'<div class="ink-gauge__detail">{escape(message)}</div></div>'
    )


def selected_index(index: Any) -> int:
    """A gallery's ``SelectData.index`` as one number: gradio gives an int, or [row, column] for a grid."""
    return index if isinstance(index, int) else (index or [0])[0]


def selected_item(items: Any, index: Any) -> Any:
    """The gallery value picked at ``SelectData.index``, or None when the click fell outside the items."""
    position = selected_index(index)
    return items[position] if items and 0 <= position < len(items) else None


def gallery_caption(item: Any) -> Optional[str]:
    """A gallery value's caption ((file, caption) pairs), or None."""
    return item[1] if isinstance(item, (list, tuple)) and len(item) > 1 else None


def gallery_path(item: Any) -> Optional[str]:
    """A gallery value's file: gradio 6 gives (file, caption) pairs or dicts with an image's path."""
    if item is None:
        return None
    if isinstance(item, (list, tuple)):
        item = item[0]
    if isinstance(item, dict):
        image = item.get("image", item)
        item = image.get("path") if isinstance(image, dict) else image
    path = getattr(item, "path", item)
    return str(path) if path and Path(str(path)).is_file() else None


def gradio_hints(*handlers: Any) -> None:
    """Make the ``gr.Request`` / ``gr.SelectData`` annotations of handlers visible to gradio.

    gradio finds the parameters it injects (and hides from the API) by their annotations, read with
    ``typing.get_type_hints`` against the module's globals. ``from __future__ import annotations``
    leaves them as the strings ``"gr.Request"``, and the tabs import gradio inside ``build()`` so that
    importing a tab stays light; so the strings are turned into the classes here, once per handler.
    """
    import gradio

    for handler in handlers:
        notes = getattr(handler, "__annotations__", {})
        for name, note in list(notes.items()):
            if isinstance(note, str) and note.startswith("gr.") and hasattr(gradio, note[3:].split("[")[0]):
                notes[name] = getattr(gradio, note[3:])


@contextmanager
def as_sentence() -> Iterator[None]:
    """A StudioError raised inside reaches the page (and gradio_client) as gradio's error, the same one sentence.

    The studio launches with ``show_error=False``, so any other exception shows a generic message there."""
    import gradio as gr

    try:
        yield
    except StudioError as error:
        raise gr.Error(str(error)) from error
