"""The model pool: every loaded model, where it lives, and who gets evicted when memory runs out.

Two tiers, as in ComfyUI's model management: the *device* tier (VRAM, or RAM on a CPU-only
machine) and the *host* tier (CPU RAM). Activating a model that does not fit evicts the least
recently used models to the host tier first, because bringing them back from RAM is an order
of magnitude faster than from disk; when the host tier is full too, the oldest go out of memory
entirely and come back through their loader. Components shared between pipelines (diffusers'
``from_pipe``) are the same objects, so they are counted, moved and freed once.

A model registered with the files it was loaded from is checked on each activation (one ``stat``
per file): when one was replaced on disk, the stale copy is released and the loader reads the new
one. The store reads weights into memory (engines/models/residency.py), so the stale copy is
still whole and safe to use until then.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from engines.errors import ModelNotFoundError, OutOfMemoryError
from engines.files import FileStamp
from engines.hardware.placement import ModuleMover, Placement, PlacementPlan, components_of, module_bytes

log = logging.getLogger(__name__)

DEVICE, HOST, UNLOADED = "device", "host", "unloaded"


@dataclass
class PoolEntry:
    name: str
    obj: Any
    loader: Optional[Callable[[], Any]]
    plan_for: Callable[[dict[str, int], int], PlacementPlan]
    tier: str = HOST
    plan: Optional[PlacementPlan] = None
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # component name -> bytes
    module_ids: dict[str, int] = field(default_factory=dict)  # component name -> id(module)
    stamp: Optional[FileStamp] = None  # the files it was loaded from, as they were then

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def device_footprint(self) -> int:
        return self.plan.device_bytes if self.plan else self.total_bytes


@dataclass(frozen=True)
class PoolRecord:
    """One row of the System tab's model table."""

    name: str
    tier: str  # "device", "host" or "unloaded"
    placement: str
    size_bytes: int
    shared_bytes: int  # bytes of components also used by another loaded entry
    device_bytes: int
    idle_seconds: float
    in_use: bool


@dataclass(frozen=True)
class UnloadReport:
    name: str
    freed_bytes: int
    released: bool  # every module it owned alone was really garbage-collected


def _whole(sizes: dict[str, int], budget: int) -> PlacementPlan:
    return PlacementPlan(Placement.WHOLE, sum(sizes.values()))


