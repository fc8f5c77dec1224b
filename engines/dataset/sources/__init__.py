"""The sites and folders a dataset can come from, as a light registry.

Each source is a small client in its own module with the same interface (``sources.base.Source``);
the registry names them without importing them, so the CLI's ``--help`` and the tab's layout stay
instant and requests are only imported when a collection starts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceInfo:
    name: str
    label: str
    module: str
    cls: str
    endpoint: str             # the site's own address; SourceSpec.endpoint overrides it
    fields: tuple[str, ...]   # the SourceSpec fields this source reads (the tab shows exactly these)
    needs_network: bool = True
    hint: str = ""


_ALL = (
    SourceInfo("danbooru", "Danbooru", "engines.dataset.sources.danbooru", "DanbooruSource",
               "https://danbooru.donmai.us", ("endpoint", "login", "api_key"),
               hint="General rating only (sensitive if allowed). For the safe mirror use "
                    "https://safebooru.donmai.us as the endpoint. Login + API key raise the tag limit."),
    SourceInfo("safebooru", "Safebooru.org", "engines.dataset.sources.gelbooru", "GelbooruSource",
               "https://safebooru.org", ("endpoint", "login", "api_key"),
               hint="Gelbooru API; user_id goes in the login field. Posts rated questionable are dropped."),
    SourceInfo("konachan", "Konachan", "engines.dataset.sources.moebooru", "MoebooruSource",
               "https://konachan.net", ("endpoint",), hint="Rating s (safe) only."),
    SourceInfo("yandere", "Yande.re", "engines.dataset.sources.moebooru", "MoebooruSource",
               "https://yande.re", ("endpoint",),
               hint="Rating s only; by default posts from 2015 on with a score of at least 3."),
    SourceInfo("wallhaven", "Wallhaven", "engines.dataset.sources.wallhaven", "WallhavenSource",
               "https://wallhaven.cc", ("endpoint", "api_key"), hint="Anime category, SFW purity only."),
    SourceInfo("hf", "Hugging Face dataset", "engines.dataset.sources.huggingface", "HuggingFaceSource",
               "https://huggingface.co", ("endpoint", "dataset"),
               hint="An image dataset on the Hub (image files or parquet shards)."),
    SourceInfo("cse", "Google Custom Search", "engines.dataset.sources.google_cse", "GoogleImageSource",
               "https://www.googleapis.com", ("endpoint", "api_key", "engine_id"),
               hint="Image search with SafeSearch on; needs an API key and a search engine id (cx)."),
    SourceInfo("folder", "Local folder", "engines.dataset.sources.folder", "FolderSource",
               "", ("folder",), needs_network=False,
               hint="Your own images, with or without .txt caption files beside them."),
)

SOURCES: dict[str, SourceInfo] = {info.name: info for info in _ALL}
DEFAULT_HF_DATASET = "huggan/animeface-dataset"


def source_info(name: str) -> SourceInfo:
    return SOURCES[name]


def source_class(name: str) -> type:
    info = SOURCES[name]
    return getattr(importlib.import_module(info.module), info.cls)
