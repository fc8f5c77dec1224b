"""Wallhaven, through ``/api/v1/search``: the anime category, SFW purity only.

Search results carry no tags, so once a post passes the cheap checks its ``/api/v1/w/<id>`` page is
read for tags (and their own purity, which can flag what the wallpaper's purity missed). The API
allows 45 requests a minute, stricter than the studio's default rate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

from engines.dataset.captions import TagGroups
from engines.dataset.sources.base import Post, Source, timestamp, to_int

ANIME_ONLY = "010"   # general / anime / people bits
SFW_ONLY = "100"     # sfw / sketchy / nsfw bits


class WallhavenSource(Source):
    label = "Wallhaven"
    min_interval_s = 60.0 / 45

    def _headers(self) -> dict:
        # The API also takes ?apikey=, but a header keeps the key out of URLs and logs.
        return {"X-API-Key": self.spec.api_key} if self.spec.api_key else {}

    def posts(self) -> Iterator[Post]:
        assert self.http is not None
        url = f"{self.endpoint}/api/v1/search"
        params = dict(q=" ".join(self.tags), categories=ANIME_ONLY, purity=SFW_ONLY,
                      sorting="date_added" if not self.tags else "relevance", order="desc")
        page_number, last_page = 1, 1
        while page_number <= last_page:
            body = self.http.get_json(url, {**params, "page": page_number}, site=self.label,
                                      headers=self._headers(), auth_hint="Wallhaven did not accept the API key: check it in your "
                                                "wallhaven.cc account settings, or leave it empty.")
            body = body if isinstance(body, dict) else {}
            for raw in body.get("data") or []:
                if isinstance(raw, dict) and raw.get("id"):
                    yield self._post(raw)
            last_page = to_int((body.get("meta") or {}).get("last_page")) or page_number
            page_number += 1

    def _post(self, raw: dict) -> Post:
        return Post(
            source=self.name, post_id=str(raw["id"]), file_url=raw.get("path") or None,
            rating=f"{raw.get('purity', '')}/{raw.get('category', '')}",
            score=to_int(raw.get("favorites")), page_url=str(raw.get("url") or ""),
            artwork_source=str(raw.get("source") or ""), created=timestamp(raw.get("created_at")),
            width=to_int(raw.get("dimension_x")), height=to_int(raw.get("dimension_y")),
        )

    def is_safe(self, post: Post) -> bool:
        return post.rating == "sfw/anime"

    def enrich(self, post: Post) -> Post:
        assert self.http is not None
        body = self.http.get_json(f"{self.endpoint}/api/v1/w/{post.post_id}", site=self.label,
                                  headers=self._headers(), auth_hint="Wallhaven did not accept the API key.")
        data = body.get("data") if isinstance(body, dict) else None
        tags = data.get("tags") or [] if isinstance(data, dict) else []
        characters, copyrights, general = [], [], []
        rating = post.rating
        for tag in tags:
            name = str(tag.get("name") or "").strip().lower().replace(" ", "_")
            if not name:
                continue
            if tag.get("purity", "sfw") != "sfw":
                rating = f"{tag.get('purity')}-tag/{post.rating.split('/')[-1]}"  # fails is_safe
            category = str(tag.get("category") or "")
            (characters if category == "Characters" else
             copyrights if category == "Anime & Manga" else general).append(name)
        groups = TagGroups(characters=tuple(characters), copyrights=tuple(copyrights), general=tuple(general))
        return replace(post, rating=rating, tags=groups)
