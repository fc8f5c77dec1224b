"""The resumable collector: posts from the sources, through the safety and quality checks, into the dataset.

Each post goes through the cheapest test that can reject it first: the manifest (seen before?),
the site's rating, the blacklist, score and date, the size the site reports and the MD5 it gives;
only then is anything downloaded. The download is checked against the site's MD5, against every
MD5 already in the dataset, decoded completely, measured, and compared by perceptual hash. Sources
are walked round-robin, one post at a time, until the dataset holds ``target`` images.

Posts are processed strictly in order and every decision is committed to the manifest before the
next post, so a run that is stopped, crashes or is killed and then started again ends with the
same images as a run that never stopped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

from engines.dataset.captions import build_caption
from engines.dataset.dataset_dir import DatasetDir, stem_for
from engines.dataset.errors import DownloadFailed, SourceError
from engines.dataset.filters import QUALITY_REASONS, REASONS, ImageVerdict, inspect_image, judge_measurements, judge_size
from engines.dataset.manifest import ManifestRow
from engines.dataset.request import CollectRequest, check
from engines.dataset.safety import Blacklist, load_meta_tags
from engines.dataset.sources import source_class, source_info
from engines.dataset.sources.base import Post, Source
from engines.errors import StudioError
from engines.progress import CancelToken, OnStep, no_progress

log = logging.getLogger(__name__)

# Reasons decided from the listing alone: cheap to decide again when the artist changes a setting.
LISTING_REASONS = ("unsafe_rating", "blacklisted", "low_score", "too_old", "no_file", "not_still_image")
MAX_FAILED_DOWNLOADS_IN_A_ROW = 20
REPORT_EVERY_S = 0.25


@dataclass
class CollectResult:
    """What a run did; ``images`` is the whole dataset, the other counts are this run's."""

    out_dir: Path
    target: int
    images: int
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    kept_by_source: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    trimmed: int = 0
    recovered: int = 0
    summary_path: Optional[Path] = None
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)  # sources dropped on the way, one sentence each

    @property
    def reached_target(self) -> bool:
        return self.images >= self.target

    def summary(self) -> str:
        parts = [f"The dataset in {self.out_dir} holds {self.images} of {self.target} images "
                 f"({self.kept} new this run)."]
        if self.rejected:
            reasons = ", ".join(f"{n} {REASONS.get(r, r)}" for r, n in
                                sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"Rejected {sum(self.rejected.values())}: {reasons}.")
        if self.skipped:
            parts.append(f"Skipped {self.skipped} posts seen in earlier runs.")
        if self.trimmed:
            parts.append(f"Trimmed {self.trimmed} images over the target.")
        parts.extend(self.problems)
        if not self.reached_target:
            parts.append("The sources ran out of matching posts before the target: try broader tags "
                         "or another source.")
        return " ".join(parts)


def progress_message(images: int, target: int, rejected: Counter) -> str:
    text = f"{images}/{target} kept"
    if rejected:
        top = ", ".join(f"{REASONS.get(r, r)} {n}" for r, n in rejected.most_common(3))
        text += f" · {sum(rejected.values())} rejected ({top})"
    return text


