"""`python app.py collect`: fill a dataset folder from image sites or a folder, with a tqdm bar.

    python app.py collect --source danbooru --tags "hatsune_miku solo" --target 200 --out DIR
    python app.py collect --source safebooru --source konachan --tags "scenery" --target 500
    python app.py collect --source danbooru --endpoint https://safebooru.donmai.us ...
    python app.py collect --source folder --folder ~/my-drawings --out DIR

Per-source values (--endpoint, --login, --api-key, --engine-id) take VALUE for every chosen
source that uses it, or SOURCE=VALUE for one of them. Run it again to resume: what is done is skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from engines.dataset.request import CollectRequest, NetworkSettings, QualityThresholds, SourceSpec
from engines.dataset.sources import DEFAULT_HF_DATASET, SOURCES
from engines.errors import InvalidRequestError
from engines.settings import MachineSettings

PER_SOURCE = ("endpoint", "login", "api_key", "engine_id")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to collect")
    what.add_argument("--source", action="append", choices=tuple(SOURCES), metavar="SOURCE",
                      help=f"where images come from, repeatable: {', '.join(SOURCES)}")
    what.add_argument("--tags", default="", help="booru tags, or search words for wallhaven and cse")
    what.add_argument("--target", type=int, default=100, help="stop when the dataset holds N images (default 100)")
    what.add_argument("--out", default=None, metavar="DIR",
                      help="dataset folder (default: <data dir>/datasets/default)")
    what.add_argument("--sensitive", action="store_true",
                      help="also take Danbooru 's' / Gelbooru 'sensitive' posts (default: general only)")
    what.add_argument("--min-score", type=int, default=None, metavar="N",
                      help="skip posts scored below N (default: Yande.re 3, others none)")
    what.add_argument("--since", default="", metavar="YYYY-MM-DD",
                      help="skip posts older than this (default: Yande.re 2015-01-01)")
    what.add_argument("--caption-template", default="{tags}", metavar="TEXT",
                      help="caption text; {tags} {characters} {copyrights} {artists} {general} {rating} {source}")
    keys = parser.add_argument_group("sites and keys (VALUE or SOURCE=VALUE)")
    keys.add_argument("--endpoint", action="append", default=[], metavar="URL",
                      help="a mirror or a test server instead of the site")
    keys.add_argument("--login", action="append", default=[], help="Danbooru login, Safebooru/Gelbooru user_id")
    keys.add_argument("--api-key", action="append", default=[], help="API key of the site")
    keys.add_argument("--engine-id", action="append", default=[], help="Google search engine id (cx)")
    keys.add_argument("--dataset", default="", metavar="ID", help=f"Hugging Face dataset (default {DEFAULT_HF_DATASET})")
    keys.add_argument("--folder", default="", metavar="DIR", help="the folder of your own images (source folder)")
    t, n = QualityThresholds(), NetworkSettings()
    quality = parser.add_argument_group("quality filters")
    quality.add_argument("--min-edge", type=int, default=t.min_long_edge, metavar="PX", help="minimum long edge")
    quality.add_argument("--min-short-edge", type=int, default=t.min_short_edge, metavar="PX")
    quality.add_argument("--max-aspect", type=float, default=t.max_aspect, metavar="R",
                         help="longest allowed side ratio (4 keeps 1:4 to 4:1)")
    quality.add_argument("--min-sharpness", type=float, default=t.min_sharpness, metavar="V",
                         help="minimum Laplacian variance")
    quality.add_argument("--min-colour-std", type=float, default=t.min_colour_std, metavar="V",
                         help="minimum colour standard deviation (flat images fall below)")
    quality.add_argument("--near-duplicate", type=int, default=t.near_duplicate_distance, metavar="BITS",
                         help="pHash distance counted as the same picture")
    net = parser.add_argument_group("network")
    net.add_argument("--rate-limit", type=float, default=n.rate_limit, metavar="PER_S",
                     help="requests per second per host (0: no limit)")
    net.add_argument("--timeout", type=float, default=n.timeout_s, metavar="S")
    net.add_argument("--retries", type=int, default=n.retries)
    net.add_argument("--backoff", type=float, default=n.backoff_s, metavar="S", help="first wait between retries")


def _per_source(values: list[str], name: str, option: str, sources: list[str]) -> str:
    """The value of ``option`` for source ``name``: SOURCE=VALUE wins over a plain VALUE."""
    plain: Optional[str] = None
    for value in values:
        key, sep, rest = value.partition("=")
        if sep and key in SOURCES:
            if key not in sources:
                raise InvalidRequestError(f"--{option} names '{key}', which is not one of the chosen sources.")
            if key == name:
                return rest
        else:
            plain = value
    return plain or ""


# The collect flags by argparse name (``--min-edge`` -> ``min_edge``): the CLI and the studio's ``/collect``.
FLAGS = ("source", "tags", "target", "out", "sensitive", "min_score", "since", "caption_template", *PER_SOURCE,
         "dataset", "folder", "min_edge", "min_short_edge", "max_aspect", "min_sharpness", "min_colour_std",
         "near_duplicate", "rate_limit", "timeout", "retries", "backoff")


def request_from_args(args: argparse.Namespace, settings: MachineSettings) -> CollectRequest:
    return request_from_flags(settings, **{name: getattr(args, name) for name in FLAGS})


def request_from_flags(settings: MachineSettings, **flags: Any) -> CollectRequest:
    """The request from every flag of ``FLAGS`` by name, as the command line gives them."""
    if set(flags) != set(FLAGS):
        raise TypeError(f"request_from_flags takes the flags {FLAGS}, not {sorted(set(flags) ^ set(FLAGS))}.")
    f = argparse.Namespace(**flags)
    names = list(dict.fromkeys(f.source or []))
    if not names:
        raise InvalidRequestError(f"Choose a source with --source ({', '.join(SOURCES)}).")
    specs = []
    for name in names:
        values = {field: _per_source(getattr(f, field) or [], name, field.replace("_", "-"), names)
                  for field in PER_SOURCE if field in SOURCES[name].fields}
        specs.append(SourceSpec(name=name, dataset=f.dataset if name == "hf" else "",
                                folder=f.folder if name == "folder" else "", **values))
    out = Path(f.out).expanduser() if f.out else settings.paths.datasets / "default"
    return CollectRequest(
        out_dir=out, sources=tuple(specs), tags=f.tags, target=f.target,
        allow_sensitive=f.sensitive, min_score=f.min_score, posted_since=f.since,
        caption_template=f.caption_template,
        thresholds=QualityThresholds(
            min_long_edge=f.min_edge, min_short_edge=f.min_short_edge, max_aspect=f.max_aspect,
            min_sharpness=f.min_sharpness, min_colour_std=f.min_colour_std,
            near_duplicate_distance=f.near_duplicate),
        network=NetworkSettings(rate_limit=f.rate_limit, timeout_s=f.timeout, retries=f.retries,
                                backoff_s=f.backoff),
    )


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    from engines.dataset.collector import collect
    from engines.dataset.request import check
    from engines.progress import TqdmProgress

    request = request_from_args(args, settings)
    check(request, offline=settings.offline)
    with TqdmProgress(desc="Collecting", unit="img", total=request.target) as bar:
        result = collect(request, bar, offline=settings.offline)
    print(result.summary())
    print(f"Summary: {result.summary_path}")
    return 0
