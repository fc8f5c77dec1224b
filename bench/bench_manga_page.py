"""Composing a manga page against writing it: does the page engine cost more than saving the PNG?

A 6-panel B5 page at 300 DPI (2150 x 3035) in the "6-mixed" layout, right to left: six 512x640
panel pictures read from disk (as SD 1.5 would have made them), cropped into their panels, the
whole page screentoned at 60 lpi, six bubbles (vertical Japanese, English, a shout, a thought, a
whisper, a narration box), then written as the PNG the export makes (with its project JSON).

- measured: ``engines.manga.page_output.export_page``: compose + tone + lettering + write;
- baseline: ``engines.manga.export.write_page_png`` of that same finished page: writing it alone.

Target: at most 2x. The pixels must be the same every time (a pixel hash), or it exits 1.

    python bench/bench_manga_page.py [--quick] [--repeats N] [--json PATH]
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402

NAME = "bench_manga_page"
TARGET = 2.0
BUBBLES = (("行くぞ！\nついてこい。", "speech"), ("Wait for me!", "shout"), ("……なんだと？", "thought"),
           ("(they are watching)", "whisper"), ("その夜、街は静かだった。", "narration"), ("Run!!", "speech"))


def panel_pictures(folder: Path, count: int) -> list[Path]:
    """Picture-like panels: shaded shapes with outlines and grain (a flat colour would compress to nothing)."""
    import numpy as np
    from PIL import Image, ImageDraw

    paths = []
    for index in range(count):
        rng = np.random.default_rng(index)
        noise = rng.normal(200, 18, (640, 512, 3)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(noise, "RGB")
        pen = ImageDraw.Draw(image)
        for _ in range(8):
            x, y, r = (int(v) for v in rng.integers((0, 0, 30), (512, 640, 160)))
            pen.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(30, 230, 3)),
                        outline=(0, 0, 0), width=5)
        path = folder / f"panel-{index + 1}.png"
        image.save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv)
    from engines.manga.export import write_page_png
    from engines.manga.fonts import FontBook
    from engines.manga.page_model import Bubble, PageSpec, PanelSpec, Tone, page_to_json
    from engines.manga.page_output import PNG_KEY, export_page

    dpi = 150 if args.quick else 300
    report = harness.Report(NAME, f"a 6-panel B5 page at {dpi} DPI: composed and written vs written", TARGET, args)
    fonts = FontBook(system=False)
    with tempfile.TemporaryDirectory(prefix="inkframe-bench-page-") as tmp:
        folder = Path(tmp)
        pictures = panel_pictures(folder, 6)
        bubbles = tuple(Bubble(panel=i + 1, text=text, style=style, x=0.7, y=0.3,
                               **({} if style == "narration" else {"tail_x": 0.4, "tail_y": 0.9}))
                        for i, (text, style) in enumerate(BUBBLES))
        spec = PageSpec(name="bench", size="B5", dpi=dpi, layout="6-mixed", reading="rtl",
                        panels=tuple(PanelSpec(image=str(p)) for p in pictures), bubbles=bubbles,
                        tone=Tone(mode="screentone", lpi=60, angle=45))
        out, alone = folder / "page.png", folder / "alone.png"
        composed = export_page(spec, folder, out, fonts=fonts)  # warm: fonts, layouts, the page cache
        page, text = composed.image, {PNG_KEY: page_to_json(spec)}
        digests, composed_times, write_times = set(), [], []
        for _ in range(harness.repeats(args, 15, 2)):
            seconds, result = harness.timed(lambda: export_page(spec, folder, out, fonts=fonts))
            composed_times.append(seconds)
            digests.add(hashlib.sha256(result.image.tobytes()).hexdigest())
            seconds, _ = harness.timed(lambda: write_page_png(page, alone, dpi, text=text))
            write_times.append(seconds)
        report.check("the same pixels every time", len(digests) == 1)
        report.check("the page written is the page composed", out.stat().st_size == alone.stat().st_size)
        megabytes = out.stat().st_size / 2**20
    report.info = harness.environment(args, page_px=f"{page.width}x{page.height}", dpi=dpi)
    measured = report.add("compose + tone + letter + write", composed_times, note=f"{megabytes:.2f} MB PNG")
    baseline = report.add("write the finished page alone", write_times, note="write_page_png, same page and text")
    return report.finish(measured, baseline)


if __name__ == "__main__":
    sys.exit(harness.run(main))
