"""The header bar: the studio's name and a live device / memory readout."""

from __future__ import annotations

from html import escape

from engines import __version__
from studio.widgets import chip, fmt_bytes


def render_header(telemetry) -> str:
    """The bar's HTML; ``None`` (before the first reading) shows the brand and 'starting'."""
    if telemetry is None:
        return _bar([chip("starting…")])
    m = telemetry.memory
    label = telemetry.device if telemetry.device_type == "cpu" else (
        f"{telemetry.device_type.upper()} · {telemetry.device}")
    chips = [chip(label, "ink-chip--gpu" if telemetry.device_type != "cpu" else "")]
    if m.vram_total:
        chips.append(chip(f"VRAM {fmt_bytes(m.vram_used)} / {fmt_bytes(m.vram_total)}",
                          "ink-chip--warn" if (m.vram_percent or 0) >= 92 else ""))
    chips.append(chip(f"RAM {fmt_bytes(m.ram_used)} / {fmt_bytes(m.ram_total)}",
                      "ink-chip--warn" if m.ram_percent >= 90 else ""))
    chips.append(chip(f"{len([r for r in telemetry.models if r.tier != 'unloaded'])} models loaded"))
    chips.append(chip(f"busy: {telemetry.busy}", "ink-chip--busy") if telemetry.busy else chip("idle"))
    return _bar(chips)


def _bar(chips: list[str]) -> str:
    return (
        '<div id="ink-header"><div class="ink-brand"><b>INKFRAME</b><span>Studio</span>'
        f'<small>v{escape(__version__)}</small></div>'
        f'<div class="ink-readout" id="ink-readout">{"".join(chips)}</div></div>'
    )
