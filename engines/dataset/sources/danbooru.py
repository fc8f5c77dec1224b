"""Danbooru and its safe mirror (safebooru.donmai.us), through ``/posts.json``.

Numbered pages stop at 1000, so paging uses ``page=b<id>`` ("posts before this id"), which has no
cap and does not shift when new posts arrive. Anonymous searches may hold two tags (more with an
account), so ``rating:g`` is added to the query only when there is room; the client-side rating
check is what actually decides.
"""

from __future__ import annotations

from typing import Iterator

from engines.dataset.captions import TagGroups
from engines.dataset.sources.base import Post, Source, absolute_url, timestamp, to_int

PAGE_SIZE = 200
ANONYMOUS_TAG_LIMIT = 2
MEMBER_TAG_LIMIT = 6


class DanbooruSource(Source):
    label = "Danbooru"

    def _auth(self):
        return (self.spec.login, self.spec.api_key) if self.spec.login and self.spec.api_key else None

    def _query(self) -> str:
        tags = list(self.tags)
        room = (MEMBER_TAG_LIMIT if self._auth() else ANONYMOUS_TAG_LIMIT) - len(tags)
        if room > 0 and not self.request.allow_sensitive and not any(t.startswith("rating:") for t in tags):
            tags.append("rating:g")
        return " ".join(tags)

    def posts(self) -> Iterator[Post]:
        assert self.http is not None
        url = f"{self.endpoint}/posts.json"
        params = {"limit": PAGE_SIZE, "tags": self._query()}
        hint = "check the login and API key (from your Danbooru profile), or leave both empty."
        while True:
            page = self.http.get_json(url, params, site=self.label, auth=self._auth(), auth_hint=hint) or []
            if isinstance(page, dict):  # an error object that came with HTTP 200
                page = []
            if not page:
                return
            for raw in page:
                if isinstance(raw, dict) and raw.get("id") is not None:
                    yield self._post(raw)
            ids = [int(raw["id"]) for raw in page if isinstance(raw, dict) and raw.get("id") is not None]
            if not ids:
                return
            params = {**params, "page": f"b{min(ids)}"}

    def _post(self, raw: dict) -> Post:
        split = lambda key: tuple((raw.get(key) or "").split())  # noqa: E731
        groups = TagGroups(
            characters=split("tag_string_character"), copyrights=split("tag_string_copyright"),
            artists=split("tag_string_artist"), general=split("tag_string_general"),
            meta=split("tag_string_meta"),
        )
        if not groups.all() and raw.get("tag_string"):
            groups = TagGroups(general=split("tag_string"))
        return Post(
            source=self.name, post_id=str(raw["id"]),
            file_url=absolute_url(self.endpoint, raw.get("file_url")),
            md5=raw.get("md5") or None, rating=str(raw.get("rating") or ""), score=to_int(raw.get("score")),
            tags=groups, page_url=f"{self.endpoint}/posts/{raw['id']}",
            artwork_source=str(raw.get("source") or ""), created=timestamp(raw.get("created_at")),
            width=to_int(raw.get("image_width")), height=to_int(raw.get("image_height")),
        )

    def is_safe(self, post: Post) -> bool:
        allowed = {"g", "s"} if self.request.allow_sensitive else {"g"}
        return post.rating in allowed
