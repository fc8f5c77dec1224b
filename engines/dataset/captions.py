"""Captions beside each image: the post's tags cleaned for training.

Kohya-style trainers read ``image.txt`` as a comma-separated list. Character and copyright tags come
first because trainers that shuffle captions keep the first tokens fixed (``keep_tokens``), and
those are the tags that name who is in the picture; meta tags (resolution, commentary, bad_id...)
describe the file, not the picture, and only teach the model noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class TagGroups:
    characters: tuple[str, ...] = ()
    copyrights: tuple[str, ...] = ()
    artists: tuple[str, ...] = ()
    general: tuple[str, ...] = ()
    meta: tuple[str, ...] = ()

    def all(self) -> tuple[str, ...]:
        return (*self.characters, *self.copyrights, *self.artists, *self.general, *self.meta)


def clean_tag(tag: str) -> str:
    """``hatsune_miku`` -> ``hatsune miku``; emoticon tags made of underscores (``^_^``) stay as they are."""
    tag = tag.strip()
    if len(tag) <= 3:
        return tag
    return tag.replace("_", " ")


def _clean(tags: Iterable[str], meta: frozenset[str], seen: set[str]) -> list[str]:
    out = []
    for tag in tags:
        if not tag or tag.lower() in meta:
            continue
        text = clean_tag(tag)
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def build_caption(groups: TagGroups, template: str, meta_tags: frozenset[str], *,
                  rating: str = "", source: str = "") -> str:
    """Fill ``template`` ({tags}, {characters}, {copyrights}, {artists}, {general}, {rating}, {source}).

    ``{tags}`` is characters, copyrights, then general tags; artist tags are left out of it (style
    names tend to dominate a small dataset) but can be placed with ``{artists}``.
    """
    meta = meta_tags | {t.lower() for t in groups.meta}
    seen: set[str] = set()
    characters = _clean(groups.characters, meta, seen)
    copyrights = _clean(groups.copyrights, meta, seen)
    artists = _clean(groups.artists, meta, set())
    general = _clean(groups.general, meta, seen)
    values = {
        "tags": ", ".join(characters + copyrights + general),
        "characters": ", ".join(characters), "copyrights": ", ".join(copyrights),
        "artists": ", ".join(artists), "general": ", ".join(general),
        "rating": rating, "source": source,
    }
    caption = template.format(**values)
    # An empty group leaves ", , " behind in templates like "{characters}, {general}".
    parts = [part.strip() for part in caption.split(",")]
    return ", ".join(part for part in parts if part).strip()