class Collector:
    """One collection run; ``run()`` returns a ``CollectResult`` or raises a one-sentence StudioError."""

    def __init__(self, request: CollectRequest, on_step: OnStep = no_progress,
                 cancel: Optional[CancelToken] = None, *, offline: bool = False) -> None:
        self.request = request
        self.on_step = on_step
        self.cancel = cancel or CancelToken()
        self.offline = offline
        self.rejected: Counter = Counter()
        self.kept_by_source: Counter = Counter()
        self.skipped = 0
        self.problems: list[str] = []
        self._failed_in_a_row: Counter = Counter()
        self._last_report = 0.0

    def run(self) -> CollectResult:
        started = time.monotonic()
        # 1. check every field before opening anything
        check(self.request, offline=self.offline)
        # 2. open the dataset and undo whatever an interrupted run left half-done
        self.dataset = DatasetDir(self.request.out_dir)
        http = None
        try:
            recovered = self.dataset.recover()
            # 3. trim when the artist lowered the target below what is there
            trimmed = self.dataset.trim(self.request.target)
            # 4. what is already there: hashes for duplicates, the word lists
            self.index = self.dataset.duplicate_index(self.request.thresholds.near_duplicate_distance)
            self.blacklist = Blacklist.load()
            self.meta_tags = load_meta_tags()
            self.images = self.dataset.manifest.count("kept")
            self._report(force=True)
            # 5. walk the sources until the target
            if self.images < self.request.target:
                http = self._http()
                self._walk(self._sources(http))
            result = CollectResult(
                out_dir=self.dataset.root, target=self.request.target, images=self.images,
                kept=sum(self.kept_by_source.values()), rejected=dict(self.rejected),
                kept_by_source=dict(self.kept_by_source), skipped=self.skipped, trimmed=trimmed,
                recovered=recovered["undone"], problems=list(self.problems))
            # 6. the summary beside the images
            result.summary_path = self.dataset.write_summary(self.request.public_dict())
            result.elapsed_s = time.monotonic() - started
            self._report(force=True)
            return result
        except BaseException:
            self._write_summary_quietly()
            raise
        finally:
            if http is not None:
                http.close()
            self.dataset.close()

    # --- steps -------------------------------------------------------------------------------------

    def _http(self):
        if not any(source_info(s.name).needs_network for s in self.request.sources):
            return None
        from engines.dataset.http import HttpClient

        return HttpClient(self.request.network, self.cancel)

    def _sources(self, http) -> list[Source]:
        return [source_class(spec.name)(spec, self.request, http, endpoint=source_info(spec.name).endpoint,
                                        work_dir=self.dataset.state, offline=self.offline, cancel=self.cancel)
                for spec in self.request.sources]

    def _walk(self, sources: list[Source]) -> None:
        """Round-robin, one post per source in turn, so several sites fill the dataset evenly.

        A site that fails (refused key, down) is dropped while others carry on, and named in the
        result; when it is the last one left, its sentence ends the run.
        """
        streams: list[tuple[Source, Iterator[Post]]] = [(s, iter(s.posts())) for s in sources]
        while streams and self.images < self.request.target:
            for stream in list(streams):
                self.cancel.raise_if_cancelled()
                source, posts = stream
                try:
                    post = next(posts, None)
                    if post is not None:
                        self._process(source, post)
                except SourceError as error:
                    if len(streams) == 1:
                        raise
                    log.warning("%s dropped from this run: %s", source.label, error)
                    self.problems.append(f"{source.label} was skipped: {error}")
                    post = None
                if post is None:
                    streams.remove(stream)
                    continue
                self.images = self.dataset.manifest.count("kept")  # the artist may remove images meanwhile
                self._report()
                if self.images >= self.request.target:
                    return

    def _process(self, source: Source, post: Post) -> None:
        # a. seen in an earlier run?
        row = self.dataset.manifest.get(post.source, post.post_id)
        if row is not None and not self._worth_another_look(row, source, post):
            self.skipped += 1
            return
        # b. what the listing says: rating, blacklist, score, date, reported size, known MD5
        reason = self._judge_listing(source, post)
        if reason is None:
            post = source.enrich(post)
            reason = self._judge_listing(source, post)
        if reason:
            return self._reject(post, reason)
        # c. download into a .part file
        stem = stem_for(post.source, post.post_id)
        part = self.dataset.part_path(stem)
        try:
            md5, _ = source.fetch(post, part)
        except DownloadFailed as error:
            part.unlink(missing_ok=True)
            return self._download_failed(source, post, str(error))
        self._failed_in_a_row[source.name] = 0
        try:
            self._judge_file(source, post, part, stem, md5)
        finally:
            part.unlink(missing_ok=True)  # kept files were renamed away already

    def _judge_file(self, source: Source, post: Post, part: Path, stem: str, md5: str) -> None:
        # d. the site's MD5, then exact duplicates
        if post.md5 and md5 != post.md5.lower():
            return self._reject(post, "md5_mismatch", md5=md5)
        if self.index.has_md5(md5):
            return self._reject(post, "duplicate", md5=md5)
        # e. decode fully and measure, then near duplicates
        verdict = inspect_image(part.read_bytes(), self.request.thresholds)
        if not verdict.ok:
            return self._reject(post, verdict.reason or "undecodable", md5=md5, **_measurements(verdict))
        if self.index.is_near_duplicate(verdict.phash or 0):
            return self._reject(post, "near_duplicate", md5=md5, phash=verdict.phash, **_measurements(verdict))
        self._keep(source, post, part, stem, md5, verdict)

    def _keep(self, source: Source, post: Post, part: Path, stem: str, md5: str, verdict: ImageVerdict) -> None:
        caption = build_caption(post.tags, self.request.caption_template, self.meta_tags,
                                rating=post.rating, source=source.label)
        sidecar = {
            "source": post.source, "site": source.label, "post_id": post.post_id,
            "source_url": post.file_url or (post.local_path.as_uri() if post.local_path else post.page_url),
            "page_url": post.page_url, "artwork_source": post.artwork_source,
            "rating": post.rating, "score": post.score, "md5": md5, "phash": f"{verdict.phash:016x}",
            "width": verdict.width, "height": verdict.height,
            "sharpness": round(verdict.sharpness or 0.0, 2), "colour_std": round(verdict.colour_std or 0.0, 2),
            "tags": {"characters": list(post.tags.characters), "copyrights": list(post.tags.copyrights),
                     "artists": list(post.tags.artists), "general": list(post.tags.general),
                     "meta": list(post.tags.meta)},
            "title": post.title, "posted": post.created.isoformat() if post.created else None,
            "collected": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        image = self.dataset.keep(
            post.source, post.post_id, part, stem=stem, ext=verdict.ext, caption=caption, sidecar=sidecar,
            columns=dict(md5=md5, phash=verdict.phash, rating=post.rating, score=post.score,
                         file_url=post.file_url, **_measurements(verdict, with_ext=False)))
        self.index.add(md5, verdict.phash)
        self.kept_by_source[post.source] += 1
        self.images = self.dataset.manifest.count("kept")
        self._report(force=True, preview=image)

    # --- judging -----------------------------------------------------------------------------------

    def _judge_listing(self, source: Source, post: Post) -> Optional[str]:
        if not source.is_safe(post):
            return "unsafe_rating"
        if self.blacklist.match(post.tags.all(), post.title):
            return "blacklisted"
        min_score = source.min_score()
        if min_score is not None and post.score is not None and post.score < min_score:
            return "low_score"
        since = source.since()
        if since is not None and post.created is not None and post.created < since:
            return "too_old"
        if not (post.file_url or post.data is not None or post.local_path is not None):
            return "no_file"
        if post.is_video:
            return "not_still_image"
        if post.width and post.height:
            reason = judge_size(post.width, post.height, self.request.thresholds)
            if reason:
                return reason
        if post.md5 and self.index.has_md5(post.md5):
            return "duplicate"
        return None

    def _worth_another_look(self, row: ManifestRow, source: Source, post: Post) -> bool:
        """Whether a post from an earlier run must be processed again under today's settings."""
        if row.status in ("failed", "trimmed"):
            return True
        if row.status != "rejected":
            return False  # kept, or removed by the artist
        if row.reason in LISTING_REASONS:
            return self._judge_listing(source, post) is None
        if row.reason in QUALITY_REASONS and row.width and row.height:
            return judge_measurements(row.width, row.height, row.sharpness, row.colour_std,
                                      self.request.thresholds) is None
        return False  # corrupt, MD5 mismatch, duplicates: the same bytes give the same answer

    def _reject(self, post: Post, reason: str, **columns: Any) -> None:
        self.rejected[reason] += 1
        self.dataset.manifest.record(post.source, post.post_id, "rejected", reason=reason, rating=post.rating,
                                     score=post.score, file_url=post.file_url, **columns)

    def _download_failed(self, source: Source, post: Post, why: str) -> None:
        log.info("%s post %s: download failed (%s)", source.label, post.post_id, why)
        self.rejected["download_failed"] += 1
        self.dataset.manifest.record(post.source, post.post_id, "failed", reason="download_failed",
                                     rating=post.rating, score=post.score, file_url=post.file_url)
        self._failed_in_a_row[source.name] += 1
        if self._failed_in_a_row[source.name] >= MAX_FAILED_DOWNLOADS_IN_A_ROW:
            raise SourceError(f"The last {MAX_FAILED_DOWNLOADS_IN_A_ROW} downloads from {source.label} all failed "
                              f"({why}): the image server may be down or blocking the studio; try again later.")

    # --- reporting ---------------------------------------------------------------------------------

    def _report(self, force: bool = False, preview: Any = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < REPORT_EVERY_S:
            return
        self._last_report = now
        self.on_step(min(self.images, self.request.target), self.request.target,
                     progress_message(self.images, self.request.target, self.rejected), preview)

    def _write_summary_quietly(self) -> None:
        try:
            self.dataset.write_summary(self.request.public_dict())
        except (StudioError, OSError):
            log.warning("dataset.json could not be updated after the run stopped", exc_info=True)


def _measurements(verdict: ImageVerdict, with_ext: bool = True) -> dict[str, Any]:
    values = dict(width=verdict.width or None, height=verdict.height or None,
                  sharpness=verdict.sharpness, colour_std=verdict.colour_std)
    if with_ext:
        values["ext"] = verdict.ext or None
    return values


def collect(request: CollectRequest, on_step: OnStep = no_progress, cancel: Optional[CancelToken] = None,
            *, offline: bool = False) -> CollectResult:
    """Collect until the dataset holds ``request.target`` images; safe to stop and run again."""
    return Collector(request, on_step, cancel, offline=offline).run()
