"""How well each still mode keeps the character: the consistency score of each mode on the same stills.

Animation offers three ways for a still to condition the frames (video2video, sparsectrl, reference) and
identity (the IP-Adapter) on top of any; docs/animation.md says which is the default and why. This runs
every mode on the same stills, prompt and seed and prints each one's mean stability and identity (colours
and structure against the still, on the character), so the choice can be checked on real weights:

    python bench/compare_still_modes.py --data-dir DATA --stills DIR --base-model M --motion-adapter M \\
        [--sparsectrl M] [--prompt TEXT] [--frames 16] [--steps 25] [--size 512x512] [--json OUT]

Models are looked up as the studio does (HF ids downloaded into DATA/models, folders, single files);
the IP-Adapter files are h94/IP-Adapter's in DATA/models. Without --data-dir it runs on the test suite's
tiny random-weight models, which checks that the comparison runs and says nothing about quality.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = (("video2video", False), ("video2video", True), ("sparsectrl", False), ("reference", False))


def _tiny_data(folder: Path) -> tuple[Path, list[Path], dict]:
    """The suite's tiny models and three drawn stills, for a run without real weights."""
    from PIL import Image, ImageDraw

    from bench.synthetic_models import tiny_models

    tiny = tiny_models()
    sys.path.insert(0, str(Path(tiny.__file__).parent))
    from animation_models import save_tiny_motion_adapter, save_tiny_sparsectrl

    models = folder / "models"
    tiny.save_tiny_sd_pipeline(models / "tiny-anime")
    save_tiny_motion_adapter(models / "tiny-motion", seed=1)
    save_tiny_sparsectrl(models / "tiny-sparsectrl", seed=2)
    tiny.save_tiny_ip_adapter(models / "h94--IP-Adapter", seed=4)
    stills = []
    for index, colour in enumerate(((200, 40, 40), (40, 60, 200), (60, 160, 70))):
        image = Image.new("RGB", (64, 64), (235, 235, 225))
        draw = ImageDraw.Draw(image)
        draw.ellipse((20, 6, 44, 30), fill=(240, 200, 170))
        draw.rectangle((16, 30, 48, 62), fill=colour)
        stills.append(folder / f"still-{index}.png")
        image.save(stills[-1])
    settings = dict(base_model="tiny-anime", vae="", motion_adapter="tiny-motion", sparsectrl_model="tiny-sparsectrl",
                    steps=3, cfg=2.0, width=64, height=64, frames=8, clip_skip=1)
    return folder, stills, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--stills", type=Path, default=None, help="a folder of stills")
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--motion-adapter", default=None)
    parser.add_argument("--sparsectrl", default=None)
    parser.add_argument("--prompt", default="1girl, smiling, hair moving in the wind")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from engines.animation.animate import make_animation
    from engines.animation.request import AnimationRequest
    from engines.errors import StudioError
    from engines.hardware import HardwareManager
    from engines.live_action.source import images_in
    from engines.models import ModelStore
    from engines.settings import MachineSettings

    with tempfile.TemporaryDirectory(prefix="inkframe-modes-") as tmp:
        if args.data_dir is None:
            data, stills, settings = _tiny_data(Path(tmp))
            cpu = True
        else:
            data, stills, cpu = args.data_dir, images_in(args.stills), args.cpu
            width, height = (int(v) for v in args.size.lower().split("x"))
            settings = dict(base_model=args.base_model, motion_adapter=args.motion_adapter, steps=args.steps,
                            width=width, height=height, frames=args.frames)
            if args.sparsectrl:
                settings["sparsectrl_model"] = args.sparsectrl
        hardware = HardwareManager(MachineSettings(data_dir=data, cpu=cpu))
        store = ModelStore(data / "models", offline=args.data_dir is None)
        rows = []
        for mode, identity in MODES:
            label = mode + (" + identity" if identity else "")
            scores: dict[str, list[float]] = {"stability": [], "identity": [], "identity_colour": [],
                                              "identity_structure": []}
            try:
                for index, still in enumerate(stills):
                    request = AnimationRequest(**settings, image=still, prompt=args.prompt, seed=args.seed,
                                               still_mode=mode, identity=identity, negative="",
                                               output=Path(tmp) / "out" / f"{index}-{mode}-{identity}.gif")
                    report = make_animation(request, hardware, store).report
                    for key in scores:
                        scores[key].append(float(getattr(report, key)))
            except StudioError as error:
                print(f"{label}: skipped ({error})")
                continue
            rows.append({"mode": label, **{k: statistics.mean(v) for k, v in scores.items()}, "stills": len(stills)})
    print(f"{'mode':26} {'stability':>9} {'identity':>9} {'colours':>9} {'structure':>9}")
    for row in rows:
        print(f"{row['mode']:26} {row['stability']:9.3f} {row['identity']:9.3f} {row['identity_colour']:9.3f} "
              f"{row['identity_structure']:9.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "tiny": args.data_dir is None}, indent=2), encoding="utf-8")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
