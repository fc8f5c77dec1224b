"""The artist's dataset as training samples: images paired with captions, and the DataLoader around them.

``ArtDataset`` keeps only paths in memory (a dataset of 50 000 images costs a few MB) and
decodes on demand, through the ``TensorCache`` when one is given. A caption is the text file
next to its image with the same stem (``panel_01.png`` + ``panel_01.txt``), the layout booru
exports and the studio's collector write. One broken file must never stop a days-long run:
files that cannot be opened are left out at index time with a warning, and a file that breaks
later is replaced by the next good sample.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from engines.errors import InvalidRequestError
from engines.origin.model.pixels import DECODE_ERRORS, load_image_uint8, to_model_range
from engines.origin.training.cache import TensorCache

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Part of every cache key: change it when the preprocessing below changes what it produces.
PREPROCESS_VERSION = 1


def read_caption(image_path: Path) -> str:
    """The caption in ``<stem>.txt`` next to the image, "" when there is none."""
    text_file = image_path.with_suffix(".txt")
    if not text_file.is_file():
        return ""
    try:
        return " ".join(text_file.read_text(encoding="utf-8", errors="replace").split())
    except OSError as error:
        log.warning("cannot read the caption %s (%s); training this image without one", text_file, error)
        return ""


def _is_readable_image(path: Path) -> bool:
    """Cheap index-time check: the header parses and PIL's verify() finds no broken structure.

    A full decode of every image here would cost as much as an epoch; truncated pixel data
    that only a decode finds is handled in ``ArtDataset.__getitem__``.
    """
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except DECODE_ERRORS as error:  # UnidentifiedImageError is an OSError
        log.warning("skipping %s: not a readable image (%s)", path, error)
        return False


class ArtDataset(Dataset):
    """Images under ``root`` (recursively) with their captions, as [-1, 1] tensors of ``resolution``."""

    def __init__(self, root: Path, resolution: int, *, cache: Optional[TensorCache] = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise InvalidRequestError(f"The dataset folder {root} does not exist.")
        if not 16 <= int(resolution) <= 2048:
            raise InvalidRequestError(f"The training resolution must be between 16 and 2048 pixels, not {resolution}.")
        self.root = root
        self.resolution = int(resolution)
        self.cache = cache
        # Hidden files and folders are the studio's own bookkeeping (the Dataset tab's
        # .inkframe/ holds removed images and the manifest) or the OS's, never training data.
        found = sorted(p for p in root.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        # Plain strings, not Path objects: smaller, and cheap to pickle into spawned workers.
        self.paths: list[str] = [str(p) for p in found if _is_readable_image(p)]
        self.skipped = len(found) - len(self.paths)
        if not self.paths:
            raise InvalidRequestError(
                f"The dataset folder {root} has no readable images ({', '.join(IMAGE_SUFFIXES)})."
            )
        if self.skipped:
            log.warning("%d of %d images in %s could not be read and are left out", self.skipped, len(found), root)
        self._broken: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def hold_out(self, relative_paths: Iterable[str]) -> int:
        """Leave these images (relative to the root) out of training: the validation set; returns how many."""
        held = {(self.root / r).as_posix() for r in relative_paths}
        before = len(self.paths)
        self.paths = [p for p in self.paths if Path(p).as_posix() not in held]
        return before - len(self.paths)

    @property
    def cache_params(self) -> str:
        return f"v{PREPROCESS_VERSION};res={self.resolution};fit=center;bg=white;dtype=uint8"

    def _pixels(self, path: Path) -> tuple[torch.Tensor, str]:
        if self.cache is None:
            return load_image_uint8(path, self.resolution), "off"
        return self.cache.lookup(path, self.cache_params, lambda: load_image_uint8(path, self.resolution))

    def __getitem__(self, index: int) -> dict[str, Any]:
        # Try this sample, then the following ones: a file deleted or truncated during a
        # days-long run costs one sample, not the run.
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            if i in self._broken:
                continue
            path = Path(self.paths[i])
            try:
                pixels, source = self._pixels(path)
            except DECODE_ERRORS as error:
                self._broken.add(i)
                log.warning("skipping %s: it cannot be decoded (%s)", path, error)
                continue
            return {"image": to_model_range(pixels), "caption": read_caption(path), "path": str(path),
                    "cache": source}
        raise InvalidRequestError(f"None of the images in {self.root} can be decoded any more.")


class LatentDataset(Dataset):
    """An ``ArtDataset``'s images as the VAE's latents, kept in the ``TensorCache``.

    The VAE runs once per image: ``fill`` encodes every image not cached yet, in batches, before
    the first epoch, and every later epoch reads the small latents (32 KB for a 512 px image) from
    RAM or the SSD. Items are ``ArtDataset``'s with ``"image"`` holding the latents ``[C, R/f, R/f]``.
    Read in the training process (no DataLoader workers): nothing is left to decode, and the VAE
    that encodes a miss lives there. The cache key holds the VAE's weight hash: another VAE, other
    latents.
    """

    def __init__(self, images: ArtDataset, encode: Any, vae_identity: dict, cache: TensorCache) -> None:
        """``encode``: ``[B, 3, R, R]`` in [-1, 1] -> ``[B, C, R/f, R/f]`` model latents."""
        self.images = images
        self.encode = encode
        self.cache = cache
        self.params = (f"latent;{images.cache_params};vae={str(vae_identity.get('weights_sha256'))[:16]};"
                       f"scale={vae_identity.get('scaling_factor')};shift={vae_identity.get('shift_factor')};"
                       + (f"channels={vae_identity['latents_mean']}/{vae_identity['latents_std']};"
                          if vae_identity.get("latents_mean") else "")
                       + "posterior=mean;dtype=float16")
        self.encoded = 0  # images this process ran through the VAE

    @property
    def paths(self) -> list[str]:
        return self.images.paths

    @property
    def root(self) -> Path:
        return self.images.root

    def __len__(self) -> int:
        return len(self.images)

    def fill(self, batch_size: int = 8, on_step: Any = None) -> int:
        """Encode every image that is not cached yet, ``batch_size`` per VAE call; returns how many."""
        pending = [i for i, path in enumerate(self.paths) if i not in self.images._broken and not self._cached(path)]
        done = 0
        for start in range(0, len(pending), batch_size):
            chunk, pixels = [], []
            for i in pending[start:start + batch_size]:
                try:
                    pixels.append(to_model_range(load_image_uint8(Path(self.paths[i]), self.images.resolution)))
                    chunk.append(i)
                except DECODE_ERRORS as error:
                    self.images._broken.add(i)
                    log.warning("skipping %s: it cannot be decoded (%s)", self.paths[i], error)
            if chunk:
                latents = self.encode(torch.stack(pixels)).to("cpu", torch.float16)
                for i, latent in zip(chunk, latents):
                    self.cache.put(Path(self.paths[i]), self.params, latent.clone())
            done += len(chunk)
            if on_step is not None:
                on_step(min(start + batch_size, len(pending)), len(pending), "encoding the dataset with the VAE")
        self.encoded += done
        return done

    def _cached(self, path: str) -> bool:
        try:
            return self.cache.contains(Path(path), self.params)
        except OSError:  # deleted since the dataset was indexed: the decode below says so and skips it
            return False

    def _encode_one(self, path: Path) -> torch.Tensor:
        pixels = to_model_range(load_image_uint8(path, self.images.resolution)).unsqueeze(0)
        self.encoded += 1
        return self.encode(pixels)[0].to("cpu", torch.float16)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            if i in self.images._broken:
                continue
            path = Path(self.paths[i])
            try:
                latents, source = self.cache.lookup(path, self.params, lambda: self._encode_one(path))
            except DECODE_ERRORS as error:
                self.images._broken.add(i)
                log.warning("skipping %s: it cannot be decoded (%s)", path, error)
                continue
            return {"image": latents.float(), "caption": read_caption(path), "path": str(path), "cache": source}
        raise InvalidRequestError(f"None of the images in {self.root} can be decoded any more.")


def default_num_workers() -> int:
    """One worker per core the process may use, less one for the training loop, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


