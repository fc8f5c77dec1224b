"""The safety rules applied before anything is downloaded: the NSFW word list and the meta tag list.

Both lists live in ``assets/`` as plain text so an artist can edit them. A blacklisted term matches
whole words of a tag or a title, so "nude" catches "completely_nude" and "Nude study" but never
"denude"; underscores, hyphens and spaces count as the same separator for matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"
BLACKLIST_FILE = ASSETS / "nsfw_blacklist.txt"
META_TAGS_FILE = ASSETS / "meta_tags.txt"
_SEPARATORS = re.compile(r"[\s_]+")
_NON_WORD = re.compile(r"[^\w\-]+")


def read_word_list(path: Path) -> list[str]:
    """One term per line, ``#`` comments and blank lines skipped, lower-cased."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        term = line.split("#", 1)[0].strip().lower()
        if term:
            words.append(term)
    return words


def _words(text: str) -> str:
    """A tag or title as space-separated lower-case words, padded for whole-word matching."""
    return " " + " ".join(_NON_WORD.sub(" ", _SEPARATORS.sub(" ", text.lower())).split()) + " "


@dataclass(frozen=True)
class Blacklist:
    terms: tuple[str, ...]

    @classmethod
    def load(cls, path: Path = BLACKLIST_FILE, extra: Iterable[str] = ()) -> "Blacklist":
        return cls(tuple(dict.fromkeys([*read_word_list(path), *(t.lower() for t in extra if t.strip())])))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_patterns", tuple(_words(term) for term in self.terms))

    def match(self, tags: Iterable[str] = (), title: str = "") -> Optional[str]:
        """The first blacklisted term found in the tags or the title, or None."""
        texts = [_words(tag) for tag in tags]
        if title:
            texts.append(_words(title))
        for term, pattern in zip(self.terms, self._patterns):  # type: ignore[attr-defined]
            if any(pattern in text for text in texts):
                return term
        return None


def load_meta_tags(path: Path = META_TAGS_FILE) -> frozenset[str]:
    return frozenset(read_word_list(path))
