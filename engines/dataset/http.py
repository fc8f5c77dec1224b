"""Talking to image sites politely: one requests Session with urllib3 Retry, a per-host rate limit,
timeouts, a User-Agent that names the studio, and downloads that land in ``.part`` files.

Boorus block clients that pretend to be a browser and ask API users to identify themselves, so the
User-Agent says who we are. urllib3's Retry handles 429 and 5xx with exponential back-off and honours
Retry-After (capped, so one odd header cannot stall a run for an hour). requests is imported lazily:
importing this module costs nothing until a collection starts.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from engines import __version__
from engines.dataset.errors import AccessDeniedError, DiskFullError, DownloadFailed, SourceError
from engines.dataset.request import NetworkSettings
from engines.errors import StudioError
from engines.progress import CancelToken

log = logging.getLogger(__name__)

USER_AGENT = f"InkframeStudio/{__version__} (dataset collector of a local art studio; python-requests)"
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 120.0
MAX_IMAGE_BYTES = 100 * 2**20
CHUNK_BYTES = 256 * 2**10


def host_of(url: str) -> str:
    return urlsplit(url).netloc.lower()


class RateLimiter:
    """At most ``per_second`` requests to each host; waiting honours the cancel token."""

    def __init__(self, per_second: float, cancel: Optional[CancelToken] = None) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.cancel = cancel
        self._next: dict[str, float] = {}
        self._host_interval: dict[str, float] = {}
        self._lock = threading.Lock()

    def slow_down(self, host: str, seconds: float) -> None:
        """A site with a stricter published limit (Wallhaven: 45 a minute) gets at least this spacing."""
        if self.interval:
            self._host_interval[host] = max(self.interval, seconds)

    def wait(self, host: str) -> None:
        interval = self._host_interval.get(host, self.interval)
        if not interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + interval
        while True:
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            left = start - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))


def _retry(network: NetworkSettings):
    from urllib3.util.retry import Retry

    class CappedRetry(Retry):
        def get_retry_after(self, response):  # type: ignore[override]
            value = super().get_retry_after(response)
            return None if value is None else min(value, MAX_RETRY_AFTER_S)

    return CappedRetry(
        total=network.retries, connect=network.retries, read=network.retries, status=network.retries,
        backoff_factor=network.backoff_s, backoff_max=60.0, status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}), respect_retry_after_header=True,
        raise_on_status=False,
    )


_SECRET_PARAMS = re.compile(r"((?:api_?key|apikey|key|user_id|login|password_hash)=)[^&\s'\"]+", re.I)


class _RedactKeys(logging.Filter):
    """urllib3's retry warnings print the request URL; Gelbooru's key can only travel in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_SECRET_PARAMS.sub(r"\1***", a) if isinstance(a, str) else a for a in args)
        return True


def _redact_urllib3_logs() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactKeys) for f in logger.filters):
        logger.addFilter(_RedactKeys())


def write_error(error: OSError, where: Path) -> StudioError:
    """The sentence for a failed write in the dataset folder (disk full, permissions)."""
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return DiskFullError(f"The disk holding {where} is full: free some space and run again; "
                             "everything kept so far is safe.")
    return StudioError(f"Cannot write in {where} ({error.strerror or error}): check the folder's permissions.")