def seed_worker(worker_id: int) -> None:
    """Per-worker RNG seeds and RAM cache share (module level so spawned workers can import it).

    torch already seeds each worker from the loader's generator (base seed + worker id); Python's
    and NumPy's generators are seeded from that, so augmentations repeat exactly run to run.
    """
    import numpy as np

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    cache = getattr(info.dataset, "cache", None) if info is not None else None
    if cache is not None:
        cache.split_ram_budget(info.num_workers)


def make_dataloader(dataset: Dataset, *, batch_size: int, shuffle: bool, num_workers: int, device_type: str,
                    seed: int, drop_last: bool = False) -> DataLoader:
    """A seeded DataLoader: same seed, same batches in the same order."""
    if batch_size < 1:
        raise InvalidRequestError(f"The batch size must be at least 1, not {batch_size}.")
    workers = default_num_workers() if num_workers == -1 else int(num_workers)
    if workers < 0:
        raise InvalidRequestError(f"The number of data workers must be -1 (automatic) or 0 or more, not {num_workers}.")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    options: dict[str, Any] = {}
    if workers > 0:
        # Persistent workers keep their RAM cache tier and skip re-spawning every epoch
        # (spawn re-imports torch in each worker: seconds per epoch otherwise).
        options.update(persistent_workers=True, prefetch_factor=2)
        if sys.platform == "win32":
            options["multiprocessing_context"] = "spawn"  # Windows has no fork
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=drop_last,
        # Pinned host memory lets the copy to the GPU run asynchronously (non_blocking=True).
        pin_memory=device_type == "cuda", generator=generator, worker_init_fn=seed_worker, **options,
    )


def drop_captions(captions: list[str], rate: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by "" with probability ``rate``: the unconditional samples CFG needs.

    Classifier-free guidance (Ho & Salimans 2022) contrasts the model's prediction with and
    without the caption at sampling time; the model learns the "without" case from these.
    """
    if not 0.0 <= rate <= 1.0:
        raise InvalidRequestError(f"The caption dropout rate must be between 0 and 1, not {rate}.")
    draws = torch.rand(len(captions), generator=generator)
    return ["" if draw < rate else caption for caption, draw in zip(captions, draws.tolist())]
