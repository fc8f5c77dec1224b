"""What the character reference costs: an SD 1.5 picture with an IP-Adapter reference against the same
picture without one, both through ``engines.sd15.txt2img.generate`` on the same checkpoint and seed.

The IP-Adapter adds a CLIP image encoding per pipeline call and a second key/value projection in each
cross-attention layer; the target is at most 1.3x a plain picture. Random weights in h94/IP-Adapter's
layout (the tiny test encoder for ``--size tiny``, ViT-H's shapes otherwise); loading is not timed.
The reference must change the picture (a check), or the benchmark exits 1.

    python bench/bench_sd15_reference.py [--quick] [--device cpu|cuda] [--vram-limit GB] [--size tiny|small|sd15]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.synthetic_models import SPECS, build_pipeline, tiny_models  # noqa: E402

NAME = "bench_sd15_reference"
TARGET = 1.3
PROMPT = "ink manga, a girl on a rooftop at night, screentone"
SEED = 1234
VIT_H = dict(hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32,
             num_attention_heads=16, image_size=224, patch_size=14)


def main(argv: list[str] | None = None) -> int:
    args = harness.parse_args(NAME, __doc__.split("\n\n")[0], argv)
    cuda = args.device == "cuda"
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    harness.quiet_libraries()
    import tempfile

    import numpy as np
    from PIL import Image

    from engines.models import ModelStore
    from engines.sd15.request import Sd15Request
    from engines.sd15.txt2img import generate

    runs = harness.repeats(args, full=5, quick=2)
    n_steps = 4 if args.quick else 20  # a real job's length: the encoder runs once per picture
    px = max(64, SPECS[args.size].image_px)
    peak = harness.PeakVram(cuda)

    with tempfile.TemporaryDirectory(prefix="inkframe-bench-") as tmp:
        data = Path(tmp) / "data"
        models = data / "models"

        def build():
            pipe = build_pipeline(args.size, seed=0)
            pipe.save_pretrained(models / "bench-sd15")
            encoder = None if args.size == "tiny" else VIT_H
            tiny_models().save_tiny_ip_adapter(models / "h94--IP-Adapter", unet=pipe.unet, encoder_config=encoder)
            return harness.pipeline_bytes(pipe)

        size = harness.in_fresh_thread(build)
        reference = Path(tmp) / "hero.png"
        Image.new("RGB", (px, px), (220, 30, 40)).save(reference)
        hw = harness.make_hardware(args, data, device_budget=3 * size, host_budget=6 * size)
        store = ModelStore(models, offline=True)
        common = dict(model="bench-sd15", prompt=PROMPT, sampler="DDIM", steps=n_steps, cfg=7.5, width=px,
                      height=px, seed=SEED, output_dir=Path(tmp) / "out")
        requests = {"plain": Sd15Request(**common),
                    "reference": Sd15Request(**common, reference=reference, reference_scale=0.7)}

        def run(which: str):
            def call():
                picture = generate(requests[which], hw, store, outputs=Path(tmp) / "out").pictures[0]
                return np.asarray(Image.open(picture.path).convert("RGB"))

            return harness.in_fresh_thread(call)

        # Warm-up: the first of each loads (the checkpoint; the adapter and its image encoder).
        first = {which: run(which) for which in requests}
        samples: dict[str, list[float]] = {"plain": [], "reference": []}
        peaks: dict[str, list] = {"plain": [], "reference": []}
        for i in range(runs):
            for which in (("plain", "reference") if i % 2 == 0 else ("reference", "plain")):
                # Switching costs a load or unload of the adapter; measured separately below, not here.
                run(which)
                with peak.phase() as p:
                    seconds, _ = harness.timed(lambda: run(which), cuda=cuda)
                samples[which].append(seconds)
                peaks[which].append(p["bytes"])
        switch = [harness.timed(lambda: run(w), cuda=cuda)[0] for w in ("reference", "plain") * max(1, runs // 2)]

        report = harness.Report(NAME, "an SD 1.5 picture with a character reference vs without", TARGET, args)
        report.info = harness.environment(args, hw, size=args.size, pipeline_mib=round(size / 2**20, 1),
                                          image_px=px, steps=n_steps)
        plain_row = report.add("plain picture (engine)", samples["plain"], peak_vram=harness.max_known(peaks["plain"]))
        ref_row = report.add("with an IP-Adapter reference (engine)", samples["reference"],
                             peak_vram=harness.max_known(peaks["reference"]))
        report.add("alternating with and without (adapter loaded / taken out each time)", switch,
                   note="what switching costs; studio users keep one setting for a page")
        report.check("the reference changes the picture", not np.array_equal(first["plain"], first["reference"]))
        hw.close()
        return report.finish(ref_row, plain_row)


if __name__ == "__main__":
    sys.exit(harness.run(main))
