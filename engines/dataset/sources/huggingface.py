"""A Hugging Face image dataset (default ``huggan/animeface-dataset``), through huggingface_hub.

Two layouts are read: image files in the repo (with ``.txt`` captions beside them if any), and
parquet shards with an image column (``datasets``' ``{"bytes", "path"}`` struct) whose text columns
become the caption. Shards are downloaded whole into the dataset's ``.inkframe/hf`` folder and kept
there, so a resumed run reads them again without the network. The model store's rules apply:
``--offline`` never touches the network, ``endpoint`` points at a mirror, and a failure is one
sentence that says what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from engines.dataset.captions import TagGroups
from engines.dataset.errors import AccessDeniedError, DownloadFailed, SourceError
from engines.dataset.http import write_error
from engines.dataset.sources import DEFAULT_HF_DATASET
from engines.dataset.sources.base import Post, Source
from engines.errors import OfflineError, StudioError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
TEXT_COLUMNS = ("tags", "text", "caption", "prompt", "label", "name")
BATCH_ROWS = 32
T = TypeVar("T")


class HuggingFaceSource(Source):
    label = "Hugging Face"

    @property
    def repo(self) -> str:
        return self.spec.dataset or DEFAULT_HF_DATASET

    def _hub_endpoint(self):
        return self.spec.endpoint.rstrip("/") or None

    def _local_dir(self) -> Path:
        return self.work_dir / "hf" / re.sub(r"[^\w.-]+", "--", self.repo)

    def _hub(self, call: Callable[[], T]) -> T:
        """Run a huggingface_hub call; its failures become the store's kind of sentence."""
        if self.offline:
            raise OfflineError(f"Hugging Face dataset '{self.repo}' cannot be fetched because the studio is "
                               "offline: run without --offline, or import its images with the folder source.")
        from huggingface_hub import errors as hub_errors

        from engines.models.files import network_errors

        try:
            return call()
        except hub_errors.GatedRepoError as error:
            raise AccessDeniedError(f"Hugging Face dataset '{self.repo}' needs you to accept its terms on "
                                    "huggingface.co and log in (hf auth login).") from error
        except hub_errors.RepositoryNotFoundError as error:
            raise SourceError(f"Hugging Face dataset '{self.repo}' does not exist or is private: "
                              "check the id.") from error
        except hub_errors.OfflineModeIsEnabled as error:
            raise OfflineError(f"Hugging Face dataset '{self.repo}' cannot be fetched because HF_HUB_OFFLINE "
                               "is set: unset it, or import its images with the folder source.") from error
        except (hub_errors.HfHubHTTPError, *network_errors()) as error:
            raise OfflineError(f"Hugging Face dataset '{self.repo}' cannot be reached: check the internet "
                               "connection (or the endpoint), or download it on a connected machine and "
                               "import it with the folder source.") from error
        except OSError as error:
            raise write_error(error, self._local_dir()) from error

    def _download(self, filename: str) -> Path:
        from huggingface_hub import hf_hub_download

        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        return Path(self._hub(lambda: hf_hub_download(
            self.repo, filename, repo_type="dataset", local_dir=self._local_dir(),
            endpoint=self._hub_endpoint(), etag_timeout=self.request.network.timeout_s)))

    # --- posts -------------------------------------------------------------------------------------

    def posts(self) -> Iterator[Post]:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self._hub_endpoint())
        files = self._hub(lambda: api.list_repo_files(self.repo, repo_type="dataset"))
        images = sorted(f for f in files if f.lower().endswith(IMAGE_SUFFIXES))
        shards = sorted(f for f in files if f.lower().endswith(".parquet"))
        if not images and not shards:
            raise SourceError(f"Hugging Face dataset '{self.repo}' has neither image files nor parquet "
                              "shards that the studio can read.")
        captions = {f for f in files if f.lower().endswith(".txt")}
        base = (self._hub_endpoint() or "https://huggingface.co")
        for name in images:
            caption = name.rsplit(".", 1)[0] + ".txt"
            yield Post(source=self.name, post_id=name, file_url=f"{base}/datasets/{self.repo}/resolve/main/{name}",
                       page_url=f"{base}/datasets/{self.repo}/blob/main/{name}",
                       caption_file=caption if caption in captions else "")
        for shard in shards:
            yield from self._rows(shard, self._download(shard), base)

    def _rows(self, shard: str, path: Path, base: str) -> Iterator[Post]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SourceError(f"Hugging Face dataset '{self.repo}' is stored as parquet, which needs pyarrow: "
                              "pip install pyarrow.") from None
        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:  # noqa: BLE001 - pyarrow's errors for a damaged file vary
            path.unlink(missing_ok=True)
            raise SourceError(f"The shard {shard} of '{self.repo}' is damaged; it was deleted, so run again "
                              "to download it anew.") from error
        schema = parquet.schema_arrow
        image_column = next((f.name for f in schema if _is_image_field(f)), None)
        if image_column is None:
            raise SourceError(f"Hugging Face dataset '{self.repo}' has no image column in {shard}.")
        text_columns = [c for c in TEXT_COLUMNS if c in schema.names and c != image_column]
        row = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[image_column, *text_columns]):
            records = batch.to_pylist()
            for record in records:
                data = _image_bytes(record.get(image_column))
                words = tuple(t.strip() for c in text_columns for t in str(record.get(c) or "").split(",")
                              if t.strip())
                yield Post(source=self.name, post_id=f"{shard}#{row}", file_url=None, data=data,
                           tags=TagGroups(general=words),
                           page_url=f"{base}/datasets/{self.repo}/blob/main/{shard}#row={row}")
                row += 1

    def enrich(self, post: Post) -> Post:
        """Image-file repos: read the caption file beside the image."""
        if not post.caption_file:
            return post
        from dataclasses import replace

        text = self._download(post.caption_file).read_text(encoding="utf-8", errors="replace")
        words = tuple(t.strip() for t in text.replace("\n", ",").split(",") if t.strip())
        return replace(post, caption_file="", tags=TagGroups(general=words))

    def fetch(self, post: Post, part: Path) -> tuple[str, int]:
        if post.data is not None:
            data = post.data
            try:
                with open(part, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                part.unlink(missing_ok=True)
                raise write_error(error, part.parent) from error
            return hashlib.md5(data).hexdigest(), len(data)
        try:
            local = self._download(post.post_id)
        except OfflineError as error:
            raise DownloadFailed(str(error)) from error
        except StudioError:
            raise
        try:
            shutil.move(str(local), part)
        except OSError as error:
            raise write_error(error, part.parent) from error
        digest = hashlib.md5(part.read_bytes()).hexdigest()
        return digest, part.stat().st_size


def _is_image_field(field: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(field.type):
        return any(child.name == "bytes" for child in field.type)
    return field.name in ("image", "img") and pa.types.is_binary(field.type)


def _image_bytes(value: Any):
    if isinstance(value, dict):
        return value.get("bytes") or b""
    return value if isinstance(value, (bytes, bytearray)) else b""