class HttpClient:
    """GET JSON from site APIs and stream images to disk, with the network settings of a request."""

    def __init__(self, network: NetworkSettings, cancel: Optional[CancelToken] = None) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.network = network
        self.cancel = cancel
        self.limiter = RateLimiter(network.rate_limit, cancel)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(max_retries=_retry(network), pool_maxsize=4)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        _redact_urllib3_logs()
        self.timeout = (min(10.0, network.timeout_s), network.timeout_s)

    def close(self) -> None:
        self.session.close()

    # --- site APIs ---------------------------------------------------------------------------------

    def get_json(self, url: str, params: Any = None, *, site: str, auth: Any = None,
                 headers: Optional[dict] = None, auth_hint: str = "check the API key.") -> Any:
        """The decoded JSON of one API page (None for an empty body); every failure is one sentence.

        Sentences name ``url`` without its query string: that is where some APIs want their key.
        """
        import requests

        self.limiter.wait(host_of(url))
        try:
            response = self.session.get(url, params=params, auth=auth, timeout=self.timeout,
                                        headers={"Accept": "application/json", **(headers or {})})
        except requests.exceptions.RequestException as error:
            raise self._unreachable(site, url, error) from error
        code = response.status_code
        if code in (401, 403):
            raise AccessDeniedError(f"{site} refused the request (HTTP {code}): {auth_hint}")
        if code == 429:
            raise SourceError(f"{site} still answers 'too many requests' (HTTP 429) after "
                              f"{self.network.retries} retries: wait a few minutes or lower the rate limit.")
        if code >= 500:
            raise SourceError(f"{site} is having trouble (HTTP {code}) even after {self.network.retries} "
                              "retries: try again later.")
        if code == 404:
            raise SourceError(f"{site} has no API at {url} (HTTP 404): check the endpoint.")
        if code >= 400:
            raise SourceError(f"{site} rejected the search (HTTP {code}: {_api_message(response)}).")
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise SourceError(f"{site} answered {url} with something that is not JSON: "
                              "check the endpoint.") from None

    def _unreachable(self, site: str, url: str, error: Exception) -> SourceError:
        import requests

        text = str(error).lower()
        if isinstance(error, requests.exceptions.Timeout) or "timed out" in text or "timeout" in text:
            return SourceError(f"{site} ({host_of(url)}) did not answer within {self.network.timeout_s:g} s, "
                               f"{self.network.retries} retries included: try again later or raise the timeout.")
        return SourceError(f"Cannot reach {site} at {host_of(url)}: check the internet connection, "
                           "or the endpoint if you set one.")

    # --- images ------------------------------------------------------------------------------------

    def download(self, url: str, part: Path) -> tuple[str, int]:
        """Stream ``url`` into ``part`` (fsynced); return its MD5 and size, or raise DownloadFailed.

        urllib3 already retried the request itself; a body that breaks off half-way is retried here.
        """
        import requests

        last = "no answer"
        for attempt in range(self.network.retries + 1):
            if attempt:
                self._sleep(self.network.backoff_s * 2 ** (attempt - 1))
            self.limiter.wait(host_of(url))
            try:
                response = self.session.get(url, stream=True, timeout=self.timeout)
            except requests.exceptions.RequestException as error:
                raise DownloadFailed(_short(error)) from error
            with response:
                if response.status_code != 200:
                    raise DownloadFailed(f"HTTP {response.status_code}")
                length = int(response.headers.get("Content-Length") or 0)
                if length > MAX_IMAGE_BYTES:
                    raise DownloadFailed(f"{length} bytes is larger than an image should be")
                try:
                    return self._stream_to(response, part)
                except (requests.exceptions.RequestException, ConnectionError) as error:
                    part.unlink(missing_ok=True)
                    last = _short(error)
                    log.info("download of %s broke off (%s), attempt %d", url, last, attempt + 1)
        raise DownloadFailed(last)

    def _stream_to(self, response: Any, part: Path) -> tuple[str, int]:
        import requests

        digest, size = hashlib.md5(), 0
        try:
            with open(part, "wb") as handle:
                for chunk in response.iter_content(CHUNK_BYTES):
                    if self.cancel is not None and self.cancel.cancelled:
                        handle.close()
                        part.unlink(missing_ok=True)
                        self.cancel.raise_if_cancelled()
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise DownloadFailed(f"more than {MAX_IMAGE_BYTES // 2**20} MB")
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except (requests.exceptions.RequestException, ConnectionError):
            part.unlink(missing_ok=True)  # requests' errors are OSErrors too: the network, not the disk
            raise
        except OSError as error:
            part.unlink(missing_ok=True)
            raise write_error(error, part.parent) from error
        except DownloadFailed:
            part.unlink(missing_ok=True)
            raise
        return digest.hexdigest(), size

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            time.sleep(min(left, 0.1))


def _api_message(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason or "no reason given"
    if isinstance(body, dict):
        for key in ("message", "error", "reason"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if value:
                return str(value)[:200]
    return response.reason or "no reason given"


def _short(error: BaseException) -> str:
    text = str(error)
    if "timed out" in text.lower() or "timeout" in type(error).__name__.lower():
        return "timed out"
    return f"{type(error).__name__}: {text[:160]}"

