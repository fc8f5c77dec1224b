"""Origin's data path: caption pairing, broken files, the two-tier tensor cache, the seeded loader, CFG dropout."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.errors import InvalidRequestError
from engines.origin.training.cache import CacheTally, TensorCache
from engines.origin.training.data import (IMAGE_SUFFIXES, ArtDataset, default_num_workers, drop_captions, load_image_uint8,
                                 make_dataloader)

RES = 16


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 28), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    channels = 4 if mode == "RGBA" else 3
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """One image of every suffix (some with captions, one upper-case, one in a subfolder)."""
    root = tmp_path / "dataset"
    (root / "chapter2").mkdir(parents=True)
    for i, suffix in enumerate(IMAGE_SUFFIXES):
        write_image(root / f"img{i}{suffix}", seed=i)
    write_image(root / "chapter2" / "UPPER.PNG", seed=10)
    write_image(root / "alpha.png", seed=11, mode="RGBA")
    (root / "img0.txt").write_text("manga girl,\n forest background\n", encoding="utf-8")
    (root / "img2.txt").write_text("猫、屋根の上", encoding="utf-8")
    (root / "chapter2" / "UPPER.txt").write_text("rooftop", encoding="utf-8")
    (root / "orphan.txt").write_text("a caption without an image", encoding="utf-8")
    (root / "notes.gif").write_bytes(b"GIF89a")
    return root


def test_pairs_captions_by_stem_for_every_suffix(folder: Path) -> None:
    dataset = ArtDataset(folder, RES)
    names = sorted(Path(p).name for p in dataset.paths)
    assert names == sorted([f"img{i}{s}" for i, s in enumerate(IMAGE_SUFFIXES)] + ["UPPER.PNG", "alpha.png"])
    by_name = {Path(dataset[i]["path"]).name: dataset[i] for i in range(len(dataset))}
    assert by_name["img0.png"]["caption"] == "manga girl, forest background"  # whitespace folded
    assert by_name["img2.jpeg"]["caption"] == "猫、屋根の上"
    assert by_name["UPPER.PNG"]["caption"] == "rooftop"
    assert by_name["img1.jpg"]["caption"] == ""
    for item in by_name.values():
        image = item["image"]
        assert image.shape == (3, RES, RES) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
    # transparency lands on white paper: the alpha test image has mostly light, no pure-black corners
    assert by_name["alpha.png"]["image"].mean() > -0.2


def test_broken_images_are_skipped_with_a_warning(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "garbage.png").write_bytes(b"not an image at all")
    good = write_image(folder / "truncated_png.png", seed=20, size=(64, 64))
    good.write_bytes(good.read_bytes()[:200])
    jpeg = write_image(folder / "zz_truncated.jpg", seed=21, size=(64, 64))
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2])  # header fine, pixel data cut: found only on decode
    with caplog.at_level(logging.WARNING, logger="engines.origin.training.data"):
        dataset = ArtDataset(folder, RES)
        names = [Path(p).name for p in dataset.paths]
        assert "garbage.png" not in names and "truncated_png.png" not in names
        assert dataset.skipped == 2
        index = names.index("zz_truncated.jpg")
        item = dataset[index]  # replaced by the next good sample instead of crashing the run
    assert Path(item["path"]).name != "zz_truncated.jpg"
    assert item["image"].shape == (3, RES, RES)
    text = caplog.text
    assert "garbage.png" in text and "truncated_png.png" in text and "zz_truncated.jpg" in text


def test_empty_or_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="does not exist"):
        ArtDataset(tmp_path / "nowhere", RES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequestError, match="no readable images"):
        ArtDataset(tmp_path / "empty", RES)


def test_cache_ram_hit_then_disk_hit_in_a_new_instance(folder: Path, tmp_path: Path) -> None:
    disk = tmp_path / "cache"
    cache = TensorCache(disk, ram_bytes=2**20, log_every=0)
    dataset = ArtDataset(folder, RES, cache=cache)
    first = [dataset[i] for i in range(len(dataset))]
    assert {item["cache"] for item in first} == {"miss"}
    second = [dataset[i] for i in range(len(dataset))]
    assert {item["cache"] for item in second} == {"ram"}
    stats = cache.stats()
    assert (stats["misses"], stats["ram_hits"], stats["disk_hits"]) == (len(dataset), len(dataset), 0)
    assert stats["hit_rate"] == pytest.approx(0.5)
    # a new run (or a DataLoader worker): empty RAM tier, same disk tier
    fresh = TensorCache(disk, ram_bytes=2**20, log_every=0)
    again = ArtDataset(folder, RES, cache=fresh)
    third = [again[i] for i in range(len(again))]
    assert {item["cache"] for item in third} == {"disk"}
    for a, b in zip(first, third):
        assert torch.equal(a["image"], b["image"])
    assert fresh.stats()["disk_hit_rate"] == 1.0
    # what is cached is the uint8 image, 4x smaller than float32
    assert len(list(disk.rglob("*.safetensors"))) == len(dataset)


def test_edited_image_is_processed_again_and_copies_share_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    path = write_image(root / "panel.png", seed=1)
    calls = []

    def compute(p=path):
        calls.append(p)
        return load_image_uint8(p, RES)

    cache = TensorCache(tmp_path / "cache", ram_bytes=2**20, log_every=0)
    before = cache.get_or_compute(path, "res=16", compute)
    write_image(path, seed=2)  # the artist touched up the image
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    after = cache.get_or_compute(path, "res=16", compute)
    assert len(calls) == 2 and not torch.equal(before, after)
    # different preprocessing parameters are a different entry
    cache.get_or_compute(path, "res=32", lambda: load_image_uint8(path, 32))
    # a renamed copy with the same bytes is found by content on disk
    copy = root / "renamed.png"
    copy.write_bytes(path.read_bytes())
    _, source = TensorCache(tmp_path / "cache", ram_bytes=2**20, log_every=0).lookup(copy, "res=16", compute)
    assert source == "disk" and len(calls) == 2


def test_ram_tier_respects_its_byte_budget_lru(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    one = 3 * RES * RES  # uint8 bytes of one image
    cache = TensorCache(None, ram_bytes=2 * one + one // 2, log_every=0)
    for p in paths[:3]:
        cache.get_or_compute(p, "p", lambda p=p: load_image_uint8(p, RES))
    assert cache.stats()["ram_bytes"] <= cache.ram_budget and cache.stats()["ram_items"] == 2
    assert cache.lookup(paths[2], "p", lambda: pytest.fail("should be cached"))[1] == "ram"
    assert cache.lookup(paths[1], "p", lambda: load_image_uint8(paths[1], RES))[1] == "ram"
    assert cache.lookup(paths[0], "p", lambda: load_image_uint8(paths[0], RES))[1] == "miss"  # evicted first
    # paths[0] came back and pushed out the least recently used, paths[2]
    assert cache.lookup(paths[1], "p", lambda: pytest.fail("recently used"))[1] == "ram"
    assert cache.lookup(paths[2], "p", lambda: load_image_uint8(paths[2], RES))[1] == "miss"
    # pickled into a worker: settings only, no tensors; each worker takes its share of the budget
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.stats()["ram_items"] == 0 and clone.ram_budget == cache.ram_budget
    clone.split_ram_budget(2)
    assert clone.ram_budget == cache.ram_budget // 2


def test_unreadable_cache_file_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", seed=3)
    TensorCache(tmp_path / "cache", ram_bytes=0, log_every=0).get_or_compute(
        path, "p", lambda: load_image_uint8(path, RES))
    (cached,) = list((tmp_path / "cache").rglob("*.safetensors"))
    cached.write_bytes(b"\x00" * 10)
    cache = TensorCache(tmp_path / "cache", ram_bytes=0, log_every=0)
    assert cache.lookup(path, "p", lambda: load_image_uint8(path, RES))[1] == "miss"
    assert cache.lookup(path, "p", lambda: pytest.fail("rewritten"))[1] == "disk"


def test_dataloader_is_seeded_and_counts_cache_sources(folder: Path, tmp_path: Path) -> None:
    dataset = ArtDataset(folder, RES, cache=TensorCache(tmp_path / "cache", ram_bytes=2**20, log_every=0))

    def order(seed: int, workers: int = 0) -> list[str]:
        loader = make_dataloader(dataset, batch_size=3, shuffle=True, num_workers=workers, device_type="cpu", seed=seed)
        return [p for batch in loader for p in batch["path"]]

    assert order(7) == order(7)
    assert order(7) != order(8)
    # a worker process (persistent, its own RAM tier) gives the same order as the main process
    fresh = ArtDataset(folder, RES, cache=TensorCache(tmp_path / "cache", ram_bytes=2**20, log_every=0))
    loader = make_dataloader(fresh, batch_size=4, shuffle=True, num_workers=1, device_type="cpu", seed=7)
    assert loader.persistent_workers and not loader.pin_memory
    tally = CacheTally()
    epochs = []
    for _ in range(2):
        paths = []
        for batch in loader:
            tally.add(batch["cache"])
            paths += batch["path"]
        epochs.append(paths)
    assert sorted(epochs[0]) == sorted(dataset.paths)
    assert epochs[0] == order(7)  # the loader's generator reshuffles per epoch, reproducibly
    stats = tally.stats()
    # epoch 1 from the disk tier the loops above filled, epoch 2 from the persistent worker's RAM
    assert (stats["misses"], stats["disk_hits"], stats["ram_hits"]) == (0, len(dataset), len(dataset))


def test_dataloader_options() -> None:
    dataset = torch.utils.data.TensorDataset(torch.zeros(4, 1))
    auto = make_dataloader(dataset, batch_size=2, shuffle=False, num_workers=-1, device_type="cuda", seed=0)
    assert auto.num_workers == default_num_workers() and auto.pin_memory
    assert auto.persistent_workers == (auto.num_workers > 0)
    with pytest.raises(InvalidRequestError):
        make_dataloader(dataset, batch_size=0, shuffle=False, num_workers=0, device_type="cpu", seed=0)


def test_caption_dropout_rate_is_seeded() -> None:
    captions = [f"caption {i}" for i in range(20000)]
    dropped = drop_captions(captions, 0.1, torch.Generator().manual_seed(0))
    rate = sum(c == "" for c in dropped) / len(captions)
    assert rate == pytest.approx(0.1, abs=0.01)
    assert all(d in ("", c) for d, c in zip(dropped, captions))
    assert dropped == drop_captions(captions, 0.1, torch.Generator().manual_seed(0))
    assert dropped != drop_captions(captions, 0.1, torch.Generator().manual_seed(1))
    assert drop_captions(captions[:50], 0.0, torch.Generator()) == captions[:50]
    assert set(drop_captions(captions[:50], 1.0, torch.Generator())) == {""}
    with pytest.raises(InvalidRequestError, match="between 0 and 1"):
        drop_captions(captions, 1.5, torch.Generator())


def test_hidden_folders_are_not_training_data(tmp_path):
    from PIL import Image

    from engines.origin.training.data import ArtDataset

    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "kept.png")
    removed = tmp_path / ".inkframe" / "removed"
    removed.mkdir(parents=True)
    Image.new("RGB", (40, 40), (30, 30, 200)).save(removed / "weeded-out.png")
    dataset = ArtDataset(tmp_path, 32)
    assert [Path(p).name for p in dataset.paths] == ["kept.png"]
