"""The dataset engine's parts on their own: checks, filters, hashes, captions, the manifest, the rate limit."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from engines.dataset.captions import TagGroups, build_caption
from engines.dataset.dataset_dir import DatasetDir, stem_for
from engines.dataset.dedupe import DuplicateIndex
from engines.dataset.filters import inspect_image, judge_measurements
from engines.dataset.http import USER_AGENT, RateLimiter
from engines.dataset.request import CollectRequest, NetworkSettings, QualityThresholds, SourceSpec, check
from engines.dataset.safety import Blacklist, load_meta_tags, read_word_list, BLACKLIST_FILE
from engines.errors import Cancelled, InvalidRequestError, OfflineError
from engines.progress import CancelToken
from fake_sites import art, blurry, corrupt, flat, reencoded, truncated

T = QualityThresholds()


def request(tmp_path: Path, *sources: SourceSpec, **changes) -> CollectRequest:
    return replace(CollectRequest(out_dir=tmp_path / "ds", sources=sources or (SourceSpec("danbooru"),)), **changes)


# --- check(request) -------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, sentence", [
    (dict(sources=()), "Choose at least one source"),
    (dict(sources=(SourceSpec("pixiv"),)), "Unknown source 'pixiv'"),
    (dict(sources=(SourceSpec("danbooru"), SourceSpec("danbooru"))), "Each source can be chosen once"),
    (dict(target=0), "The target must be a whole number"),
    (dict(target=2.5), "The target must be a whole number"),
    (dict(posted_since="last year"), "'Posted since' must be a date"),
    (dict(caption_template="{tags} by {painter}"), "uses {painter}"),
    (dict(caption_template="  "), "caption template is empty"),
    (dict(thresholds=QualityThresholds(max_aspect=0.5)), "maximum aspect ratio must be a number from 1"),
    (dict(thresholds=QualityThresholds(near_duplicate_distance=40)), "near-duplicate distance"),
    (dict(network=NetworkSettings(rate_limit=-1)), "The rate limit must be"),
    (dict(network=NetworkSettings(timeout_s=0)), "The timeout must be"),
    (dict(sources=(SourceSpec("danbooru", endpoint="ftp://x"),)), "must be an http(s) address"),
    (dict(sources=(SourceSpec("safebooru", api_key="k"),)), "needs both api_key and user_id"),
    (dict(sources=(SourceSpec("cse", api_key="k"),)), "needs an API key and a search engine id"),
    (dict(sources=(SourceSpec("cse", api_key="k", engine_id="cx"),)), "needs search words"),
    (dict(sources=(SourceSpec("hf", dataset="not an id"),)), "is not a Hugging Face dataset id"),
    (dict(sources=(SourceSpec("folder"),)), "needs the folder"),
    (dict(sources=(SourceSpec("folder", folder="/no/such/folder"),)), "There is no folder at"),
])
def test_check_names_every_bad_value_in_one_sentence(tmp_path, changes, sentence):
    with pytest.raises(InvalidRequestError) as error:
        check(request(tmp_path, **changes))
    assert sentence in str(error.value)
    assert str(error.value).count(". ") == 0 and str(error.value).endswith(".")


def test_check_offline_allows_only_the_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    check(request(tmp_path, SourceSpec("folder", folder=str(tmp_path / "mine"))), offline=True)
    with pytest.raises(OfflineError, match="offline"):
        check(request(tmp_path, SourceSpec("hf")), offline=True)
    with pytest.raises(InvalidRequestError, match="cannot be the dataset folder"):
        check(request(tmp_path, SourceSpec("folder", folder=str(tmp_path / "mine")), out_dir=tmp_path / "mine"))


# --- filters --------------------------------------------------------------------------------------


def test_filters_reject_each_bad_image_with_its_reason():
    good = inspect_image(art(1), T)
    assert good.ok and good.ext == ".jpg" and (good.width, good.height) == (640, 480)
    assert good.sharpness > T.min_sharpness and good.colour_std > T.min_colour_std
    assert inspect_image(art(1, fmt="PNG"), T).ext == ".png"
    cases = {
        "undecodable": [corrupt(), truncated(art(2)), b"", b"<html>rate limited</html>"],
        "small_long_edge": [art(3, (400, 300))],
        "small_short_edge": [art(4, (700, 200))],
        "aspect": [art(5, (1200, 260))],
        "blurry": [blurry(6)],
        "flat": [flat()],
    }
    for reason, samples in cases.items():
        for data in samples:
            assert inspect_image(data, T).reason == reason


def test_thresholds_are_configurable_and_reapply_to_stored_measurements():
    lenient = QualityThresholds(min_long_edge=300, min_short_edge=150, min_sharpness=0.1, min_colour_std=1)
    assert inspect_image(art(3, (400, 300)), lenient).ok
    verdict = inspect_image(blurry(6), T)
    assert verdict.reason == "blurry"
    assert judge_measurements(verdict.width, verdict.height, verdict.sharpness, verdict.colour_std,
                              lenient) is None


def test_near_and_exact_duplicates():
    original = inspect_image(art(10), T)
    copy = inspect_image(reencoded(art(10)), T)
    index = DuplicateIndex(max_distance=6)
    assert index.nearest_distance(original.phash) is None
    index.add("ABC123", original.phash)
    assert index.has_md5("abc123") and not index.has_md5("def")
    assert index.is_near_duplicate(copy.phash)
    others = [inspect_image(art(seed), T).phash for seed in range(11, 31)]
    assert all(index.nearest_distance(h) > 6 for h in others)
    for h in others:  # the array grows past its first block
        index.add(None, h)
    big = DuplicateIndex(max_distance=0)
    for i in range(3000):
        big.add(None, i * 0x9E3779B97F4A7C15 % 2**64)
    assert len(big) == 3000 and big.is_near_duplicate(2999 * 0x9E3779B97F4A7C15 % 2**64)


# --- safety and captions --------------------------------------------------------------------------


def test_blacklist_matches_whole_words_in_tags_and_titles():
    terms = read_word_list(BLACKLIST_FILE)
    assert len(terms) >= 40
    blacklist = Blacklist.load()
    assert blacklist.match(["1girl", "completely_nude"]) == "nude"
    assert blacklist.match(["see-through_sleeves"]) == "see-through"
    assert blacklist.match([], "A NSFW wallpaper") == "nsfw"
    assert blacklist.match(["denude", "analysis", "grapes", "document"], "Sextant study") is None
    assert Blacklist.load(extra=["mecha"]).match(["mecha_musume"]) == "mecha"


def test_caption_puts_characters_first_and_drops_meta():
    groups = TagGroups(characters=("hatsune_miku",), copyrights=("vocaloid",), artists=("some_artist",),
                       general=("1girl", "long_hair", "highres", "^_^"), meta=("commentary_request",))
    meta = load_meta_tags()
    assert build_caption(groups, "{tags}", meta) == "hatsune miku, vocaloid, 1girl, long hair, ^_^"
    assert build_caption(groups, "by {artists}, {characters}, {general}", meta) == \
        "by some artist, hatsune miku, 1girl, long hair, ^_^"
    assert build_caption(TagGroups(general=("solo",)), "{characters}, {general}", meta) == "solo"


# --- folder, manifest, recovery -------------------------------------------------------------------


def test_stems_are_safe_and_unique():
    assert stem_for("danbooru", "123") == "danbooru_123"
    a, b = stem_for("hf", "images/a.png"), stem_for("hf", "images-a.png")
    assert a != b and "/" not in a and a.startswith("hf_images-a-png-")


def test_recovery_removes_a_half_kept_image_and_notes_hand_deletions(tmp_path):
    with DatasetDir(tmp_path / "ds") as dataset:
        part = dataset.part_path("danbooru_1")
        part.write_bytes(art(1))
        dataset.keep("danbooru", "1", part, stem="danbooru_1", ext=".jpg", caption="a", sidecar={},
                     columns={"md5": "m1"})
        # A run killed between "writing" and "kept": files on disk, row still writing.
        dataset.manifest.record("danbooru", "2", "writing", stem="danbooru_2", ext=".jpg")
        for name in ("danbooru_2.jpg", "danbooru_2.txt", "danbooru_2.json", ".danbooru_3.txt.tmp"):
            (dataset.root / name).write_bytes(b"half")
        dataset.part_path("danbooru_4").write_bytes(b"partial")
    (tmp_path / "ds" / "danbooru_1.jpg").rename(tmp_path / "elsewhere.jpg")  # the artist deleted it
    with DatasetDir(tmp_path / "ds") as dataset:
        assert dataset.recover() == {"undone": 1, "deleted_by_hand": 1}
        assert sorted(p.name for p in dataset.root.iterdir()) == [".inkframe", "danbooru_1.json", "danbooru_1.txt"]
        assert dataset.manifest.get("danbooru", "2") is None
        assert dataset.manifest.get("danbooru", "1").status == "removed"
        assert not list(dataset.parts.iterdir())
        assert list(dataset.manifest.hashes()) == [("m1", None)]  # a removed image still blocks its duplicates


def test_trim_keeps_the_first_images_in_collection_order(tmp_path):
    with DatasetDir(tmp_path / "ds") as dataset:
        for i in range(5):
            part = dataset.part_path(f"x_{i}")
            part.write_bytes(b"img")
            dataset.keep("x", str(i), part, stem=f"x_{i}", ext=".jpg", caption="", sidecar={}, columns={})
        assert dataset.trim(3) == 2
        assert [r.post_id for r in dataset.manifest.rows("kept")] == ["0", "1", "2"]
        assert sorted(p.name for p in dataset.root.glob("*.jpg")) == ["x_0.jpg", "x_1.jpg", "x_2.jpg"]
        assert dataset.summary()["trimmed"] == 2


# --- network politeness ---------------------------------------------------------------------------


def test_rate_limiter_spaces_requests_per_host_and_honours_cancel():
    limiter = RateLimiter(per_second=20)
    started = time.monotonic()
    for _ in range(4):
        limiter.wait("a.example")
    limiter.wait("b.example")  # another host does not wait for the first
    assert 0.14 <= time.monotonic() - started < 1.0
    cancel = CancelToken()
    slow = RateLimiter(per_second=0.5, cancel=cancel)
    slow.wait("a.example")
    cancel.cancel()
    with pytest.raises(Cancelled):
        slow.wait("a.example")
    assert USER_AGENT.startswith("InkframeStudio/") and "Mozilla" not in USER_AGENT


def test_keys_in_urls_are_redacted_from_urllib3_warnings():
    import logging

    from engines.dataset.http import HttpClient, _RedactKeys

    HttpClient(NetworkSettings()).close()
    assert any(isinstance(f, _RedactKeys) for f in logging.getLogger("urllib3.connectionpool").filters)
    record = logging.LogRecord("urllib3.connectionpool", logging.WARNING, __file__, 1,
                               "Retrying (%r) after connection broken by '%r': %s",
                               ("Retry(total=1)", "timeout", "/index.php?page=dapi&api_key=SECRET&user_id=42&pid=0"),
                               None)
    _RedactKeys().filter(record)
    message = record.getMessage()
    assert "SECRET" not in message and "user_id=***" in message and "pid=0" in message
