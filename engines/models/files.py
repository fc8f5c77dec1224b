"""The file-level helpers behind the model store (engines/models/store.py): which files of a Hub repo to download,
whether a model folder or .safetensors file is whole, which files a folder is loaded from, turning loader and
network failures into one sentence, the download progress bar, and a checkpoint's keys read lazily.

Callers import from ``engines.models``, which exports what they need. Nothing heavy is imported at
module level: huggingface_hub and safetensors are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engines.errors import CorruptModelError, StudioError, is_torch_oom
from engines.progress import CancelToken, OnStep

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CHECKPOINT_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES
CONFIG_FILES = ("model_index.json", "config.json", "modules.json")

# Written before a download and removed after it, so an interrupted one is never taken for a model.
DOWNLOADING_MARKER = ".inkframe-downloading"
_OTHER_FORMATS = (".msgpack", ".h5", ".onnx", ".onnx_data", ".pb", ".ot", ".gguf", ".tflite")
_WEIGHT_SUFFIXES = CHECKPOINT_SUFFIXES + _OTHER_FORMATS
_MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm", ".zip", ".tar", ".gz")
# Other runtimes' copies of the same weights (e.g. the sentence-transformers repos ship all of these).
_OTHER_RUNTIME_FOLDERS = {"onnx", "openvino", "coreml", "flax", "tf", "tensorflow"}
_VARIANTS = {"fp16", "bf16", "fp32", "ema", "non_ema", "non-ema"}
_LOADED_SUFFIXES = CHECKPOINT_SUFFIXES + (".json",)


# --- which files to download -----------------------------------------------------------------------


def choose_download_files(files: Iterable[str]) -> list[str]:
    """The repo files worth downloading: configs, tokenizers and one safe copy of each set of weights.

    Repos often carry the same weights several times (``.bin`` beside ``.safetensors``, fp16 and EMA
    variants, ONNX/Flax copies, and in SD repos a 4-7 GB root checkpoint duplicating the component
    folders); taking everything would multiply a 4 GB download several times over.
    """
    kept = [f for f in files if f.split("/")[0] not in _OTHER_RUNTIME_FOLDERS]
    kept = [f for f in kept if not f.lower().endswith(_MEDIA_SUFFIXES)]
    is_pipeline = "model_index.json" in kept
    chosen: list[str] = []
    weights_by_folder: dict[str, list[str]] = {}
    for name in kept:
        folder = name.rpartition("/")[0]
        if not name.lower().endswith(_WEIGHT_SUFFIXES):
            chosen.append(name)
        elif folder or not is_pipeline:
            weights_by_folder.setdefault(folder, []).append(name)
    for weights in weights_by_folder.values():
        chosen += _preferred_weights(weights)
    return sorted(chosen)


def _preferred_weights(weights: list[str]) -> list[str]:
    for suffixes in (SAFE_SUFFIXES, PICKLE_SUFFIXES):
        candidates = [w for w in weights if w.lower().endswith(suffixes)]
        if candidates:
            plain = [w for w in candidates if _variant(w) not in _VARIANTS]
            return plain or candidates
    return []


def _variant(filename: str) -> str:
    stem = filename.rpartition("/")[2].rsplit(".", 1)[0]
    return stem.rpartition(".")[2] if "." in stem else ""


# --- is it whole -----------------------------------------------------------------------------------


def config_folder(models_dir: Path, prefix: str, config: Mapping[str, Any]) -> Path:
    """A folder holding ``config.json`` for a single-file model whose file carries no config, written once.

    Under ``models/.configs/<prefix>-<hash of the config>``: the same config always finds the same folder,
    so a second load reads nothing new and never reaches for the Hub."""
    import hashlib

    text = json.dumps(dict(config), sort_keys=True, indent=1)
    folder = Path(models_dir) / ".configs" / f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
    if not (folder / "config.json").is_file():
        from engines.files import atomic_write_bytes

        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "config.json", text.encode("utf-8"))
    return folder


def is_complete(folder: Path) -> bool:
    """A model folder that is not an interrupted download: configs, or checkpoints at its top."""
    if not folder.is_dir() or (folder / DOWNLOADING_MARKER).exists():
        return False
    return any((folder / name).is_file() for name in CONFIG_FILES) or any(
        p.suffix.lower() in CHECKPOINT_SUFFIXES for p in folder.iterdir() if p.is_file()
    )


def folder_model_files(folder: Path) -> list[Path]:
    """The weight and config files a model folder is loaded from.

    Hidden folders are left out: huggingface_hub keeps download metadata in ``.cache`` and the
    store its refs in ``.hub-cache``, and neither is part of the model.
    """
    return sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in _LOADED_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts[:-1])
    )


def check_safetensors_file(path: Path) -> None:
    """Raise CorruptModelError unless the file's header is readable and its data fully present.

    Reads only the header, so a truncated 4 GB download is caught in milliseconds and named clearly
    instead of surfacing as safetensors' "incomplete metadata" deep inside a pipeline load.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length < 100_000_000:  # safetensors caps its JSON header at 100 MB
            raise CorruptModelError(_not_safetensors(path))
        if length > size - 8:
            raise CorruptModelError(_truncated(path, size, length + 8))
        try:
            header = json.loads(handle.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            raise CorruptModelError(_not_safetensors(path)) from None
    if 8 + length + end > size:
        raise CorruptModelError(_truncated(path, size, 8 + length + end))


def _truncated(path: Path, size: int, expected: int) -> str:
    return (
        f"'{path.name}' is truncated ({size:,} of at least {expected:,} bytes), probably an interrupted "
        f"download: download it again and replace {path}."
    )


def _not_safetensors(path: Path) -> str:
    return f"'{path.name}' is not a valid .safetensors file: download it again or replace {path}."


# --- failures into sentences -----------------------------------------------------------------------


def short_error(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
    return text if len(text) <= 160 else text[:157] + "..."


@contextmanager
def load_errors(ref: str, path: Path) -> Iterator[None]:
    """Turn any loader failure into one sentence; memory errors stay memory errors."""
    try:
        yield
    except StudioError:
        raise
    except Exception as error:
        if is_torch_oom(error) or isinstance(error, MemoryError):
            raise
        cause: BaseException | None = error
        for _ in range(8):  # diffusers re-raises weights_only refusals as OSError
            if cause is None:
                break
            if isinstance(cause, pickle.UnpicklingError):
                raise CorruptModelError(
                    f"'{path.name}' contains Python code or objects beyond plain weights, so the studio "
                    "will not open it: use a .safetensors version of this model instead."
                ) from error
            cause = cause.__cause__ or cause.__context__
        name = path.name if Path(ref).expanduser().exists() else ref
        raise CorruptModelError(
            f"Model '{name}' could not be loaded from {path} ({short_error(error)}): download it again "
            "or replace it with a complete diffusers folder or .safetensors file."
        ) from error


def network_errors() -> tuple[type[BaseException], ...]:
    """Transport-level failures of whichever HTTP client this huggingface_hub uses."""
    import huggingface_hub.errors as hub_errors

    found = [
        hub_errors.LocalEntryNotFoundError,
        hub_errors.OfflineModeIsEnabled,
        ConnectionError,
        TimeoutError,
    ]
    for client in ("httpx2", "httpx"):  # huggingface_hub 2.x / 1.x
        try:
            found.append(__import__(client).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


# --- downloading and reading -----------------------------------------------------------------------


def progress_bar_class(on_step: OnStep, cancel: CancelToken | None, label: str) -> type:
    """A tqdm class for huggingface_hub that also reports bytes to ``on_step`` and honours cancel.

    snapshot_download makes byte bars (network and disk) and a file-count bar from this class and
    updates them from worker threads; raising Cancelled inside ``update`` stops every worker.
    """
    from huggingface_hub.utils import tqdm as hub_tqdm

    lock = threading.Lock()
    byte_bars: list[Any] = []

    class DownloadBar(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Our own count: a tqdm that is disabled (no terminal) stops counting.
            self.bytes_done = kwargs.get("initial", 0) or 0
            # Not ``self in byte_bars``: tqdm compares bars by screen position.
            self.counts_bytes = kwargs.get("unit") == "B"
            if self.counts_bytes:
                with lock:
                    byte_bars.append(self)

        def update(self, n: Any = 1) -> Any:
            shown = super().update(n)
            if self.counts_bytes:
                with lock:
                    self.bytes_done += n or 0
                    done = max(bar.bytes_done for bar in byte_bars)
                    total = max(max((bar.total or 0) for bar in byte_bars), done)
                    on_step(done, total, f"Downloading {label}: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB")
            if cancel is not None:
                cancel.raise_if_cancelled()
            return shown

    return DownloadBar


class LazyCheckpoint(Mapping):
    """Keys of a .safetensors file, tensors read on demand: enough for diffusers to tell SD 1/2/XL apart."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self._path = path
        with safe_open(str(path), framework="pt") as handle:
            self._keys = set(handle.keys())

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the tensor
        return key in self._keys

    def __getitem__(self, key: str) -> Any:
        from safetensors import safe_open

        if key not in self._keys:
            raise KeyError(key)
        with safe_open(str(self._path), framework="pt") as handle:
            return handle.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
