"""The tensor cache: decoded, resized training images kept so epoch 2 never decodes a JPEG again.

Two tiers, checked in order:

1. RAM: an LRU of tensors bounded by a byte budget (each DataLoader worker holds its own,
   with an equal share of the budget, see ``split_ram_budget``).
2. Disk (the SSD cache): one safetensors file per image, named by the SHA-256 of the file's
   *content* plus the preprocessing parameters. An edited image has a new hash, so it is
   processed again; renaming or moving a dataset keeps its cache. Files are written under a
   temporary name and renamed into place, so workers and parallel runs can share one folder:
   a reader sees a complete file or none.

A cache file that cannot be read (a crash mid-write on a filesystem without rename ordering,
a full disk) counts as a miss and is rewritten; a cache is never a reason to stop training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from engines.files import atomic_write

log = logging.getLogger(__name__)

# Bump when the on-disk layout changes, so old files are simply not found again.
CACHE_FORMAT = 1
_HASH_CHUNK = 1 << 20


def _tensor_bytes(tensor: Any) -> int:
    return int(tensor.numel() * tensor.element_size())


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes: the identity of an image, whatever its name or timestamp."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CacheCounts:
    ram_hits: int = 0
    disk_hits: int = 0
    misses: int = 0

    def add(self, source: str) -> None:
        if source == "ram":
            self.ram_hits += 1
        elif source == "disk":
            self.disk_hits += 1
        elif source == "miss":
            self.misses += 1

    def as_dict(self) -> dict[str, float]:
        lookups = self.ram_hits + self.disk_hits + self.misses
        return {
            "ram_hits": self.ram_hits, "disk_hits": self.disk_hits, "misses": self.misses,
            "lookups": lookups,
            "hit_rate": (self.ram_hits + self.disk_hits) / lookups if lookups else 0.0,
            "ram_hit_rate": self.ram_hits / lookups if lookups else 0.0,
            "disk_hit_rate": self.disk_hits / lookups if lookups else 0.0,
        }


class CacheTally:
    """Hit rates counted in the main process from the ``"cache"`` field of each batch.

    With DataLoader workers every worker has its own copy of the cache, so the main process's
    ``TensorCache.stats()`` never sees their lookups; ``ArtDataset`` reports where each sample
    came from instead, and the trainer feeds batches here.
    """

    def __init__(self) -> None:
        self.counts = CacheCounts()  # the whole run (this process's part of it)
        self.epoch = CacheCounts()  # since the current epoch began

    def add(self, sources: Iterable[str]) -> None:
        for source in sources:
            self.counts.add(source)
            self.epoch.add(source)

    def stats(self) -> dict[str, float]:
        return self.counts.as_dict()

    def end_epoch(self) -> dict[str, float]:
        """The epoch's hit rates, and a fresh count for the next one.

        Per epoch, because the cumulative rate hides what the artist wants to know: after the
        first epoch every image should come from the cache (100 %), but a run-wide figure only
        creeps towards it (50 % after two epochs, 67 % after three).
        """
        stats, self.epoch = self.epoch.as_dict(), CacheCounts()
        return stats


class TensorCache:
    """RAM LRU with a byte budget, then a disk tier keyed by content hash + preprocessing params."""

    def __init__(self, disk_dir: Optional[Path], ram_bytes: int, *, log_every: int = 1000) -> None:
        if ram_bytes < 0:
            raise ValueError(f"The RAM cache budget must be 0 or more bytes, not {ram_bytes}.")
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
        self.ram_budget = int(ram_bytes)
        self.log_every = log_every
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._ram: OrderedDict[tuple, Any] = OrderedDict()
        self._ram_used = 0
        # (path, mtime_ns, size) -> content hash: hashing reads the whole file, a stat does not.
        self._digests: dict[tuple[str, int, int], str] = {}
        self._counts = CacheCounts()
        self._lock = threading.Lock()

    # A dataset (and so its cache) is pickled into every spawned DataLoader worker: send the
    # settings only, not the RAM tier's tensors or a lock.
    def __getstate__(self) -> dict[str, Any]:
        return {"disk_dir": self.disk_dir, "ram_budget": self.ram_budget, "log_every": self.log_every}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def split_ram_budget(self, parts: int) -> None:
        """Give this copy 1/parts of the budget (called in each DataLoader worker)."""
        with self._lock:
            self.ram_budget //= max(1, parts)
            self._evict_to_budget()

    # -- lookups --------------------------------------------------------------------------
    def get_or_compute(self, path: Path, params: str, compute: Callable[[], Any]) -> Any:
        """The tensor for ``path`` preprocessed with ``params``, from RAM, disk, or ``compute()``."""
        return self.lookup(path, params, compute)[0]

    def lookup(self, path: Path, params: str, compute: Callable[[], Any]) -> tuple[Any, str]:
        """Like ``get_or_compute``, also saying where the tensor came from: "ram", "disk" or "miss"."""
        stat = os.stat(path)
        file_key = (str(path), stat.st_mtime_ns, stat.st_size)
        ram_key = (*file_key, params)
        with self._lock:
            tensor = self._ram.get(ram_key)
            if tensor is not None:
                self._ram.move_to_end(ram_key)
        if tensor is not None:
            return tensor, self._count("ram")
        disk_file = self._disk_file(file_key, params) if self.disk_dir is not None else None
        source = "miss"
        if disk_file is not None:
            tensor = self._read(disk_file)
            source = "disk" if tensor is not None else "miss"
        if tensor is None:
            tensor = compute()
            if disk_file is not None:
                self._write(disk_file, tensor, path, params)
        self._remember(ram_key, tensor)
        return tensor, self._count(source)

    def contains(self, path: Path, params: str) -> bool:
        """Whether ``path`` preprocessed with ``params`` is in RAM or on disk (no counting, no reading)."""
        stat = os.stat(path)
        file_key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if (*file_key, params) in self._ram:
                return True
        return self.disk_dir is not None and self._disk_file(file_key, params).is_file()

    def put(self, path: Path, params: str, tensor: Any) -> None:
        """Store a tensor computed elsewhere (a batch the VAE encoded at once) in both tiers."""
        stat = os.stat(path)
        file_key = (str(path), stat.st_mtime_ns, stat.st_size)
        if self.disk_dir is not None:
            self._write(self._disk_file(file_key, params), tensor, path, params)
        self._remember((*file_key, params), tensor)

    def _count(self, source: str) -> str:
        with self._lock:
            self._counts.add(source)
            lookups = self._counts.ram_hits + self._counts.disk_hits + self._counts.misses
        if self.log_every and lookups % self.log_every == 0:
            self.log_stats()
        return source

    def stats(self) -> dict[str, float]:
        """Hits and misses of this process's lookups, with the RAM tier's fill."""
        with self._lock:
            data = self._counts.as_dict()
            data.update(ram_bytes=self._ram_used, ram_items=len(self._ram), ram_budget=self.ram_budget)
        return data

    def log_stats(self) -> None:
        s = self.stats()
        log.info("tensor cache: %d lookups, %.0f %% RAM hits, %.0f %% disk hits, %.0f %% misses; "
                 "RAM tier %d items, %.1f / %.1f MiB", s["lookups"], 100 * s["ram_hit_rate"],
                 100 * s["disk_hit_rate"], 100 * (1 - s["hit_rate"]) if s["lookups"] else 0.0,
                 s["ram_items"], s["ram_bytes"] / 2**20, s["ram_budget"] / 2**20)

    def clear_ram(self) -> None:
        with self._lock:
            self._ram.clear()
            self._ram_used = 0

    # -- the RAM tier -----------------------------------------------------------------------
    def _remember(self, key: tuple, tensor: Any) -> None:
        size = _tensor_bytes(tensor)
        if size > self.ram_budget:
            return  # would evict everything and still not fit
        with self._lock:
            old = self._ram.pop(key, None)
            if old is not None:
                self._ram_used -= _tensor_bytes(old)
            self._ram[key] = tensor
            self._ram_used += size
            self._evict_to_budget()

    def _evict_to_budget(self) -> None:
        while self._ram_used > self.ram_budget and self._ram:
            _, oldest = self._ram.popitem(last=False)
            self._ram_used -= _tensor_bytes(oldest)

    # -- the disk tier ----------------------------------------------------------------------
    def _disk_file(self, file_key: tuple[str, int, int], params: str) -> Path:
        digest = self._digests.get(file_key)
        if digest is None:
            digest = file_digest(Path(file_key[0]))
            with self._lock:
                self._digests[file_key] = digest
        params_hash = hashlib.sha256(f"{CACHE_FORMAT}|{params}".encode()).hexdigest()[:16]
        assert self.disk_dir is not None
        # Two-level fan-out keeps directories small for datasets of hundreds of thousands of images.
        return self.disk_dir / digest[:2] / f"{digest}-{params_hash}.safetensors"

    @staticmethod
    def _read(file: Path) -> Any:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not file.is_file():
            return None
        try:
            return load_file(str(file))["tensor"]
        except (SafetensorError, OSError, KeyError) as error:
            log.warning("tensor cache: %s is unreadable (%s); recomputing it", file.name, error)
            return None

    @staticmethod
    def _write(file: Path, tensor: Any, source: Path, params: str) -> None:
        from safetensors.torch import save_file

        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            # Not durable: a file lost in a power cut is recomputed, and syncing every sample
            # would make the first epoch wait on the disk.
            atomic_write(file, lambda tmp: save_file(
                {"tensor": tensor.contiguous()}, str(tmp),
                metadata={"source": str(source), "params": params, "format": str(CACHE_FORMAT)}), durable=False)
        except OSError as error:  # a full or read-only disk: train on, just without the disk tier
            log.warning("tensor cache: cannot write %s (%s)", file, error)
