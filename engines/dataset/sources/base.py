"""What every source shares: the Post it yields and the Source interface.

A source turns a request into a lazy stream of posts (paging as the collector consumes them) and
can fetch one post's file into a ``.part`` path. The rating rules live with each site, because each
site names its ratings differently; the collector only asks ``is_safe(post)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional
from urllib.parse import urljoin

from engines.dataset.captions import TagGroups

if TYPE_CHECKING:
    from engines.dataset.http import HttpClient
    from engines.dataset.request import CollectRequest, SourceSpec
    from engines.progress import CancelToken

VIDEO_SUFFIXES = (".mp4", ".webm", ".zip", ".swf", ".gif", ".avi", ".mov", ".mkv")


@dataclass(frozen=True)
class Post:
    """One candidate image as a site describes it."""

    source: str
    post_id: str
    file_url: Optional[str]
    md5: Optional[str] = None           # the site's MD5 of the file, checked after download
    rating: str = ""                    # the site's own rating word
    score: Optional[int] = None
    tags: TagGroups = TagGroups()
    title: str = ""
    page_url: str = ""                  # where a person can see the post
    artwork_source: str = ""            # the artist's page, when the site records it
    created: Optional[datetime] = None
    width: Optional[int] = None
    height: Optional[int] = None
    data: Optional[bytes] = None        # inline bytes (Hugging Face parquet rows)
    local_path: Optional[Path] = None   # a file on this computer (folder source)
    caption_file: str = ""              # a caption file to read in ``enrich`` (Hugging Face image repos)

    @property
    def is_video(self) -> bool:
        url = (self.file_url or "").split("?", 1)[0].lower()
        return url.endswith(VIDEO_SUFFIXES)


def absolute_url(base: str, url: Optional[str]) -> Optional[str]:
    """Sites give protocol-relative (``//files...``) or site-relative (``/images/...``) file URLs now and
    then; a site-relative one stays under the endpoint's path, where a mirror serves its files too."""
    if not url:
        return None
    if url.startswith("/") and not url.startswith("//"):
        return base.rstrip("/") + url
    return urljoin(base + "/", url)


def timestamp(value: Any) -> Optional[datetime]:
    """Unix seconds, ISO 8601, or Gelbooru's "Sat Jan 02 10:00:00 -0500 2021"; None if unreadable."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, (int, float)) or str(value).isdigit():
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        text = str(value)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            parsed = datetime.strptime(text, "%a %b %d %H:%M:%S %z %Y")
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None


def to_int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Source:
    """One site or folder. Subclasses set ``label`` and implement ``posts``; most keep ``fetch``."""

    label = "source"
    default_min_score: Optional[int] = None
    default_since: str = ""
    min_interval_s = 0.0  # a published per-site limit stricter than the studio's default

    def __init__(self, spec: "SourceSpec", request: "CollectRequest", http: Optional["HttpClient"],
                 *, endpoint: str, work_dir: Path, offline: bool = False,
                 cancel: Optional["CancelToken"] = None) -> None:
        self.name = spec.name
        self.spec = spec
        self.request = request
        self.http = http
        self.endpoint = (spec.endpoint or endpoint).rstrip("/")
        self.work_dir = work_dir
        self.offline = offline
        self.cancel = cancel
        self.tags = request.tags.split()
        if http is not None and self.min_interval_s and self.endpoint:
            from engines.dataset.http import host_of

            http.limiter.slow_down(host_of(self.endpoint), self.min_interval_s)

    # --- what the collector asks -------------------------------------------------------------------

    def posts(self) -> Iterator[Post]:
        raise NotImplementedError

    def is_safe(self, post: Post) -> bool:
        """True when the site's rating is one the request allows (sources without ratings: True)."""
        return True

    def min_score(self) -> Optional[int]:
        if self.request.min_score is not None:
            return self.request.min_score
        return self.default_min_score

    def since(self) -> Optional[datetime]:
        text = self.request.posted_since or self.default_since
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc) if text else None

    def enrich(self, post: Post) -> Post:
        """Fill in what the listing lacks (Wallhaven's tags) once the cheap checks passed."""
        return post

    def fetch(self, post: Post, part: Path) -> tuple[str, int]:
        """Write the post's file to ``part``; return its MD5 and size (raises DownloadFailed)."""
        assert self.http is not None and post.file_url
        return self.http.download(post.file_url, part)
