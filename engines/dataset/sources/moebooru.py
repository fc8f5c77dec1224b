"""Konachan and Yande.re (Moebooru), through ``/post.json``.

Moebooru has three ratings and its "s" (safe) is the only one we take. Yande.re's older uploads
are mostly low-resolution scans, hence its defaults: posts from 2015 on, score 3 or more.
"""

from __future__ import annotations

from typing import Iterator

from engines.dataset.captions import TagGroups
from engines.dataset.sources.base import Post, Source, absolute_url, timestamp, to_int

PAGE_SIZE = 100


class MoebooruSource(Source):
    def __init__(self, spec, request, http, **kwargs) -> None:
        super().__init__(spec, request, http, **kwargs)
        self.label = "Yande.re" if spec.name == "yandere" else "Konachan"
        if spec.name == "yandere":
            self.default_min_score = 3
            self.default_since = "2015-01-01"

    def _query(self) -> str:
        tags = [t for t in self.tags if not t.startswith("rating:")] + ["rating:s"]
        score = self.min_score()
        if score is not None and not any(t.startswith("score:") for t in tags):
            tags.append(f"score:>={score}")
        return " ".join(tags)

    def posts(self) -> Iterator[Post]:
        assert self.http is not None
        url = f"{self.endpoint}/post.json"
        params = {"limit": PAGE_SIZE, "tags": self._query()}
        page_number = 1
        while True:
            page = self.http.get_json(url, {**params, "page": page_number}, site=self.label,
                                      auth_hint="this site refused an anonymous search; try again later.")
            if not isinstance(page, list) or not page:
                return
            for raw in page:
                if isinstance(raw, dict) and raw.get("id") is not None:
                    yield self._post(raw)
            page_number += 1

    def _post(self, raw: dict) -> Post:
        return Post(
            source=self.name, post_id=str(raw["id"]),
            file_url=absolute_url(self.endpoint, raw.get("file_url")), md5=raw.get("md5") or None,
            rating=str(raw.get("rating") or ""), score=to_int(raw.get("score")),
            tags=TagGroups(general=tuple(str(raw.get("tags") or "").split())),
            page_url=f"{self.endpoint}/post/show/{raw['id']}", artwork_source=str(raw.get("source") or ""),
            created=timestamp(raw.get("created_at")), width=to_int(raw.get("width")),
            height=to_int(raw.get("height")),
        )

    def is_safe(self, post: Post) -> bool:
        return post.rating == "s"
