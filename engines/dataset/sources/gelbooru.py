"""Safebooru.org and other Gelbooru-API sites, through ``index.php?page=dapi&s=post&q=index&json=1``.

Safebooru.org answers a plain JSON list without file URLs (the file lives at
``/images/<directory>/<image>``) and an empty body when nothing matches; gelbooru.com wraps posts
in ``{"@attributes": ..., "post": [...]}`` with ``file_url`` and ``md5``. Both shapes are read.
Safebooru.org still rates some posts "questionable", so the rating is checked here on top.
"""

from __future__ import annotations

from typing import Iterator

from engines.dataset.captions import TagGroups
from engines.dataset.sources.base import Post, Source, absolute_url, timestamp, to_int

PAGE_SIZE = 100
MAX_PAGES = 2000  # pid * limit is capped by the API; an empty page ends the walk earlier
SAFE_RATINGS = {"safe", "general", "g", "s"}
SENSITIVE_RATINGS = {"sensitive"}


class GelbooruSource(Source):
    label = "Safebooru.org"

    def posts(self) -> Iterator[Post]:
        assert self.http is not None
        url = f"{self.endpoint}/index.php"
        params = {"page": "dapi", "s": "post", "q": "index", "json": 1, "limit": PAGE_SIZE,
                  "tags": " ".join(self.tags)}
        if self.spec.api_key and self.spec.login:
            params.update(api_key=self.spec.api_key, user_id=self.spec.login)
        hint = "Gelbooru needs api_key and user_id (from your account's options page)."
        for pid in range(MAX_PAGES):
            body = self.http.get_json(url, {**params, "pid": pid}, site=self.label, auth_hint=hint)
            page = body.get("post", []) if isinstance(body, dict) else (body or [])
            if isinstance(page, dict):  # one post comes back as an object, not a list
                page = [page]
            if not page:
                return
            for raw in page:
                if isinstance(raw, dict) and raw.get("id") is not None:
                    yield self._post(raw)

    def _post(self, raw: dict) -> Post:
        file_url = raw.get("file_url")
        if not file_url and raw.get("image") and raw.get("directory") is not None:
            file_url = f"/images/{raw['directory']}/{raw['image']}"
        return Post(
            source=self.name, post_id=str(raw["id"]), file_url=absolute_url(self.endpoint, file_url),
            md5=raw.get("md5") or raw.get("hash") or None, rating=str(raw.get("rating") or "").lower(),
            score=to_int(raw.get("score")), tags=TagGroups(general=tuple(str(raw.get("tags") or "").split())),
            page_url=f"{self.endpoint}/index.php?page=post&s=view&id={raw['id']}",
            artwork_source=str(raw.get("source") or ""), created=timestamp(raw.get("created_at")),
            width=to_int(raw.get("width")), height=to_int(raw.get("height")),
        )

    def is_safe(self, post: Post) -> bool:
        allowed = SAFE_RATINGS | (SENSITIVE_RATINGS if self.request.allow_sensitive else set())
        return post.rating in allowed
