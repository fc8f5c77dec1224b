"""What an artist asks the collector for: typed, frozen, and checked before any network work.

``check(request)`` is the collector's ``check_inputs``: it runs before anything is opened or
downloaded and raises ``InvalidRequestError`` with one sentence quoting the bad value.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Optional

from engines.errors import InvalidRequestError, OfflineError
from engines.dataset.sources import SOURCES, source_info

CAPTION_FIELDS = ("tags", "characters", "copyrights", "artists", "general", "rating", "source")
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
MAX_TARGET = 1_000_000


@dataclass(frozen=True)
class SourceSpec:
    """One site (or folder) to collect from, with its own keys; empty strings mean "not given"."""

    name: str
    endpoint: str = ""   # a mirror or a test server instead of the site's own address
    login: str = ""      # Danbooru login name, Gelbooru/Safebooru user_id
    api_key: str = ""    # Danbooru, Gelbooru/Safebooru, Wallhaven, Google
    engine_id: str = ""  # Google Programmable Search engine id (cx)
    dataset: str = ""    # Hugging Face dataset id
    folder: str = ""     # the artist's own images


@dataclass(frozen=True)
class QualityThresholds:
    """What an image must reach to be kept; each failure is counted under its own reason."""

    min_long_edge: int = 512
    min_short_edge: int = 256
    max_aspect: float = 4.0           # 4.0 keeps 1:4 to 4:1
    min_sharpness: float = 20.0       # variance of the Laplacian at the analysis size
    min_colour_std: float = 10.0      # below this an image is (nearly) one flat colour
    near_duplicate_distance: int = 6  # pHash Hamming distance (of 64 bits) counted as the same picture


@dataclass(frozen=True)
class NetworkSettings:
    """How politely the collector talks to the sites."""

    rate_limit: float = 1.0   # requests per second per host; 0 turns the limiter off (tests, local folders)
    timeout_s: float = 20.0
    retries: int = 4          # on 429, 5xx, timeouts and dropped connections
    backoff_s: float = 1.0    # first wait between retries; doubles each time, Retry-After wins


@dataclass(frozen=True)
class CollectRequest:
    out_dir: Path
    sources: tuple[SourceSpec, ...]
    tags: str = ""                      # booru tags, or the search words for Wallhaven and Google
    target: int = 100
    allow_sensitive: bool = False       # Danbooru "s" / Gelbooru "sensitive" on top of "general"
    min_score: Optional[int] = None     # None: each site's default (Yande.re 3, the others none)
    posted_since: str = ""              # YYYY-MM-DD; empty: each site's default (Yande.re 2015-01-01)
    caption_template: str = "{tags}"
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    network: NetworkSettings = field(default_factory=NetworkSettings)

    def source_names(self) -> list[str]:
        return [spec.name for spec in self.sources]

    def public_dict(self) -> dict:
        """The request without keys or logins, for dataset.json and the logs."""
        return {
            "sources": [{"name": s.name, "endpoint": s.endpoint, "dataset": s.dataset, "folder": s.folder}
                        for s in self.sources],
            "tags": self.tags, "target": self.target, "allow_sensitive": self.allow_sensitive,
            "min_score": self.min_score, "posted_since": self.posted_since,
            "caption_template": self.caption_template,
            "thresholds": {f.name: getattr(self.thresholds, f.name) for f in fields(self.thresholds)},
        }


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


def _check_number(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _bad(f"{name} must be a number from {low:g} to {high:g}, not {value!r}.")


def _check_source(spec: SourceSpec, request: CollectRequest, offline: bool) -> None:
    if spec.name not in SOURCES:
        raise _bad(f"Unknown source '{spec.name}': choose from {', '.join(SOURCES)}.")
    info = source_info(spec.name)
    if spec.endpoint and not re.match(r"^https?://[^\s/]+", spec.endpoint):
        raise _bad(f"The {info.label} endpoint must be an http(s) address, not '{spec.endpoint}'.")
    if offline and info.needs_network:
        raise OfflineError(f"The studio is offline (--offline), so {info.label} cannot be reached: "
                           "collect from a local folder instead, or run without --offline.")
    if spec.name == "safebooru" and bool(spec.api_key) != bool(spec.login):
        raise _bad("Safebooru.org (Gelbooru API) needs both api_key and user_id, or neither.")
    if spec.name == "cse":
        if not spec.api_key or not spec.engine_id:
            raise _bad("Google Custom Search needs an API key and a search engine id (cx).")
        if not request.tags.strip():
            raise _bad("Google Custom Search needs search words in tags/query.")
    if spec.name == "hf" and spec.dataset and not _HF_ID.match(spec.dataset):
        raise _bad(f"'{spec.dataset}' is not a Hugging Face dataset id like 'owner/name'.")
    if spec.name == "folder":
        if not spec.folder:
            raise _bad("The folder source needs the folder that holds your images.")
        folder = Path(spec.folder).expanduser()
        if not folder.is_dir():
            raise _bad(f"There is no folder at '{spec.folder}' to import images from.")
        if folder.resolve() == Path(request.out_dir).expanduser().resolve():
            raise _bad("The folder to import from cannot be the dataset folder itself.")


def check(request: CollectRequest, *, offline: bool = False) -> None:
    """Validate every field before any folder is opened or any site is asked."""
    if not str(request.out_dir).strip():
        raise _bad("Choose a dataset folder to collect into.")
    out = Path(request.out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise _bad(f"The dataset folder '{out}' is a file, not a folder.")
    if not request.sources:
        raise _bad("Choose at least one source to collect from.")
    names = request.source_names()
    if len(set(names)) != len(names):
        raise _bad(f"Each source can be chosen once, got {', '.join(names)}.")
    for spec in request.sources:
        _check_source(spec, request, offline)
    if isinstance(request.target, bool) or not isinstance(request.target, int) or not 1 <= request.target <= MAX_TARGET:
        raise _bad(f"The target must be a whole number of images from 1 to {MAX_TARGET}, not {request.target!r}.")
    if request.min_score is not None and (isinstance(request.min_score, bool) or not isinstance(request.min_score, int)):
        raise _bad(f"The minimum score must be a whole number, not {request.min_score!r}.")
    if request.posted_since:
        try:
            date.fromisoformat(request.posted_since)
        except ValueError:
            raise _bad(f"'Posted since' must be a date like 2015-01-01, not '{request.posted_since}'.") from None
    _check_template(request.caption_template)
    t = request.thresholds
    _check_number("The minimum long edge", t.min_long_edge, 1, 100_000)
    _check_number("The minimum short edge", t.min_short_edge, 1, 100_000)
    _check_number("The maximum aspect ratio", t.max_aspect, 1, 100)
    _check_number("The minimum sharpness", t.min_sharpness, 0, 1e9)
    _check_number("The minimum colour deviation", t.min_colour_std, 0, 255)
    _check_number("The near-duplicate distance", t.near_duplicate_distance, 0, 32)
    n = request.network
    _check_number("The rate limit", n.rate_limit, 0, 1000)
    _check_number("The timeout", n.timeout_s, 0.05, 600)
    _check_number("The number of retries", n.retries, 0, 20)
    _check_number("The retry back-off", n.backoff_s, 0, 120)


def _check_template(template: str) -> None:
    if not template.strip():
        raise _bad("The caption template is empty: use {tags} for the cleaned tag list.")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise _bad(f"The caption template '{template}' is not valid ({error}).") from None
    unknown = [name for name in names if name not in CAPTION_FIELDS]
    if unknown:
        raise _bad(f"The caption template uses {{{unknown[0]}}}; it can use "
                   f"{', '.join('{' + n + '}' for n in CAPTION_FIELDS)}.")
