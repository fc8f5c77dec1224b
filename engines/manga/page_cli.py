"""`python app.py page`: compose a manga page from pictures, prompts and speech bubbles.

    python app.py page --layout 2x2 --panel a.png --panel b.png --panel c.png --panel d.png \\
        --bubble "1:行くぞ！" --bubble "2:Wait for me!:shout" --tone --size B5 --output page.png
    python app.py page --layout "1; 2 1" --model anything-v5.safetensors --prompt "1girl, rooftop" \\
        --prompt "3=city at night" --reference hero.png --output page.pdf
    python app.py page --project outputs/pages/page-001 --output page.png

Panel N is the N-th in reading order (right to left unless --ltr). Each --panel and --prompt fills
the next panel that has neither, or panel N with "N=...". The page is also kept as a project in
outputs/pages/<name>/ (pictures copied there), so the studio's Pages section opens it again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.manga.page_model import BUBBLE_STYLES, TONE_MODES
from engines.settings import MachineSettings



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", default=None, metavar='NAME|"ROWS"',
                        help='a template (2x2, 2x3, 3-rows, 4-koma, 4-koma-strip, splash, splash-2, 5-panel-z, '
                             'tall-2-stacked, action-slant, establishing-3, 6-mixed) or rows like "1; 2 1; 1 1 1"')
    parser.add_argument("--project", type=Path, default=None, metavar="PAGE.json|FOLDER",
                        help="draw a saved page project (other flags change it before drawing)")
    parser.add_argument("--panel", action="append", default=[], metavar="[N=]IMAGE",
                        help="a picture for a panel; repeatable")
    parser.add_argument("--prompt", action="append", default=[], metavar="[N=]TEXT",
                        help="generate a panel from this prompt with --model; repeatable")
    parser.add_argument("--bubble", action="append", default=[], metavar='"N:TEXT[:style]"',
                        help=f"lettering in panel N; style one of {', '.join(BUBBLE_STYLES)} (default speech); repeatable")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--rtl", dest="reading", action="store_const", const="rtl", default=None,
                       help="right-to-left reading, as Japanese manga (the default)")
    order.add_argument("--ltr", dest="reading", action="store_const", const="ltr", help="left-to-right reading")
    parser.add_argument("--tone", nargs="?", const="screentone", default=None,
                        choices=TONE_MODES,
                        help="the manga look over the whole page (--tone alone: screentone)")
    parser.add_argument("--lpi", type=float, default=None, help="screentone lines per inch (default 60)")
    parser.add_argument("--tone-angle", type=float, default=None, help="screentone angle in degrees (default 45)")
    parser.add_argument("--size", default=None, help="B5 (default), A5, A4, US comic, or WxHmm / WxHin")
    parser.add_argument("--dpi", type=int, default=None, help="dots per inch, 72 to 600 (default 300)")
    parser.add_argument("--margin", type=float, default=None, metavar="MM", help="page margin (default 10 mm)")
    parser.add_argument("--gutter", type=float, default=None, metavar="MM", help="space between panels (default 4 mm)")
    parser.add_argument("--bleed", type=float, default=None, metavar="MM", help="bleed beyond the trim (default 0)")
    parser.add_argument("--fit", choices=("cover", "contain"), default=None,
                        help="cover crops each picture to fill its panel (default); contain shows all of it")
    parser.add_argument("--model", default=None, help="the Origin run or SD 1.5 checkpoint that draws --prompt panels")
    parser.add_argument("--reference", type=Path, default=None, metavar="IMAGE",
                        help="a picture of the character, kept in every generated panel")
    parser.add_argument("--style", default=None, help='added to every panel prompt, e.g. "monochrome, manga"')
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the first generated panel (the next get +1, ...)")
    parser.add_argument("--sampler", default=None, help="the sampler for generated panels (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps for generated panels")
    parser.add_argument("--cfg", type=float, default=None, help="CFG scale for generated panels")
    parser.add_argument("--name", default=None, help="the project's name in outputs/pages (default page-NNN)")
    parser.add_argument("--output", type=Path, required=True, metavar="page.png|page.pdf")


def request_from_args(args: argparse.Namespace):
    from engines.manga.page_request import PageRequest

    return PageRequest(
        layout=args.layout, panels=tuple(args.panel), prompts=tuple(args.prompt), bubbles=tuple(args.bubble),
        reading=args.reading, tone=args.tone, lpi=args.lpi, tone_angle=args.tone_angle, size=args.size,
        dpi=args.dpi, margin=args.margin, gutter=args.gutter, bleed=args.bleed, fit=args.fit, model=args.model,
        reference=str(args.reference) if args.reference else None, style=args.style, seed=args.seed,
        sampler=args.sampler,
        steps=args.steps, cfg=args.cfg, name=args.name,
        project=str(args.project) if args.project else None)


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    from engines.context import build_engine_context
    from engines.manga.fonts import FontBook
    from engines.manga.page_request import make_page
    from engines.progress import TqdmProgress

    bar = TqdmProgress(desc="Drawing panels", lazy=True)  # with the first step: a page of pictures only has no bar

    try:
        result = make_page(request_from_args(args), build_engine_context(settings), args.output, on_step=bar,
                           fonts=FontBook([settings.paths.root / "fonts"]))
    finally:
        bar.close()
    width, height = result.size
    print(f"Saved {result.output} ({width}x{height} px at {result.spec.dpi} DPI); project: {result.folder}")
    return 0
