"""A local stand-in for every site the dataset engine talks to, and the images it serves.

One ``ThreadingHTTPServer`` on 127.0.0.1 speaks the JSON shapes of Danbooru (``/danbooru``),
Safebooru.org's Gelbooru API (``/safebooru``), Konachan and Yande.re (``/konachan``, ``/yandere``),
Wallhaven (``/wallhaven``), Google Custom Search (``/cse``) and the Hugging Face Hub (``/hf``), and
serves images from ``/img/<name>`` with scripted misbehaviour: 429 with Retry-After, 500s, a
server that never answers in time. Every request is logged with its headers for the tests to read.

Images are drawn with numpy and PIL (a gradient, outlined shapes and grain), so they pass the
sharpness and colour checks, and differ enough in layout that their perceptual hashes are far apart.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

# --- images ---------------------------------------------------------------------------------------


def art_image(seed: int, size: tuple[int, int] = (640, 480), noise: float = 6.0):
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(-1, 1, 2)
    t = a * xx / w + b * yy / h
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = Image.fromarray((c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = [x0, y0, x0 + rng.uniform(w * 0.1, w * 0.5), y0 + rng.uniform(h * 0.1, h * 0.5)]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour, outline=(0, 0, 0), width=3)
    if noise:
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, noise, (h, w, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image


def encode(image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" and not options else options))
    return buffer.getvalue()


def art(seed: int, size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> bytes:
    return encode(art_image(seed, size), fmt)


def blurry(seed: int) -> bytes:
    from PIL import ImageFilter

    return encode(art_image(seed, noise=0).filter(ImageFilter.GaussianBlur(6)))


def flat(colour=(120, 30, 200)) -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (640, 480), colour))


def reencoded(data: bytes) -> bytes:
    """The same picture resized and saved at a lower quality: a near duplicate, not an exact one."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    return encode(image.resize((image.width * 9 // 10, image.height * 9 // 10)), quality=70)


def truncated(data: bytes) -> bytes:
    return data[: int(len(data) * 0.6)]


def corrupt() -> bytes:
    return b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- the server -----------------------------------------------------------------------------------


@dataclass
class Served:
    data: bytes
    content_type: str = "image/jpeg"
    fail_first: list[int] = field(default_factory=list)  # statuses answered before the real file
    always: Optional[int] = None                          # this status every time
    delay_s: float = 0.0                                  # sleep before answering (timeouts)
    retry_after: str = "1"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are part of the tests


