"""Origin checkpoints on disk: one folder each, written atomically, found newest-good-first.

    <run>/config.json                 the run's OriginConfig
    <run>/checkpoints/epoch-000010/   one checkpoint
        model.safetensors             raw weights
        ema.safetensors               EMA weights (what generation uses when present)
        meta.json                     epoch, step, version, config, metrics; written last
        training_state/               optimizer, scheduler, RNG... (accelerate's save_state)

A checkpoint folder is built under a temporary name, fsynced, and renamed into place, so a
kill -9 in the middle leaves the previous checkpoint the newest complete one. ``meta.json`` is
the completeness marker: a folder without it is ignored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from engines.errors import CorruptModelError, ModelNotFoundError
from engines.origin.model.config import OriginConfig

FORMAT_VERSION = 1
_NAME = re.compile(r"^(epoch|step|emergency|milestone|safety)-(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    epoch: int
    step: int
    kind: str  # "epoch", "milestone", "emergency", "step" or "safety"
    meta: dict[str, Any]


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    if os.name != "nt":  # directories cannot be opened for fsync on Windows
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_checkpoint_dir(run_dir: Path, name: str) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it is renamed to ``checkpoints/<name>``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if not (tmp / "meta.json").exists():
            raise RuntimeError("a checkpoint must write meta.json last")
        _fsync_tree(tmp)
        final = root / name
        if final.exists():
            # Replacing a same-named checkpoint (a re-run epoch): move the old one aside first
            # so a crash between the two renames still leaves one complete copy.
            old = root / f".old-{name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_meta(folder: Path, *, epoch: int, step: int, config: OriginConfig, **extra: Any) -> None:
    meta = {"format": FORMAT_VERSION, "epoch": epoch, "step": step, "config": config.to_dict(), **extra}
    (Path(folder) / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def list_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints of a run, oldest first (by step, then name)."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        match = _NAME.match(folder.name)
        if not match or not (folder / "meta.json").is_file():
            continue
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a damaged meta.json: not a checkpoint we can trust
        found.append(CheckpointInfo(folder, int(meta.get("epoch", 0)), int(meta.get("step", 0)),
                                    match.group(1), meta))
    return sorted(found, key=lambda c: (c.step, c.path.name))


def find_latest(run_dir: Path) -> Optional[CheckpointInfo]:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_checkpoint(ref: str | Path) -> CheckpointInfo:
    """A run folder (its newest checkpoint) or one checkpoint folder."""
    path = Path(ref).expanduser()
    if (path / "meta.json").is_file():
        latest = next((c for c in list_checkpoints(path.parent.parent) if c.path == path), None)
        if latest is None:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            latest = CheckpointInfo(path, int(meta.get("epoch", 0)), int(meta.get("step", 0)), "step", meta)
        return latest
    if path.is_dir():
        latest = find_latest(path)
        if latest is not None:
            return latest
        raise ModelNotFoundError(f"The run folder {path} has no finished checkpoint yet; train it first.")
    raise ModelNotFoundError(f"No Origin run or checkpoint at {path}.")


def load_for_inference(ref: str | Path, prefer_ema: bool = True) -> tuple[OriginConfig, dict[str, Any], CheckpointInfo]:
    """Config and weights (EMA when present) of a checkpoint, read with safetensors only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = resolve_checkpoint(ref)
    config = OriginConfig.from_dict(info.meta["config"])
    for name in (("ema.safetensors", "model.safetensors") if prefer_ema else ("model.safetensors",)):
        file = info.path / name
        if file.is_file():
            try:
                return config, load_file(str(file)), info
            except (SafetensorError, OSError) as error:
                raise CorruptModelError(
                    f"The checkpoint file {file} is damaged ({error}); use an earlier checkpoint of the run."
                ) from error
    raise CorruptModelError(f"The checkpoint {info.path} has no model weights; use an earlier checkpoint.")


def prune(run_dir: Path, keep: int, protect_milestones: bool = True) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (milestones are kept); returns what went.

    Safety checkpoints (written on a timer, so a crash loses minutes) never count against
    ``keep``: one lives only while it is the run's newest checkpoint, and any newer checkpoint,
    the next safety one included, replaces it.
    """
    found = list_checkpoints(run_dir)
    newest = found[-1].path if found else None
    removable = [c for c in found if c.kind != "safety" and not (protect_milestones and c.kind == "milestone")]
    doomed = removable[:-keep] if keep > 0 else removable
    doomed += [c for c in found if c.kind == "safety" and c.path != newest]
    for info in doomed:
        shutil.rmtree(info.path, ignore_errors=True)
    return [c.path for c in doomed]


def recover_interrupted(run_dir: Path) -> list[str]:
    """Tidy what a killed writer left in ``checkpoints/``; returns what it did, for the log.

    A kill between the two renames of a same-named replacement leaves the only complete copy
    as ``.old-<name>-<pid>``: it is renamed back. Unfinished ``.tmp-*`` folders are deleted.
    Call it only while no other process writes checkpoints to this run.
    """
    root = Path(run_dir) / "checkpoints"
    done: list[str] = []
    for folder in sorted(root.glob(".old-*")) if root.is_dir() else []:
        name = folder.name[len(".old-"):].rsplit("-", 1)[0]
        final = root / name
        if not final.exists() and (folder / "meta.json").is_file():
            os.replace(folder, final)
            done.append(f"restored {name}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    for folder in sorted(root.glob(".tmp-*")) if root.is_dir() else []:
        shutil.rmtree(folder, ignore_errors=True)
        done.append(f"removed the unfinished {folder.name}")
    return done