class ModelPool:
    """LRU pool over two budgets; thread-safe. Placement and moves are delegated to ``mover``."""

    def __init__(
        self,
        *,
        device_budget: int,
        host_budget: int,
        mover: ModuleMover,
        on_event: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.device_budget = int(device_budget)
        self.host_budget = int(host_budget)
        self._mover = mover
        self._on_event = on_event
        self._entries: dict[str, PoolEntry] = {}
        self._modules: dict[int, Any] = {}  # id -> module, for every loaded component
        self._sizes: dict[int, int] = {}  # id -> bytes, measured at first registration
        self._lock = threading.RLock()

    # -- accounting -----------------------------------------------------------------------
    def _whole_on_device(self, exclude: Optional[PoolEntry] = None) -> set[int]:
        """Ids of the modules that sit on the device because a whole-placed entry holds them."""
        return {mid for e in self._entries.values()
                if e.tier == DEVICE and e is not exclude and (e.plan is None or e.plan.placement == Placement.WHOLE)
                for mid in e.module_ids.values()}

    def device_bytes(self) -> int:
        """Whole-placed weights counted once, plus each offloaded entry's resident footprint."""
        with self._lock:
            offloaded = sum(e.device_footprint for e in self._entries.values()
                            if e.tier == DEVICE and e.plan and e.plan.placement != Placement.WHOLE)
            return sum(self._sizes[mid] for mid in self._whole_on_device()) + offloaded

    def host_bytes(self) -> int:
        """Bytes held in CPU RAM by loaded entries and not also on the device."""
        with self._lock:
            held = {mid for e in self._entries.values() if e.tier in (HOST, DEVICE)
                    for mid in e.module_ids.values()}
            return sum(self._sizes[mid] for mid in held - self._whole_on_device())

    def _users(self, mid: int, tiers: tuple[str, ...], exclude: PoolEntry | None = None) -> list[PoolEntry]:
        return [e for e in self._entries.values()
                if e is not exclude and e.tier in tiers and mid in e.module_ids.values()]

    # -- registration -----------------------------------------------------------------------
    def add(
        self,
        name: str,
        obj: Any,
        *,
        loader: Optional[Callable[[], Any]] = None,
        plan_for: Optional[Callable[[dict[str, int], int], PlacementPlan]] = None,
        activate: bool = True,
        files: Iterable[Path | str] = (),
    ) -> Any:
        """Register a loaded model or pipeline (it starts in CPU RAM) and, by default, activate it.

        ``files`` are the files it was loaded from; when one changes on disk, the next activation
        reloads it through ``loader`` (or, without one, keeps the loaded copy and warns).
        """
        with self._lock:
            if name in self._entries and self._entries[name].tier != UNLOADED:
                self.unload(name)
            files = tuple(files)
            entry = PoolEntry(name, obj, loader, plan_for or _whole, stamp=FileStamp.of(files) if files else None)
            self._entries[name] = entry
            self._attach(entry, obj)
            self._on_event(f"registered {name} ({entry.total_bytes / 2**20:.1f} MiB)")
            if activate:
                return self.activate(name)
            self._fit_host(protect=entry)
            return obj

    def _attach(self, entry: PoolEntry, obj: Any) -> None:
        entry.obj, entry.tier, entry.plan = obj, HOST, None
        entry.module_ids, entry.sizes = {}, {}
        for cname, module in components_of(obj).items():
            mid = id(module)
            if mid not in self._modules:
                self._modules[mid] = module
                # Measured once, on first registration: after offload hooks have moved
                # parameters to "meta", a second measurement of a shared component would read 0.
                self._sizes[mid] = module_bytes(module)
            else:
                self._remeasure(mid, module)
            entry.module_ids[cname] = mid
            entry.sizes[cname] = self._sizes[mid]

    def _remeasure(self, mid: int, module: Any) -> None:
        """A component already counted may have grown since: diffusers' ``from_pipe`` without a dtype
        casts the components it shares to float32 in place, doubling an fp16 pipeline behind the
        pool's back (seen on an H200: the pool counted 2.0 GB, torch held 4.1 GB)."""
        now = module_bytes(module)
        if now and now != self._sizes[mid]:
            log.warning("a shared component changed size from %.1f to %.1f MiB (cast to another dtype?); "
                        "counting the new size", self._sizes[mid] / 2**20, now / 2**20)
            self._sizes[mid] = now
            for other in self._entries.values():
                for cname, other_mid in other.module_ids.items():
                    if other_mid == mid:
                        other.sizes[cname] = now

    def names(self) -> list[str]:
        with self._lock:
            return [n for n, e in self._entries.items() if e.tier != UNLOADED]

    def __contains__(self, name: str) -> bool:
        with self._lock:
            entry = self._entries.get(name)
            return entry is not None and entry.tier != UNLOADED

    def registered(self, name: str) -> bool:
        """True once ``name`` was added, even while it is unloaded (its loader brings it back on use)."""
        with self._lock:
            entry = self._entries.get(name)
            return entry is not None and (entry.tier != UNLOADED or entry.loader is not None)

    def tier_of(self, name: str) -> str:
        with self._lock:
            entry = self._entries.get(name)
            return entry.tier if entry else UNLOADED

    # -- activation and eviction -----------------------------------------------------------
    def activate(self, name: str) -> Any:
        """Bring a model onto the device (reloading it if it was evicted) and return it."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise ModelNotFoundError(f"No model named '{name}' has been loaded in this session.")
            changed = self._changed_on_disk(entry)
            if changed:
                self._release(entry)
            if entry.tier == UNLOADED:
                if entry.loader is None:
                    raise ModelNotFoundError(f"Model '{name}' was unloaded and has no loader to bring it back.")
                if not changed:
                    self._on_event(f"reloading {name} from disk")
                # Stamped before reading, so a file replaced during the load is noticed next time.
                stamp = entry.stamp.again() if entry.stamp else None
                self._attach(entry, entry.loader())
                entry.stamp = stamp
                if changed:
                    self._on_event(f"{name} changed on disk; reloaded")
            entry.last_used = time.monotonic()
            if entry.tier == DEVICE:
                return entry.obj
            # Placed around what running jobs hold (a job's ControlNets activated before its checkpoint):
            # a plan for the whole budget would choose "whole" and then find no room beside them.
            plan = entry.plan_for(dict(entry.sizes), max(0, self.device_budget - self._pinned_bytes(entry)))
            needed = self._needed_on_device(entry, plan)
            if needed > self.device_budget:
                raise OutOfMemoryError(
                    f"'{name}' needs {needed / 2**30:.2f} GB even with offloading, more than the "
                    f"{self.device_budget / 2**30:.2f} GB budget; raise --vram-limit or close other work."
                )
            self._make_room(needed, protect=entry)
            entry.plan, entry.tier = self._mover.to_device(entry.obj, plan), DEVICE
            self._on_event(f"activated {name} ({entry.plan.placement.value})")
            self._fit_host(protect=None)
            return entry.obj

    def _changed_on_disk(self, entry: PoolEntry) -> bool:
        """True when a loaded entry's files were replaced and it should be reloaded now."""
        if entry.stamp is None or entry.tier == UNLOADED or entry.in_use or not entry.stamp.changed():
            return False
        now = entry.stamp.again()
        if entry.loader is None:
            entry.stamp = now  # warn once per change, not on every use
            log.warning("%s changed on disk; keeping the copy loaded before (no loader to reload it)", entry.name)
            return False
        # A file deleted and not yet written back is a replacement in progress: the loaded copy is
        # whole, so keep it and look again next time.
        return not set(now.missing) - set(entry.stamp.missing)

    def _pinned_bytes(self, entry: PoolEntry) -> int:
        """Device bytes held by other entries in use, not counting components shared with ``entry``."""
        mine = set(entry.module_ids.values())
        busy = [e for e in self._entries.values() if e is not entry and e.tier == DEVICE and e.in_use]
        whole = {mid for e in busy if e.plan is None or e.plan.placement == Placement.WHOLE
                 for mid in e.module_ids.values()} - mine
        offloaded = sum(e.device_footprint for e in busy if e.plan and e.plan.placement != Placement.WHOLE)
        return sum(self._sizes[mid] for mid in whole) + offloaded

    def _needed_on_device(self, entry: PoolEntry, plan: PlacementPlan) -> int:
        if plan.placement != Placement.WHOLE:
            return plan.device_bytes
        missing = set(entry.module_ids.values()) - self._whole_on_device(exclude=entry)
        return sum(self._sizes[mid] for mid in missing)

    def _lru(self, tier: str, protect: Optional[PoolEntry] = None) -> list[PoolEntry]:
        candidates = [e for e in self._entries.values()
                      if e.tier == tier and e is not protect and e.in_use == 0]
        return sorted(candidates, key=lambda e: e.last_used)

    def _make_room(self, needed: int, protect: PoolEntry) -> None:
        for victim in self._lru(DEVICE, protect):
            if self.device_bytes() + needed <= self.device_budget:
                return
            self._demote(victim)
        if self.device_bytes() + needed > self.device_budget:
            busy = ", ".join(e.name for e in self._entries.values() if e.tier == DEVICE and e.in_use)
            raise OutOfMemoryError(
                f"'{protect.name}' does not fit next to models in use ({busy or 'none'}); "
                "wait for the running job or raise the memory budget."
            )

    def _demote(self, entry: PoolEntry) -> None:
        # The caller fits the host tier afterwards: a model being activated still sits in RAM
        # until it has moved, and must not push out what was just evicted to make room for it.
        keep = {mid for mid in entry.module_ids.values() if self._users(mid, (DEVICE,), exclude=entry)}
        self._mover.to_host(entry.obj, entry.plan, keep_ids=keep)
        entry.tier, entry.plan = HOST, None
        self._on_event(f"moved {entry.name} to CPU RAM")

    def _fit_host(self, protect: Optional[PoolEntry] = None) -> None:
        for victim in self._lru(HOST, protect):
            if self.host_bytes() <= self.host_budget:
                return
            self._release(victim)

    def offload(self, name: str) -> None:
        """Move a model to CPU RAM now (the System tab's "to RAM" button)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.tier == DEVICE:
                self._demote(entry)
                self._fit_host(protect=None)

    def unload(self, name: str) -> UnloadReport:
        """Take a model out of memory entirely and check that its memory was really released."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.tier == UNLOADED:
                return UnloadReport(name, 0, True)
            return self._release(entry)

    def unload_all(self) -> list[UnloadReport]:
        with self._lock:
            return [self._release(e) for e in list(self._entries.values()) if e.tier != UNLOADED]

    def forget(self, name: str) -> None:
        """Unload and drop the loader too (the model will not come back on its own)."""
        with self._lock:
            self.unload(name)
            self._entries.pop(name, None)

    def _release(self, entry: PoolEntry) -> UnloadReport:
        if entry.in_use:
            raise OutOfMemoryError(f"'{entry.name}' is being used by a running job and cannot be unloaded now.")
        owned = [mid for mid in entry.module_ids.values()
                 if not self._users(mid, (DEVICE, HOST), exclude=entry)]
        freed = sum(entry.sizes[c] for c, mid in entry.module_ids.items() if mid in owned)
        if entry.tier == DEVICE:
            self._mover.to_host(entry.obj, entry.plan, keep_ids={
                mid for mid in entry.module_ids.values() if self._users(mid, (DEVICE,), exclude=entry)})
        refs = []
        for mid in owned:
            self._sizes.pop(mid, None)
            try:
                refs.append(weakref.ref(self._modules.pop(mid)))
            except (KeyError, TypeError):  # unknown or not weak-referenceable: cannot verify
                pass
        entry.obj, entry.tier, entry.plan, entry.module_ids = None, UNLOADED, None, {}
        gc.collect()
        self._mover.empty_cache()
        alive = sum(1 for r in refs if r() is not None)
        if alive:
            log.warning("%s: %d component(s) are still referenced elsewhere; their memory is not free yet",
                        entry.name, alive)
        self._on_event(f"unloaded {entry.name} (freed {freed / 2**20:.1f} MiB)")
        return UnloadReport(entry.name, freed if not alive else 0, alive == 0)

    @contextmanager
    def use(self, name: str) -> Iterator[Any]:
        """Activate a model and keep it from being evicted while a job runs with it."""
        with self._lock:
            obj = self.activate(name)
            entry = self._entries[name]
            entry.in_use += 1
        try:
            yield obj
        finally:
            with self._lock:
                entry.in_use -= 1
                entry.last_used = time.monotonic()

    def evict_for_pressure(self, tier: str) -> Optional[str]:
        """Evict the least recently used idle model of a tier (graduated clean-up); returns its name."""
        with self._lock:
            victims = self._lru(tier)
            if not victims:
                return None
            victim = victims[0]
            if tier == DEVICE:
                self._demote(victim)
                self._fit_host(protect=None)
            else:
                self._release(victim)
            return victim.name

    def snapshot(self) -> list[PoolRecord]:
        with self._lock:
            now = time.monotonic()
            records = []
            for e in self._entries.values():
                shared = sum(e.sizes[c] for c, mid in e.module_ids.items()
                             if self._users(mid, (DEVICE, HOST), exclude=e))
                records.append(PoolRecord(
                    e.name, e.tier, e.plan.placement.value if e.plan else "-", e.total_bytes, shared,
                    e.device_footprint if e.tier == DEVICE else 0, now - e.last_used, e.in_use > 0))
            return sorted(records, key=lambda r: r.idle_seconds)
