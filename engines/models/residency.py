"""Weights read fully into memory, and how many bytes of a model still live in a file mapping.

safetensors (and ``torch.load(mmap=True)``, which diffusers uses for ``.bin`` files) map the weight
file instead of reading it: every parameter points into the file. The store copies them into
ordinary memory right after loading, for three reasons (numbers in docs/models.md):

1. Honest accounting. A mapped weight is not in RAM until something reads it, and then it sits
   in the page cache, which the kernel may drop and read back from disk in the middle of a
   generation. The pool counts every loaded byte as held in RAM; after the copy it is.
2. A file written over in place while it is mapped changes the model under the studio: the
   mapping shows the new bytes, mixed with whatever the model already computed, and a file made
   shorter kills the whole process with SIGBUS on the next read. A copy is not affected, so the
   pool can notice the change and reload (engines/hardware/pool.py).
3. Windows refuses to delete or replace a file that a process has mapped, so an artist could not
   update a checkpoint while the studio runs.

Which storages are mappings: on Linux, exactly those whose address lies in a mapping of a regular
file (/proc/self/maps). Elsewhere the portable sign is a CPU storage that torch's allocator did not
make (one that is not resizable): safetensors wraps its map with ``frombuffer``,
``torch.load(mmap=True)`` uses ``UntypedStorage.from_file``. That rule also takes in storages that
are already in memory (a plain ``torch.load`` reads each record into one), which then cost one
needless memcpy at load time; the exact rule spares a multi-GB ``.ckpt`` that second copy.
Nothing heavy is imported at module level.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

_PROC_MAPS = Path("/proc/self/maps")


def _slots(obj: Any) -> list[tuple[dict, str, Any]]:
    """Where each parameter and buffer of a pipeline, a module or a dict of tensors is held: (dict, key, tensor)."""
    import torch

    from engines.hardware.placement import components_of

    if isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return [(obj, key, v) for key, v in obj.items() if isinstance(v, torch.Tensor)]
    try:
        modules = components_of(obj).values()
    except TypeError:  # a tokenizer, a scheduler: nothing that holds weights
        return []
    seen: set[int] = set()
    slots = []
    for module in (m for component in modules for m in component.modules()):
        if id(module) in seen:
            continue
        seen.add(id(module))
        for held in (module._parameters, module._buffers):
            slots += [(held, key, tensor) for key, tensor in held.items() if tensor is not None]
    return slots


def _cpu_storage(tensor: Any) -> Any:
    """The tensor's storage when it could be a file mapping (plain, on the CPU, not empty), else None."""
    import torch

    if tensor.device.type != "cpu" or tensor.layout != torch.strided or tensor.is_quantized:
        return None
    storage = tensor.untyped_storage()
    return storage if storage.nbytes() else None


def read_into_memory(obj: Any) -> int:
    """Copy every weight of ``obj`` that torch did not allocate itself into ordinary memory.

    ``obj`` is a pipeline, a module or a dict of tensors, changed in place. Each weight keeps its
    dtype, shape, strides and ``requires_grad``; tied weights stay tied and tensors that shared a
    storage share its copy. Returns the bytes copied.
    """
    import torch

    mappings = _file_mappings()
    copies: dict[int, Any] = {}  # data_ptr of a mapped storage -> its in-memory copy
    replaced: dict[int, Any] = {}  # id of a tensor that had to be swapped -> what took its place
    copied = 0
    for held, key, tensor in _slots(obj):
        if id(tensor) in replaced:
            held[key] = replaced[id(tensor)]
            continue
        storage = _cpu_storage(tensor)
        if storage is None or not _is_mapped(storage, mappings):
            continue
        address = storage.data_ptr()
        if address not in copies:
            copies[address] = torch.UntypedStorage(storage.nbytes())
            copies[address].copy_(storage)
            copied += storage.nbytes()
        fresh = torch.empty(0, dtype=tensor.dtype)
        fresh.set_(copies[address], tensor.storage_offset(), tensor.size(), tensor.stride())
        if not tensor._is_view():
            # ``.data`` swaps what the tensor points at but keeps the object, so every module, tie
            # and hook that holds it sees the copy.
            tensor.data = fresh
            continue
        # safetensors hands out views of one buffer per tensor, and a view keeps its base (and so
        # the mapping) alive through ``.data``: it is replaced by a new tensor instead.
        if isinstance(tensor, torch.nn.Parameter):
            fresh = torch.nn.Parameter(fresh, requires_grad=tensor.requires_grad)
        else:
            fresh.requires_grad_(tensor.requires_grad)
        held[key] = replaced[id(tensor)] = fresh
    return copied


def _file_mappings() -> tuple[list[int], list[int]] | None:
    """Start and end addresses of this process's mappings of regular files (Linux); None elsewhere."""
    try:
        text = _PROC_MAPS.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    ranges = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        # Shared memory (/dev/shm, memfd) and device mappings are memory, not model files.
        if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/") and not (
            fields[5].startswith(("/dev/", "/memfd:"))
        ):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    ranges.sort()
    return [start for start, _ in ranges], [end for _, end in ranges]


def _is_mapped(storage: Any, mappings: tuple[list[int], list[int]] | None) -> bool:
    """Whether a CPU storage lives in a mapped file (``mappings`` from ``_file_mappings``; None: not Linux)."""
    if mappings is None:
        return not storage.resizable()
    starts, ends = mappings
    i = bisect.bisect_right(starts, storage.data_ptr()) - 1
    return i >= 0 and storage.data_ptr() < ends[i]


def file_mapped_bytes(obj: Any) -> int:
    """Bytes of ``obj``'s weights that live in a mapped file rather than in memory torch allocated.

    Exact on Linux (from /proc/self/maps); elsewhere it counts storages torch did not allocate,
    the same rule ``read_into_memory`` copies by.
    """
    mappings = _file_mappings()
    seen: set[int] = set()
    total = 0
    for _, _, tensor in _slots(obj):
        storage = _cpu_storage(tensor)
        if storage is None or storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes() if _is_mapped(storage, mappings) else 0
    return total
