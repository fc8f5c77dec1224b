"""What the artist has on disk for the SD 1.5 family: checkpoints, LoRAs and embeddings.

A1111's folder conventions, inside the studio's models folder, so a collection can be copied over:

    models/                 checkpoints: single .safetensors files or diffusers folders (model_index.json)
    models/loras/           LoRAs (kohya / A1111 .safetensors), found by file name: <lora:NAME:0.8>
    models/embeddings/      textual-inversion embeddings (.safetensors, .pt), used by writing NAME in a prompt

Names match the file name without its extension, ignoring case, in subfolders too (artists sort
their LoRAs by character or style). Nothing is loaded here; this only finds files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from engines.errors import InvalidRequestError, ModelNotFoundError

NETWORK_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
LORA_FOLDER = "loras"
EMBEDDING_FOLDER = "embeddings"
# Folders under models/ that hold parts or other families, never an SD checkpoint.
_NOT_CHECKPOINTS = {LORA_FOLDER, EMBEDDING_FOLDER, ".configs", ".hub-cache", "controlnet", "ip-adapter"}


@dataclass(frozen=True)
class NetworkFile:
    """A LoRA or an embedding on disk."""

    name: str  # what the prompt calls it: the file name without its extension
    path: Path


def _files(folder: Path, suffixes: Iterable[str]) -> list[NetworkFile]:
    if not folder.is_dir():
        return []
    suffixes = tuple(suffixes)
    found = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes]
    # A .safetensors beside a .pt of the same name wins: it cannot run code.
    found.sort(key=lambda p: (str(p.parent).lower(), p.stem.lower(), p.suffix.lower() != ".safetensors"))
    seen: dict[str, NetworkFile] = {}
    for path in found:
        seen.setdefault(path.stem.lower(), NetworkFile(path.stem, path))
    return sorted(seen.values(), key=lambda f: f.name.lower())


class Sd15Library:
    """Finds checkpoints, LoRAs and embeddings under ``models_dir``."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    @property
    def lora_dir(self) -> Path:
        return self.models_dir / LORA_FOLDER

    @property
    def embedding_dir(self) -> Path:
        return self.models_dir / EMBEDDING_FOLDER

    def loras(self) -> list[NetworkFile]:
        return _files(self.lora_dir, NETWORK_SUFFIXES)

    def embeddings(self) -> list[NetworkFile]:
        return _files(self.embedding_dir, NETWORK_SUFFIXES)

    def checkpoints(self) -> list[str]:
        """Checkpoint references for a picker: single files and diffusers pipeline folders under models/."""
        if not self.models_dir.is_dir():
            return []
        found = []
        for path in sorted(self.models_dir.iterdir(), key=lambda p: p.name.lower()):
            if path.name in _NOT_CHECKPOINTS or path.name.startswith("."):
                continue
            if path.is_file() and path.suffix.lower() == ".safetensors":
                found.append(path.name)
            elif path.is_dir() and (path / "model_index.json").is_file() and (path / "unet").is_dir():
                found.append(path.name)
        return found

    def lora(self, name_or_path: str) -> NetworkFile:
        """A LoRA by its prompt name or by a path; one sentence naming the folder when it is missing."""
        return self._find(name_or_path, self.loras(), self.lora_dir, "LoRA")

    def embedding(self, name_or_path: str) -> NetworkFile:
        return self._find(name_or_path, self.embeddings(), self.embedding_dir, "embedding")

    def _find(self, text: str, known: list[NetworkFile], folder: Path, kind: str) -> NetworkFile:
        text = str(text).strip()
        if not text:
            raise InvalidRequestError(f"Give the {kind}'s file name.")
        path = Path(text).expanduser()
        if path.suffix.lower() in NETWORK_SUFFIXES and path.is_file():
            return NetworkFile(path.stem, path.resolve())
        key = (path.stem if path.suffix.lower() in NETWORK_SUFFIXES else text).lower()
        for item in known:
            if item.name.lower() == key:
                return item
        raise ModelNotFoundError(f"There is no {kind} named '{text}': put its .safetensors file in {folder}.")

    def embeddings_in(self, *prompts: str, extra: Iterable[NetworkFile] = ()) -> list[NetworkFile]:
        """The embeddings a prompt uses: A1111 applies an embedding wherever its name appears as a word."""
        text = "\n".join(prompts)
        used = []
        for item in [*extra, *self.embeddings()]:
            pattern = r"(?<![\w-])" + re.escape(item.name) + r"(?![\w-])"
            if re.search(pattern, text) and all(u.name != item.name for u in used):
                used.append(item)
        return used
