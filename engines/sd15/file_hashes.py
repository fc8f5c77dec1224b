"""The file hashes AUTOMATIC1111 writes into an image's parameters, by which Civitai links it to its models.

- "Model hash": the first 10 hex digits of the SHA-256 of the whole checkpoint file (A1111's hash since
  late 2022; its older 8-digit hash of a 64 KiB sample is no longer written).
- "Lora hashes": for a ``.safetensors`` file, the first 12 hex digits of the SHA-256 of what follows the
  header (8 bytes of little-endian header length, then the JSON header): the "addnet" hash of the
  Additional Networks extension. Trainers and model managers edit a LoRA's metadata, and that must not
  change which LoRA it is. Any other file hashes whole.

Hashing a 2-4 GB checkpoint reads every byte (seconds), so ``HashCache`` keeps the results in a JSON file
keyed by resolved path, size and modification time: a file replaced or edited changes one of those.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional, Sequence

from engines.errors import CorruptModelError, ModelNotFoundError
from engines.files import atomic_write_bytes

log = logging.getLogger(__name__)

SHORT_LENGTHS = {"model": 10, "lora": 12}  # kind -> hex digits A1111 writes
HASH_CACHE = ".inkframe-hashes.json"  # in the models folder
_BLOCK = 1 << 20
_CACHE_VERSION = 1


def _tensor_data_offset(handle: BinaryIO, path: Path) -> int:
    """Where a safetensors file's tensor data begins: after the 8-byte header length and the header."""
    head = handle.read(8)
    size = os.fstat(handle.fileno()).st_size
    header_length = int.from_bytes(head, "little") if len(head) == 8 else size
    if 8 + header_length > size:
        raise CorruptModelError(f"{path.name} is not a whole .safetensors file (its header is cut off).")
    return 8 + header_length


def full_digest(path: Path | str, kind: str) -> str:
    """The whole SHA-256 hex digest behind ``kind``'s short hash ("model" or "lora", as described above)."""
    if kind not in SHORT_LENGTHS:
        raise ValueError(f"Hash kind {kind!r} is not one of {', '.join(SHORT_LENGTHS)}.")
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            if kind == "lora" and path.suffix.lower() == ".safetensors":
                handle.seek(_tensor_data_offset(handle, path))
            while block := handle.read(_BLOCK):
                digest.update(block)
    except FileNotFoundError:
        raise ModelNotFoundError(f"The model file {path} does not exist.") from None
    except OSError as error:
        reason = error.strerror or error
        raise CorruptModelError(f"The model file {path} could not be read ({reason}).") from None
    return digest.hexdigest()


def model_hash(path: Path | str) -> str:
    """A1111's "Model hash" of a checkpoint file."""
    return full_digest(path, "model")[: SHORT_LENGTHS["model"]]


def lora_hash(path: Path | str) -> str:
    """A1111's "Lora hashes" entry for a LoRA file."""
    return full_digest(path, "lora")[: SHORT_LENGTHS["lora"]]


def _stamp(path: Path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ModelNotFoundError(f"The model file {path} does not exist.") from None
    return info.st_size, info.st_mtime_ns


def _read_entries(cache_file: Path) -> dict[str, dict]:
    """The cache file's entries; a missing, corrupt or foreign file is an empty cache (it is rewritten)."""
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    current = isinstance(data, dict) and data.get("version") == _CACHE_VERSION
    entries = data.get("entries") if current else None
    if not isinstance(entries, dict):
        return {}
    return {
        key: entry for key, entry in entries.items()
        if isinstance(entry, dict) and isinstance(entry.get("size"), int)
        and isinstance(entry.get("mtime_ns"), int) and isinstance(entry.get("sha256"), str)
        and len(entry["sha256"]) == 64
    }


class HashCache:
    """A1111's file hashes, computed once per file version and kept in a JSON file.

    Safe to share between threads. Several processes may share the file too: each write merges in what
    the others wrote, and at worst one process hashes a file another already hashed."""

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = Path(cache_file)
        self._entries: dict[str, dict] | None = None
        self._lock = threading.Lock()

    def get(self, path: Path | str, kind: str) -> str:
        """The short hash A1111 writes for ``path`` as a ``kind`` ("model" or "lora")."""
        if kind not in SHORT_LENGTHS:
            raise ValueError(f"Hash kind {kind!r} is not one of {', '.join(SHORT_LENGTHS)}.")
        resolved = Path(path).resolve()
        key = f"{kind}:{resolved}"
        size, mtime_ns = _stamp(resolved)
        with self._lock:
            entry = self._load().get(key)
        if entry is not None and (entry["size"], entry["mtime_ns"]) == (size, mtime_ns):
            return entry["sha256"][: SHORT_LENGTHS[kind]]
        digest = full_digest(resolved, kind)  # outside the lock: seconds for a checkpoint
        if _stamp(resolved) == (size, mtime_ns):  # not written to while we read it
            with self._lock:
                self._load()[key] = {"size": size, "mtime_ns": mtime_ns, "sha256": digest}
                self._save()
        return digest[: SHORT_LENGTHS[kind]]

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = _read_entries(self.cache_file)
        return self._entries

    def _save(self) -> None:
        entries = {**_read_entries(self.cache_file), **self._load()}
        self._entries = entries
        data = json.dumps({"version": _CACHE_VERSION, "entries": entries}, indent=1, sort_keys=True)
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            # Not fsynced: a cache lost in a power cut is only recomputed.
            atomic_write_bytes(self.cache_file, data.encode("utf-8"), durable=False)
        except OSError as error:
            # The hash itself is right; without the file it is recomputed next time.
            log.warning("Could not write the hash cache %s: %s", self.cache_file, error)


@dataclass(frozen=True)
class JobHashes:
    """What a picture's parameters say about the files it was made with."""

    single_file: bool  # the checkpoint is one file (A1111 hashes only those; a diffusers folder has no hash)
    model: Optional[str]
    loras: tuple[tuple[str, str], ...]  # (name, short hash) for "Lora hashes"


def job_hashes(store: Any, model: str, loras: Sequence[Any]) -> JobHashes:
    """The checkpoint's and the LoRAs' (``LoraUse``) A1111 hashes, through the models folder's cache."""
    hashes = HashCache(store.models_dir / HASH_CACHE)
    source = store.resolve(model)
    single = source.path is not None and source.path.is_file()
    return JobHashes(single, hashes.get(source.path, "model") if single else None,
                     tuple((u.file.name, hashes.get(u.file.path, "lora")) for u in loras))
