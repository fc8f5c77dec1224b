"""Google Programmable Search (Custom Search JSON API v1) as an image search.

``searchType=image`` with SafeSearch on; the API returns 10 results a page and at most 100 per
query (``start`` stops at 91). Results have no tags: the title is checked against the blacklist and
the search words become the caption.
"""

from __future__ import annotations

from typing import Iterator

from engines.dataset.captions import TagGroups
from engines.dataset.sources.base import Post, Source, to_int

PAGE_SIZE = 10
LAST_START = 91


class GoogleImageSource(Source):
    label = "Google Custom Search"

    def posts(self) -> Iterator[Post]:
        assert self.http is not None
        url = f"{self.endpoint}/customsearch/v1"
        query = self.request.tags.strip()
        params = {"cx": self.spec.engine_id, "q": query, "searchType": "image", "safe": "active",
                  "num": PAGE_SIZE}
        key = {"X-goog-api-key": self.spec.api_key}  # Google APIs take the key as a header: not in URLs or logs
        hint = ("check the API key and the search engine id (cx), that the Custom Search API is enabled "
                "for the key, and that today's quota is not used up.")
        words = tuple(w.strip() for w in query.split(",") if w.strip()) if "," in query else (query,)
        start = 1
        while start <= LAST_START:
            body = self.http.get_json(url, {**params, "start": start}, site=self.label, headers=key,
                                      auth_hint=hint)
            items = (body or {}).get("items") or [] if isinstance(body, dict) else []
            for raw in items:
                if isinstance(raw, dict) and raw.get("link"):
                    yield self._post(raw, words)
            pages = ((body or {}).get("queries") or {}).get("nextPage") if isinstance(body, dict) else None
            if not items or not pages:
                return
            start = to_int(pages[0].get("startIndex")) or start + PAGE_SIZE

    def _post(self, raw: dict, words: tuple[str, ...]) -> Post:
        image = raw.get("image") or {}
        return Post(
            source=self.name, post_id=str(raw["link"]), file_url=str(raw["link"]),
            title=str(raw.get("title") or ""), tags=TagGroups(general=words),
            page_url=str(image.get("contextLink") or raw.get("displayLink") or ""),
            width=to_int(image.get("width")), height=to_int(image.get("height")),
        )
