"""Every source against a local server that speaks its site's JSON: the kept set must be exactly the
valid, unique, safe images, and every failure a site can cause must be one clear sentence."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from engines.dataset import CollectRequest, NetworkSettings, QualityThresholds, SourceSpec, collect
from engines.dataset.collector import CollectResult
from engines.dataset.errors import AccessDeniedError, SourceError
from engines.errors import OfflineError
from fake_sites import FakeSites, art, danbooru_scenario, md5, reencoded

FAST = NetworkSettings(rate_limit=0, timeout_s=0.5, retries=2, backoff_s=0.02)


@pytest.fixture
def sites():
    with FakeSites() as server:
        yield server


def run(out: Path, *specs: SourceSpec, target: int = 100, network: NetworkSettings = FAST, **changes) -> CollectResult:
    return collect(CollectRequest(out_dir=out, sources=specs, target=target, network=network, **changes))


def kept_stems(out: Path) -> set[str]:
    return {p.stem for p in out.iterdir() if p.suffix in (".jpg", ".png", ".webp")}


def image_requests(sites: FakeSites, name: str) -> list[dict]:
    return [r for r in sites.requests_to("/img/") if r["path"].startswith(f"/img/{name}-")]


def test_danbooru_keeps_exactly_the_valid_unique_safe_images(sites, tmp_path):
    scenario = danbooru_scenario(sites)
    sites.api_fail_first["/danbooru/posts.json"] = [429]
    out = tmp_path / "ds"
    result = run(out, SourceSpec("danbooru", endpoint=sites.endpoint("danbooru")))

    assert kept_stems(out) == scenario.kept_stems()
    assert result.images == result.kept == 10 and not result.reached_target
    assert result.rejected == {
        "duplicate": 1, "near_duplicate": 1, "undecodable": 2, "no_file": 1, "small_long_edge": 1,
        "blurry": 1, "flat": 1, "aspect": 1, "blacklisted": 1, "unsafe_rating": 2, "md5_mismatch": 1,
        "download_failed": 2, "not_still_image": 1,
    }
    # Politeness: our own User-Agent everywhere, Retry-After honoured on the API and on an image.
    assert {r["headers"]["User-Agent"] for r in sites.log} == {sites.log[0]["headers"]["User-Agent"]}
    assert sites.log[0]["headers"]["User-Agent"].startswith("InkframeStudio/")
    first_pages = [r for r in sites.requests_to("/danbooru/posts.json") if "page" not in r["query"]]
    assert len(first_pages) == 2 and first_pages[1]["time"] - first_pages[0]["time"] >= 0.9
    retried = image_requests(sites, "ok3")
    assert len(retried) == 2 and retried[1]["time"] - retried[0]["time"] >= 0.9
    assert len(image_requests(sites, "always500")) == 3  # 1 + 2 retries, then counted as failed
    # Paging with page=b<id>, never numbered pages (Danbooru stops those at 1000).
    pages = [r["query"].get("page") for r in sites.requests_to("/danbooru/posts.json")]
    assert all(p is None or p.startswith("b") for p in pages) and len(pages) > 3
    assert all(r["query"]["tags"] == "rating:g" for r in sites.requests_to("/danbooru/posts.json"))
    # What the listing rules out is never downloaded.
    for name in ("blacklisted", "unsafe_q", "unsafe_e", "video"):
        assert image_requests(sites, name) == []
    # Captions, sidecars and the summary.
    stem = f"danbooru_{scenario.ids['ok0']}"
    assert (out / f"{stem}.txt").read_text() == "hatsune miku, vocaloid, 1girl, solo, smile\n"
    sidecar = json.loads((out / f"{stem}.json").read_text())
    assert sidecar["post_id"] == str(scenario.ids["ok0"]) and sidecar["rating"] == "g" and sidecar["score"] == 10
    assert sidecar["source_url"].startswith(sites.url + "/img/ok0-") and sidecar["md5"] == md5(scenario.images["ok0"])
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["images"] == 10 and summary["kept_by_source"] == {"danbooru": 10}
    assert summary["rejected_by_reason"]["blurry"] == 1 and summary["rejected_by_reason"]["download_failed"] == 2
    assert "api_key" not in json.dumps(summary["request"])
    assert not list((out / ".inkframe" / "parts").iterdir())


def test_rerun_downloads_nothing_new_and_a_lower_target_trims(sites, tmp_path):
    scenario = danbooru_scenario(sites, valid=4, with_slow=False)
    out, spec = tmp_path / "ds", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru"))
    run(out, spec)
    before = len(sites.requests_to("/img/"))
    again = run(out, spec)
    new = sites.requests_to("/img/")[before:]
    assert {r["path"].split("-")[0] for r in new} == {"/img/always500"}  # only the failed one is retried
    assert again.kept == 0 and again.images == 4 and again.skipped > 10
    assert kept_stems(out) == scenario.kept_stems()
    trimmed = run(out, spec, target=2)
    assert trimmed.trimmed == 2 and trimmed.images == 2
    assert kept_stems(out) == {f"danbooru_{scenario.ids[n]}" for n in ("ok0", "ok1")}


def test_stops_at_the_target_and_remembers_removed_images(sites, tmp_path):
    from engines.dataset.dataset_dir import DatasetDir

    scenario = danbooru_scenario(sites, valid=4, with_slow=False)
    out, spec = tmp_path / "ds", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru"))
    result = run(out, spec, target=2)
    assert result.reached_target and kept_stems(out) == {f"danbooru_{scenario.ids[n]}" for n in ("ok0", "ok1")}
    assert image_requests(sites, "ok2") == []
    with DatasetDir(out) as dataset:
        dataset.remove(f"danbooru_{scenario.ids['ok0']}")
    result = run(out, spec, target=3)
    assert kept_stems(out) == {f"danbooru_{scenario.ids[n]}" for n in ("ok1", "ok2", "ok3")}
    assert len(image_requests(sites, "ok0")) == 1 and result.images == 3
    assert (out / ".inkframe" / "removed" / f"danbooru_{scenario.ids['ok0']}.jpg.removed").exists()


def test_sensitive_and_score_rules_on_danbooru(sites, tmp_path):
    from fake_sites import danbooru_post

    for post_id, rating, score in ((10, "g", 5), (9, "s", 5), (8, "g", -3), (7, "q", 50)):
        url = sites.add_image(f"p{post_id}-{post_id}.jpg", art(post_id))
        sites.danbooru.append(danbooru_post(post_id, url, art(post_id), rating=rating, score=score))
    spec = SourceSpec("danbooru", endpoint=sites.endpoint("danbooru"))
    assert kept_stems(run(tmp_path / "a", spec).out_dir) == {"danbooru_10", "danbooru_8"}
    result = run(tmp_path / "b", spec, allow_sensitive=True, min_score=0)
    assert kept_stems(tmp_path / "b") == {"danbooru_10", "danbooru_9"}
    assert result.rejected == {"low_score": 1, "unsafe_rating": 1}


def test_safebooru_org_and_cross_source_duplicates(sites, tmp_path):
    from fake_sites import danbooru_post

    shared = art(40)
    url = sites.add_image("shared-1.jpg", shared)
    sites.danbooru.append(danbooru_post(1, url, shared))
    for i, (rating, tags) in enumerate([("safe", "1girl scenery"), ("general", "sky"), ("questionable", "1girl"),
                                        ("safe", "1girl nude"), ("safe", "tree")]):
        data = shared if i == 4 else art(41 + i)
        sites.add_image(f"s{i}.jpg", data)
        sites.safebooru.append({"id": 100 + i, "directory": "x", "image": f"s{i}.jpg", "hash": md5(data),
                                "rating": rating, "tags": tags, "width": 640, "height": 480, "score": None})
    result = run(tmp_path / "ds", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru")),
                 SourceSpec("safebooru", endpoint=sites.endpoint("safebooru")))
    assert kept_stems(tmp_path / "ds") == {"danbooru_1", "safebooru_100", "safebooru_101"}, (result, sites.log)
    assert result.rejected == {"unsafe_rating": 1, "blacklisted": 1, "duplicate": 1}
    assert result.kept_by_source == {"danbooru": 1, "safebooru": 2}
    assert sites.requests_to("/safebooru/images/x/s0.jpg")  # the file URL built from directory + image
    assert sites.requests_to("/safebooru/images/x/s4.jpg") == []  # its MD5 is already kept: no download


def test_moebooru_sites_take_safe_only_and_yandere_defaults(sites, tmp_path):
    def post(i, rating="s", score=10, created=1_600_000_000, size=(640, 480)):
        data = art(60 + i)
        return {"id": i, "tags": "1girl scenery highres", "rating": rating, "score": score, "md5": md5(data),
                "file_url": sites.add_image(f"m{i}.jpg", data), "width": size[0], "height": size[1],
                "created_at": created}

    sites.moebooru["konachan"] = [post(1), post(2, "q"), post(3, "e"), post(4, size=(300, 200))]
    sites.moebooru["yandere"] = [post(5), post(6, score=1), post(7, created=1_300_000_000), post(8)]
    result = run(tmp_path / "ds", SourceSpec("konachan", endpoint=sites.endpoint("konachan")),
                 SourceSpec("yandere", endpoint=sites.endpoint("yandere")))
    assert kept_stems(tmp_path / "ds") == {"konachan_1", "yandere_5", "yandere_8"}
    assert result.rejected == {"unsafe_rating": 2, "small_long_edge": 1, "low_score": 1, "too_old": 1}
    assert sites.requests_to("/img/m4") == []  # too small by the listing: never downloaded
    assert "rating:s" in sites.requests_to("/yandere/post.json")[0]["query"]["tags"]
    assert "score:>=3" in sites.requests_to("/yandere/post.json")[0]["query"]["tags"]
    assert (tmp_path / "ds" / "konachan_1.txt").read_text() == "1girl, scenery\n"


def test_wallhaven_sfw_anime_with_tags_and_api_key(sites, tmp_path):
    for i, (purity, category) in enumerate([("sfw", "anime"), ("sketchy", "anime"), ("sfw", "general"),
                                            ("sfw", "anime"), ("sfw", "anime")]):
        data = art(80 + i)
        sites.wallhaven.append({"id": f"w{i}", "purity": purity, "category": category,
                                "path": sites.add_image(f"w{i}.jpg", data), "dimension_x": 640,
                                "dimension_y": 480, "url": f"https://wallhaven.cc/w/w{i}", "favorites": 3})
    sites.wallhaven_tags = {
        "w0": [{"name": "Hatsune Miku", "category": "Characters", "purity": "sfw"},
               {"name": "Vocaloid", "category": "Anime & Manga", "purity": "sfw"},
               {"name": "city", "category": "Places", "purity": "sfw"}],
        "w3": [{"name": "bikini armor", "category": "Clothing", "purity": "sketchy"}],
        "w4": [{"name": "nude", "category": "People", "purity": "sfw"}],
    }
    sites.auth["wallhaven"] = ("", "secret")
    with pytest.raises(AccessDeniedError, match="Wallhaven refused the request .HTTP 401.: Wallhaven did not "
                                                "accept the API key"):
        run(tmp_path / "bad", SourceSpec("wallhaven", endpoint=sites.endpoint("wallhaven"), api_key="wrong"))
    result = run(tmp_path / "ds", SourceSpec("wallhaven", endpoint=sites.endpoint("wallhaven"), api_key="secret"))
    assert kept_stems(tmp_path / "ds") == {"wallhaven_w0"}
    assert result.rejected == {"unsafe_rating": 3, "blacklisted": 1}
    assert (tmp_path / "ds" / "wallhaven_w0.txt").read_text() == "hatsune miku, vocaloid, city\n"
    assert all(r["query"]["purity"] == "100" for r in sites.requests_to("/wallhaven/api/v1/search"))


def test_google_custom_search_images_and_its_403(sites, tmp_path):
    for i, title in enumerate(["Anime girl in the rain", "Nude figure study", "Sunset over Tokyo"]):
        sites.cse.append({"title": title, "link": sites.add_image(f"g{i}.jpg", art(90 + i)), "mime": "image/jpeg",
                          "image": {"contextLink": f"https://example.com/{i}", "width": 640, "height": 480}})
    for i in range(3, 14):  # a second page of results
        sites.cse.append({"title": f"page two {i}", "link": sites.add_image(f"g{i}.jpg", art(90 + i)),
                          "image": {"width": 640, "height": 480}})
    spec = SourceSpec("cse", endpoint=sites.endpoint("cse"), api_key="key", engine_id="cx")
    result = run(tmp_path / "ds", spec, tags="anime girl, rain")
    assert result.images == 13 and result.rejected == {"blacklisted": 1}
    assert (tmp_path / "ds" / kept_stems(tmp_path / "ds").pop()).with_suffix(".txt").read_text() == "anime girl, rain\n"
    query = sites.requests_to("/cse/customsearch/v1")[0]["query"]
    assert query["searchType"] == "image" and query["safe"] == "active" and query["cx"] == "cx"
    assert "key" not in query and sites.requests_to("/cse/")[0]["headers"]["X-goog-api-key"] == "key"
    assert [r["query"]["start"] for r in sites.requests_to("/cse/customsearch/v1")] == ["1", "11"]
    with pytest.raises(AccessDeniedError, match=r"Google Custom Search refused the request \(HTTP 403\): check "
                                                r"the API key and the search engine id"):
        run(tmp_path / "bad", SourceSpec("cse", endpoint=sites.endpoint("cse"), api_key="nope", engine_id="cx"),
            tags="anime")


def test_access_denied_sentences_for_danbooru_and_gelbooru(sites, tmp_path):
    sites.auth["danbooru"] = ("artist", "good-key")
    sites.auth["safebooru"] = ("42", "good-key")
    with pytest.raises(AccessDeniedError) as error:
        run(tmp_path / "a", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru"), login="artist", api_key="bad"))
    assert str(error.value) == ("Danbooru refused the request (HTTP 401): check the login and API key "
                                "(from your Danbooru profile), or leave both empty.")
    with pytest.raises(AccessDeniedError, match="Gelbooru needs api_key and user_id"):
        run(tmp_path / "b", SourceSpec("safebooru", endpoint=sites.endpoint("safebooru")))
    result = run(tmp_path / "c", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru"), login="artist",
                                            api_key="good-key"), tags="a b")
    assert result.images == 0
    assert sites.requests_to("/danbooru/posts.json")[-1]["query"]["tags"] == "a b rating:g"  # members get more tags
    run(tmp_path / "d", SourceSpec("safebooru", endpoint=sites.endpoint("safebooru"), login="42", api_key="good-key"))


def test_unreachable_slow_and_broken_sites_are_one_sentence(sites, tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(SourceError, match=rf"^Cannot reach Danbooru at 127.0.0.1:{port}: check the internet"):
        run(tmp_path / "a", SourceSpec("danbooru", endpoint=f"http://127.0.0.1:{port}"))
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with pytest.raises(SourceError, match=r"did not answer within 0.3 s"):
            run(tmp_path / "b", SourceSpec("konachan", endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}"),
                network=NetworkSettings(rate_limit=0, timeout_s=0.3, retries=1, backoff_s=0))
    sites.api_fail_first["/danbooru/posts.json"] = [500, 500, 500]
    with pytest.raises(SourceError, match=r"Danbooru is having trouble \(HTTP 500\) even after 2 retries"):
        run(tmp_path / "c", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru")))
    with pytest.raises(SourceError, match="has no API at .* check the endpoint"):
        run(tmp_path / "d", SourceSpec("danbooru", endpoint=sites.url + "/nothing-here"))


def test_local_folder_with_and_without_captions(tmp_path):
    mine = tmp_path / "mine"
    (mine / "sketches").mkdir(parents=True)
    (mine / "a.png").write_bytes(art(100, fmt="PNG"))
    (mine / "a.txt").write_text("my_character, red scarf, highres\n")
    (mine / "sketches" / "b.jpg").write_bytes(art(101))
    (mine / "c.jpg").write_bytes(art(102))
    (mine / "c.txt").write_text("1girl, nude")
    (mine / "d.jpg").write_bytes(b"not really a jpeg")
    (mine / "e.jpg").write_bytes(reencoded(art(101)))
    (mine / "notes.md").write_text("not an image")
    result = run(tmp_path / "ds", SourceSpec("folder", folder=str(mine)))
    assert result.images == 2 and result.rejected == {"blacklisted": 1, "undecodable": 1, "near_duplicate": 1}
    captions = sorted(p.read_text() for p in (tmp_path / "ds").glob("*.txt"))
    assert captions == ["\n", "my character, red scarf\n"]
    assert (mine / "a.png").exists()  # imported by copy; the originals stay


def test_hugging_face_image_files_and_parquet_rows(sites, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    sites.hf_files["inkframe/faces"] = {"faces/a.png": art(110, fmt="PNG"), "faces/a.txt": b"1girl, red_hair",
                                        "faces/b.jpg": art(111), "README.md": b"# faces"}
    table = pa.table({"image": [{"bytes": art(112), "path": "x.jpg"}, {"bytes": art(113), "path": "y.jpg"},
                                {"bytes": b"broken", "path": "z.jpg"}],
                      "text": ["blue_eyes, smile", "nude", "solo"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    sites.hf_files["inkframe/rows"] = {"data/train-00000-of-00001.parquet": buffer.getvalue()}
    endpoint = sites.url + "/hf"
    run(tmp_path / "files", SourceSpec("hf", endpoint=endpoint, dataset="inkframe/faces"))
    assert sorted(p.read_text() for p in (tmp_path / "files").glob("*.txt")) == ["\n", "1girl, red hair\n"]
    rows = run(tmp_path / "rows", SourceSpec("hf", endpoint=endpoint, dataset="inkframe/rows"))
    assert rows.images == 1 and rows.rejected == {"blacklisted": 1, "undecodable": 1}
    assert [p.read_text() for p in (tmp_path / "rows").glob("*.txt")] == ["blue eyes, smile\n"]
    with pytest.raises(SourceError, match="'inkframe/missing' does not exist or is private"):
        run(tmp_path / "missing", SourceSpec("hf", endpoint=endpoint, dataset="inkframe/missing"))
    with pytest.raises(OfflineError, match="is offline"):
        collect(CollectRequest(out_dir=tmp_path / "off", sources=(SourceSpec("hf"),)), offline=True)


def test_disk_full_is_one_sentence_and_the_rerun_is_clean(sites, tmp_path, monkeypatch):
    import errno
    import os

    from engines.dataset.errors import DiskFullError

    scenario = danbooru_scenario(sites, valid=4, with_slow=False)
    out, spec = tmp_path / "ds", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru"))
    real_replace, calls = os.replace, []

    def full_disk(src, dst):
        calls.append(dst)
        if str(dst).endswith(".jpg") and len(calls) > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(DiskFullError, match=r"^The disk holding .* is full: free some space and run again"):
        run(out, spec)
    monkeypatch.setattr(os, "replace", real_replace)
    assert 1 <= len(kept_stems(out)) < 4
    run(out, spec)
    assert kept_stems(out) == scenario.kept_stems()


def test_cancel_keeps_what_was_saved_and_resumes(sites, tmp_path):
    from engines.errors import Cancelled
    from engines.progress import CancelToken

    scenario = danbooru_scenario(sites, valid=4, with_slow=False)
    out, spec = tmp_path / "ds", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru"))
    cancel = CancelToken()

    def on_step(step, total, message="", preview=None):
        if step >= 2:
            cancel.cancel()

    request = CollectRequest(out_dir=out, sources=(spec,), network=FAST)
    with pytest.raises(Cancelled):
        collect(request, on_step, cancel)
    assert len(kept_stems(out)) == 2
    assert json.loads((out / "dataset.json").read_text())["images"] == 2
    collect(request)
    assert kept_stems(out) == scenario.kept_stems()


def test_thresholds_from_the_request_are_used(sites, tmp_path):
    danbooru_scenario(sites, valid=3, with_slow=False)
    lenient = QualityThresholds(min_long_edge=200, min_short_edge=100, max_aspect=5, min_sharpness=0.1,
                                min_colour_std=1)
    result = run(tmp_path / "ds", SourceSpec("danbooru", endpoint=sites.endpoint("danbooru")), thresholds=lenient)
    assert result.images == 6  # 3 good + small, aspect and blurry pass now; flat (std 0) still fails
    assert "flat" in result.rejected and "blurry" not in result.rejected


def test_a_failing_site_is_skipped_while_another_carries_on(sites, tmp_path):
    scenario = danbooru_scenario(sites, valid=3, with_slow=False)
    sites.auth["wallhaven"] = ("", "secret")
    result = run(tmp_path / "ds", SourceSpec("wallhaven", endpoint=sites.endpoint("wallhaven"), api_key="wrong"),
                 SourceSpec("danbooru", endpoint=sites.endpoint("danbooru")))
    assert kept_stems(tmp_path / "ds") == scenario.kept_stems()
    assert result.problems == ["Wallhaven was skipped: Wallhaven refused the request (HTTP 401): Wallhaven did "
                               "not accept the API key: check it in your wallhaven.cc account settings, or leave "
                               "it empty."]
    assert "Wallhaven was skipped" in result.summary()