class FakeSites:
    def __init__(self, page_size: int = 5) -> None:
        self.page_size = page_size
        self.images: dict[str, Served] = {}
        self.danbooru: list[dict] = []
        self.safebooru: list[dict] = []
        self.moebooru: dict[str, list[dict]] = {"konachan": [], "yandere": []}
        self.wallhaven: list[dict] = []
        self.wallhaven_tags: dict[str, list[dict]] = {}
        self.cse: list[dict] = []
        self.hf_files: dict[str, dict[str, bytes]] = {}  # repo id -> path -> bytes
        self.api_fail_first: dict[str, list[int]] = {}    # path -> statuses before the real answer
        self.auth: dict[str, tuple[str, str]] = {}        # site -> (login/user_id, key) it requires
        self.image_delay_s = 0.0
        self.log: list[dict] = []
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeSites":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def endpoint(self, site: str) -> str:
        return f"{self.url}/{site}"

    def add_image(self, name: str, data: bytes, **behaviour: Any) -> str:
        kind = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
        self.images[name] = Served(data, kind, **behaviour)
        return f"{self.url}/img/{name}"

    def requests_to(self, prefix: str) -> list[dict]:
        with self._lock:
            return [r for r in self.log if r["path"].startswith(prefix)]

    # --- routing ---------------------------------------------------------------------------------

    def _handler(self):
        sites = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._route(head=True)

            def do_GET(self) -> None:
                self._route(head=False)

            def _route(self, head: bool) -> None:
                parts = urlsplit(self.path)
                path, query = unquote(parts.path), {k: v[-1] for k, v in parse_qs(parts.query).items()}
                with sites._lock:
                    sites.log.append({"path": path, "query": query, "headers": dict(self.headers),
                                      "time": time.monotonic(), "method": "HEAD" if head else "GET"})
                    failures = sites.api_fail_first.get(path)
                    status = failures.pop(0) if failures else None
                try:
                    if status:
                        retry = {"Retry-After": "1"} if status in (429, 503) else {}
                        return self._send(status, b'{"message": "scripted failure"}', headers=retry)
                    if path.startswith("/img/"):
                        return self._image(path[5:], head)
                    if path.startswith("/safebooru/images/"):  # Safebooru.org: /images/<directory>/<image>
                        return self._image(path.rsplit("/", 1)[1], head)
                    if path.startswith("/hf/"):
                        return self._hf(path[3:], head)
                    body = sites._api(path, query, self.headers)
                    if isinstance(body, tuple):
                        return self._send(body[0], json.dumps(body[1]).encode())
                    self._send(200, body if isinstance(body, bytes) else json.dumps(body).encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json",
                      headers: Optional[dict] = None, head: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _image(self, name: str, head: bool) -> None:
                served = sites.images.get(name)
                if served is None:
                    return self._send(404, b"not found", "text/plain")
                time.sleep(served.delay_s or sites.image_delay_s)
                with sites._lock:
                    status = served.fail_first.pop(0) if served.fail_first else served.always
                if status:
                    retry = {"Retry-After": served.retry_after} if status in (429, 503) else {}
                    return self._send(status, b"busy", "text/plain", retry)
                self._send(200, served.data, served.content_type, head=head)

            def _hf(self, path: str, head: bool) -> None:
                # /api/datasets/<owner>/<name>/tree/<rev>  and  /datasets/<owner>/<name>/resolve/<rev>/<file>
                bits = path.strip("/").split("/")
                if bits[:2] == ["api", "datasets"] and len(bits) >= 6 and bits[4] == "tree":
                    repo = "/".join(bits[2:4])
                    if repo not in sites.hf_files:
                        return self._send(404, b'{"error": "Repository not found"}',
                                          headers={"X-Error-Code": "RepoNotFound"})
                    listing = [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                               for p, d in sorted(sites.hf_files[repo].items())]
                    return self._send(200, json.dumps(listing).encode())
                if bits[0] == "datasets" and len(bits) >= 6 and bits[3] == "resolve":
                    repo, name = "/".join(bits[1:3]), "/".join(bits[5:])
                    data = sites.hf_files.get(repo, {}).get(name)
                    if data is None:
                        return self._send(404, b'{"error": "Entry not found"}',
                                          headers={"X-Error-Code": "EntryNotFound"})
                    etag = hashlib.sha256(data).hexdigest()
                    headers = {"X-Repo-Commit": "0" * 40, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
                    return self._send(200, data, "application/octet-stream", headers, head=head)
                self._send(404, b"{}")

        return Handler

    def _api(self, path: str, query: dict, headers: Any):
        if path == "/danbooru/posts.json":
            if "danbooru" in self.auth and not _basic_auth_ok(headers, self.auth["danbooru"]):
                return 401, {"success": False, "message": "SessionLoader::AuthenticationFailure"}
            posts = sorted(self.danbooru, key=lambda p: -p["id"])
            page = query.get("page", "1")
            if page.startswith("b"):
                posts = [p for p in posts if p["id"] < int(page[1:])]
            else:
                posts = posts[(int(page) - 1) * self._limit(query, 200):]
            return posts[: self._limit(query, 200)]
        if path == "/safebooru/index.php":
            if "safebooru" in self.auth and (query.get("user_id"), query.get("api_key")) != self.auth["safebooru"]:
                return 401, {"message": "Unauthorized"}
            limit = self._limit(query, 100)
            start = int(query.get("pid", 0)) * limit
            page = self.safebooru[start:start + limit]
            return page if page else b""  # Safebooru.org answers an empty body past the end
        for site in ("konachan", "yandere"):
            if path == f"/{site}/post.json":
                limit = self._limit(query, 100)
                start = (int(query.get("page", 1)) - 1) * limit
                return self.moebooru[site][start:start + limit]
        if path == "/wallhaven/api/v1/search":
            if query.get("purity") != "100" or query.get("categories") != "010":
                return 400, {"error": "the test server only serves SFW anime"}
            if "wallhaven" in self.auth and headers.get("X-API-Key") != self.auth["wallhaven"][1]:
                return 401, {"error": "Unauthorized"}
            size = self.page_size
            page = int(query.get("page", 1))
            last = max(1, -(-len(self.wallhaven) // size))
            return {"data": self.wallhaven[(page - 1) * size: page * size],
                    "meta": {"current_page": page, "last_page": last, "per_page": size, "total": len(self.wallhaven)}}
        if path.startswith("/wallhaven/api/v1/w/"):
            wid = path.rsplit("/", 1)[1]
            return {"data": {"id": wid, "tags": self.wallhaven_tags.get(wid, [])}}
        if path == "/cse/customsearch/v1":
            if (headers.get("X-goog-api-key"), query.get("cx")) != self.auth.get("cse", ("key", "cx")):
                return 403, {"error": {"code": 403, "message": "API key not valid."}}
            start = int(query.get("start", 1))
            items = self.cse[start - 1: start - 1 + 10]
            body: dict = {"items": items, "queries": {}}
            if start - 1 + 10 < len(self.cse):
                body["queries"]["nextPage"] = [{"startIndex": start + 10}]
            return body
        return 404, {"error": f"no route {path}"}

    def _limit(self, query: dict, default: int) -> int:
        return min(int(query.get("limit", default)), self.page_size)


def _basic_auth_ok(headers: Any, expected: tuple[str, str]) -> bool:
    import base64

    value = headers.get("Authorization", "")
    if not value.startswith("Basic "):
        return False
    return base64.b64decode(value[6:]).decode() == f"{expected[0]}:{expected[1]}"


# --- posts in each site's shape -------------------------------------------------------------------


def danbooru_post(post_id: int, url: Optional[str], data: Optional[bytes], *, rating: str = "g",
                  general: str = "1girl solo smile highres", character: str = "hatsune_miku",
                  copyright: str = "vocaloid", meta: str = "highres commentary", score: int = 10,
                  md5_value: Optional[str] = None, size: tuple[int, int] = (640, 480)) -> dict:
    post = {
        "id": post_id, "rating": rating, "score": score, "image_width": size[0], "image_height": size[1],
        "tag_string": f"{character} {copyright} {general} {meta}", "tag_string_general": general,
        "tag_string_character": character, "tag_string_copyright": copyright,
        "tag_string_artist": "some_artist", "tag_string_meta": meta, "source": "https://example.com/art",
        "created_at": "2021-05-01T10:00:00.000-04:00", "file_ext": (url or ".jpg").rsplit(".", 1)[-1],
    }
    if url is not None:
        post["file_url"] = url
        post["md5"] = md5_value or (md5(data) if data is not None else None)
    return post


@dataclass
class Scenario:
    """Posts on the fake Danbooru with every kind of bad post, and the names that must be kept."""

    kept: list[str]
    images: dict[str, bytes]
    ids: dict[str, int]

    def kept_stems(self, source: str = "danbooru") -> set[str]:
        return {f"{source}_{self.ids[name]}" for name in self.kept}


def danbooru_scenario(sites: FakeSites, valid: int = 10, *, seed: int = 0, first_id: int = 1000,
                      with_slow: bool = True, flaky: bool = True) -> Scenario:
    """``valid`` good images, then every bad case, interleaved so paging crosses them.

    ``flaky`` makes ok3 answer 429 and ok4 answer 500 once before their file (needs valid > 4);
    ``with_slow`` adds an image that never arrives within the timeout.
    """
    images: dict[str, bytes] = {f"ok{i}": art(seed + i) for i in range(valid)}
    extra = {
        "dup_exact": images["ok1"], "dup_reencoded": reencoded(images["ok2"]),
        "corrupt": corrupt(), "truncated": truncated(art(seed + 500)), "small": art(seed + 501, (300, 200)),
        "blurry": blurry(seed + 502), "flat": flat(), "aspect": art(seed + 503, (1200, 260)),
        "blacklisted": art(seed + 504), "unsafe_q": art(seed + 505), "unsafe_e": art(seed + 506),
        "md5_bad": art(seed + 507), "always500": art(seed + 508), "slow": art(seed + 509),
        "video": b"\x00\x00\x00\x18ftypmp42",
    }
    behaviour: dict[str, dict] = {"always500": {"always": 500}, "slow": {"delay_s": 3.0}}
    if flaky and valid > 4:
        behaviour.update({"ok3": {"fail_first": [429]}, "ok4": {"fail_first": [500]}})
    posts: list[tuple[str, dict]] = []
    ids: dict[str, int] = {}
    order = list(images) + list(extra)
    # Bad posts go between the good ones (after the ones they duplicate).
    mixed = [order[0], order[1], "dup_exact", order[2], "dup_reencoded", "corrupt", "truncated"]
    mixed += [n for n in order[3:valid]] + [n for n in extra if n not in mixed]
    if not with_slow:
        mixed.remove("slow")
    mixed.insert(min(5, len(mixed)), "no_file")
    for index, name in enumerate(mixed):
        post_id = ids[name] = first_id + len(mixed) - index  # Danbooru lists newest (highest id) first
        if name == "no_file":
            posts.append((name, danbooru_post(post_id, None, None)))
            continue
        data = images.get(name, extra.get(name))
        ext = "mp4" if name == "video" else "jpg"
        url = sites.add_image(f"{name}-{post_id}.{ext}", data, **behaviour.get(name, {}))
        kwargs: dict[str, Any] = {}
        if name == "blacklisted":
            kwargs["general"] = "1girl completely_nude solo"
        if name.startswith("unsafe"):
            kwargs["rating"] = name[-1]
        if name == "md5_bad":
            kwargs["md5_value"] = "0" * 32
        if name == "small":
            kwargs["size"] = (0, 0)  # the listing hides the size: the file check must catch it
        posts.append((name, danbooru_post(post_id, url, data, **kwargs)))
    sites.danbooru.extend(post for _, post in posts)
    return Scenario(kept=[f"ok{i}" for i in range(valid)], images={**images, **extra}, ids=ids)
