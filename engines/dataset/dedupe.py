"""Duplicate detection against everything already in the dataset, across runs.

Exact duplicates share the MD5 of their bytes. Near duplicates (the same picture re-encoded,
resized or lightly edited) have perceptual hashes a few bits apart; the hashes sit in one numpy
array so a query is a single XOR and popcount over all of them (about a millisecond for 100 000).
"""

from __future__ import annotations

from typing import Iterable, Optional

_GROW = 1024


class DuplicateIndex:
    def __init__(self, max_distance: int) -> None:
        import numpy as np

        self.max_distance = max_distance
        self._md5: set[str] = set()
        self._hashes = np.zeros(_GROW, dtype=np.uint64)
        self._count = 0

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Optional[str], Optional[int]]], max_distance: int) -> "DuplicateIndex":
        index = cls(max_distance)
        for md5, phash in rows:
            index.add(md5, phash)
        return index

    def __len__(self) -> int:
        return self._count

    def add(self, md5: Optional[str], phash: Optional[int]) -> None:
        import numpy as np

        if md5:
            self._md5.add(md5.lower())
        if phash is None:
            return
        if self._count == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros(max(_GROW, self._count), dtype=np.uint64)])
        self._hashes[self._count] = np.uint64(phash)
        self._count += 1

    def has_md5(self, md5: Optional[str]) -> bool:
        return bool(md5) and md5.lower() in self._md5

    def nearest_distance(self, phash: int) -> Optional[int]:
        """Hamming distance to the closest hash in the index, or None when it is empty."""
        import numpy as np

        if not self._count:
            return None
        diff = np.bitwise_xor(self._hashes[: self._count], np.uint64(phash))
        return int(_popcount(diff).min())

    def is_near_duplicate(self, phash: int) -> bool:
        distance = self.nearest_distance(phash)
        return distance is not None and distance <= self.max_distance


def _popcount(values):
    """Set bits per uint64: numpy 2's ``bitwise_count``, or a byte lookup table on numpy 1.x."""
    import numpy as np

    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[values.view(np.uint8)].reshape(-1, 8).sum(axis=1)
