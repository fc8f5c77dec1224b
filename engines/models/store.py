"""The model store: where models live, how a reference becomes a local path, and loading it safely.

A reference is what the artist types: a Hugging Face id (``owner/name``), a diffusers folder, or a
single ``.safetensors`` checkpoint, given as a path or as a name under the models folder. Hub ids
download into ``<models>/<owner>--<name>`` with huggingface_hub, so the artist can also put a
folder there by hand. Weights load only from safetensors or through ``torch.load(weights_only=True)``:
a checkpoint from the internet never gets to run code. Loaded weights are copied out of their
memory-mapped files into ordinary memory (``engines.models.residency`` says why), so a model file
can be replaced while the studio runs; ``files_for(ref)`` names the files to watch for that.
Nothing heavy is imported at module level.

The file-level helpers (which files to download, safetensors checks, error sentences) live in
``engines.models.files``; the package exports what callers need (``from engines.models import ModelStore``).
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engines.errors import (
    CorruptModelError,
    InvalidRequestError,
    ModelNotFoundError,
    OfflineError,
    StudioError,
)
from engines.models.files import (
    CHECKPOINT_SUFFIXES,
    CONFIG_FILES,
    DOWNLOADING_MARKER,
    SAFE_SUFFIXES,
    LazyCheckpoint,
    check_safetensors_file,
    choose_download_files,
    folder_model_files,
    is_complete,
    load_errors,
    network_errors,
    progress_bar_class,
    short_error,
)
from engines.models.residency import read_into_memory
from engines.progress import CancelToken, OnStep, no_progress

KNOWN_MODELS_FILE = Path(__file__).resolve().parents[2] / "assets" / "known_models.json"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass(frozen=True)
class ModelSource:
    """What a reference resolved to."""

    ref: str
    kind: Literal["hub", "folder", "single_file"]
    path: Path | None  # None for a hub id that is not downloaded yet
    repo_id: str | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class KnownModel:
    """A model the studio knows by name (from assets/known_models.json)."""

    name: str
    repo_id: str
    role: str
    description: str
    approx_size_gb: float

# --- the store -------------------------------------------------------------------------------------


def derive_pipeline(pipeline_cls: Any, base: Any, **kwargs: Any) -> Any:
    """A ``pipeline_cls`` built on ``base``'s very components (what ``from_pipe`` does), without copies or casts.

    diffusers 0.42's ``from_pipe`` ends with ``pipeline.to(dtype)``, float32 unless told otherwise:
    an fp16 checkpoint would double in memory, and even with the right dtype the call walks every
    module (20 ms a job on a CPU, and a warning per component each time). Engines derive a pipeline
    per job (engines/sd15/checkpoint.py says why), so it is built here from the components and the
    base's optional settings, as ``from_pipe`` would, and nothing is moved. ``kwargs`` replace
    components (``scheduler=...``) or add the ones ``base`` lacks (``controlnet=...``).
    """
    expected, optional = pipeline_cls._get_signature_keys(pipeline_cls)
    accepted = set(expected) | set(optional)
    values = {name: component for name, component in base.components.items() if name in accepted}
    for name in optional:
        if name not in values and name in base.config and not name.startswith("_"):
            values[name] = base.config[name]
    values.update(kwargs)
    missing = set(expected) - set(values) - set(getattr(pipeline_cls, "_optional_components", []))
    if missing:
        raise ValueError(f"{pipeline_cls.__name__} needs {', '.join(sorted(missing))}, which the base pipeline "
                         "lacks; pass them to derive_pipeline.")
    return pipeline_cls(**values)


class ModelStore:
    """Resolves, downloads and loads models; one per process, built in ``app.py``.

    ``offline`` means the network is never touched: hub ids must already be in ``models_dir``.
    ``endpoint`` overrides the Hub address (a mirror; tests point it at a closed port).
    """

    def __init__(
        self, models_dir: Path, *, offline: bool = False, endpoint: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.models_dir = Path(models_dir).expanduser().resolve()
        self.offline = offline
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    # 1. where things are

    def folder_for(self, repo_id: str) -> Path:
        """The folder a hub model downloads into, and where an artist can put it by hand."""
        return self.models_dir / repo_id.replace("/", "--")

    def resolve(self, ref: str) -> ModelSource:
        """Say what ``ref`` is and where it lives, without touching the network."""
        text = (ref or "").strip()
        if not text:
            raise InvalidRequestError(
                "Choose a model: a Hugging Face id like 'owner/name', a folder, or a .safetensors file."
            )
        given = Path(text).expanduser()
        candidates = [given]
        if not given.is_absolute():
            candidates += [self.models_dir / text, self.models_dir / f"{text}.safetensors"]
        for candidate in candidates:
            if candidate.exists():
                return self._local_source(text, candidate.resolve())
        if _HUB_ID.match(text) and not text.lower().endswith(CHECKPOINT_SUFFIXES):
            folder = self.folder_for(text)
            return ModelSource(text, "hub", folder if is_complete(folder) else None, repo_id=text)
        if given.suffix.lower() in CHECKPOINT_SUFFIXES or given.is_absolute() or text.startswith("."):
            raise ModelNotFoundError(
                f"There is no model file or folder at '{text}': check the path, "
                f"or put the model in {self.models_dir}."
            )
        raise ModelNotFoundError(
            f"Model '{text}' is not in {self.models_dir}: put its folder or .safetensors file there, "
            "or use a Hugging Face id like 'owner/name'."
        )

    def _local_source(self, ref: str, path: Path, repo_id: str | None = None) -> ModelSource:
        if path.is_file():
            if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
                raise InvalidRequestError(
                    f"'{path.name}' is not a model file: the studio reads diffusers folders, .safetensors "
                    "checkpoints, and .ckpt/.pt files that hold only weights."
                )
            return ModelSource(ref, "single_file", path, repo_id)
        if (path / DOWNLOADING_MARKER).exists():
            raise ModelNotFoundError(
                f"The download of '{ref}' into {path} was interrupted: start it again to resume it."
            )
        if any((path / name).is_file() for name in CONFIG_FILES):
            return ModelSource(ref, "hub" if repo_id else "folder", path, repo_id)
        checkpoints = sorted(p for p in path.iterdir() if p.suffix.lower() in CHECKPOINT_SUFFIXES)
        safe = [p for p in checkpoints if p.suffix.lower() in SAFE_SUFFIXES]
        if len(safe or checkpoints) == 1:
            return ModelSource(ref, "single_file", (safe or checkpoints)[0], repo_id)
        if checkpoints:
            names = ", ".join(p.name for p in checkpoints[:4])
            raise InvalidRequestError(
                f"Folder {path} holds several checkpoints ({names}): choose one of the files."
            )
        raise ModelNotFoundError(
            f"Folder {path} has no model in it: put a diffusers folder (with model_index.json or "
            "config.json) or a .safetensors checkpoint there."
        )

    def known_models(self) -> list[KnownModel]:
        """The models the studio suggests, from assets/known_models.json."""
        data = json.loads(KNOWN_MODELS_FILE.read_text(encoding="utf-8"))
        return [KnownModel(**entry) for entry in data["models"]]

    def presence(self) -> list[tuple[KnownModel, Path | None]]:
        """Each known model and its local folder, or None when it is not (fully) here; no network."""
        return [
            (model, folder if is_complete(folder) else None)
            for model in self.known_models()
            for folder in [self.folder_for(model.repo_id)]
        ]

    # 2. getting it onto this computer

    def ensure_local(
        self, ref: str, on_step: OnStep = no_progress, cancel: CancelToken | None = None
    ) -> Path:
        """The local path of ``ref``, downloading a hub id first (progress to ``on_step`` and tqdm).

        An interrupted download resumes: files already complete are kept and skipped.
        """
        source = self.resolve(ref)
        if source.path is not None:
            return source.path
        assert source.repo_id is not None  # resolve() leaves only hub ids without a path
        return self._download(source.repo_id, self.folder_for(source.repo_id), on_step, cancel)

    def _download(
        self,
        repo_id: str,
        folder: Path,
        on_step: OnStep = no_progress,
        cancel: CancelToken | None = None,
        *,
        configs_only: bool = False,
    ) -> Path:
        if self.offline:
            raise OfflineError(self._offline_sentence(repo_id, folder, "the studio is offline"))
        if cancel is not None:
            cancel.raise_if_cancelled()
        from huggingface_hub import HfApi, snapshot_download
        from huggingface_hub import errors as hub_errors

        try:
            info = HfApi(endpoint=self.endpoint).model_info(repo_id, timeout=self.timeout_s)
            files = [s.rfilename for s in info.siblings or []]
            # A single-file checkpoint only needs its base model's configs and tokenizer files.
            configs = [f for f in files if f.endswith((".json", ".txt"))]
            wanted = configs if configs_only else choose_download_files(files)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / DOWNLOADING_MARKER).write_text(repo_id, encoding="utf-8")
            snapshot_download(
                repo_id,
                revision=info.sha,
                local_dir=folder,
                # Keeps huggingface_hub's refs inside the models folder instead of ~/.cache.
                cache_dir=self.models_dir / ".hub-cache",
                endpoint=self.endpoint,
                allow_patterns=[glob.escape(f) for f in wanted],
                etag_timeout=self.timeout_s,
                tqdm_class=progress_bar_class(on_step, cancel, repo_id),
            )
        except StudioError:
            raise
        except hub_errors.GatedRepoError as error:
            raise ModelNotFoundError(
                f"Model '{repo_id}' needs you to accept its licence on huggingface.co and log in "
                "(hf auth login) before it can be downloaded."
            ) from error
        except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError) as error:
            raise ModelNotFoundError(
                f"Model '{repo_id}' does not exist on the Hugging Face Hub: check the spelling of the id."
            ) from error
        except (hub_errors.HfHubHTTPError, *network_errors()) as error:
            reason = "the Hugging Face Hub cannot be reached"
            raise OfflineError(self._offline_sentence(repo_id, folder, reason)) from error
        except OSError as error:
            raise StudioError(
                f"Model '{repo_id}' could not be saved in {folder} ({short_error(error)}): free some disk "
                "space or choose another data folder."
            ) from error
        (folder / DOWNLOADING_MARKER).unlink(missing_ok=True)
        on_step(1, 1, f"Downloaded {repo_id}")
        return folder

    def _offline_sentence(self, repo_id: str, folder: Path, reason: str) -> str:
        partly = (folder / DOWNLOADING_MARKER).exists()
        state = "was only partly downloaded" if partly else "is not on this computer"
        return (
            f"Model '{repo_id}' {state} and {reason}: download it on a connected machine, "
            f"or put its folder in {self.folder_for(repo_id)}."
        )

    # 3. loading

    def load_pipeline(
        self, ref: str, pipeline_cls: Any = None, *, torch_dtype: Any = None, **kwargs: Any
    ) -> Any:
        """A diffusers pipeline from a folder or a hub id (``from_pretrained``) or a single file.

        A single file is built with ``from_single_file`` and ``config=`` a local diffusers folder of
        its base model (``kwargs["config"]``, or the base diffusers infers from its keys, found in
        the models folder), so that diffusers never reaches for the network on its own. The weights
        come back read into memory, not mapped from their files.
        """
        source = self._local(ref)
        if source.kind == "single_file":
            import diffusers

            if torch_dtype is not None:
                kwargs["torch_dtype"] = torch_dtype
            self._check_file(source.path)
            config = self._single_file_config(source.path, kwargs.pop("config", None))
            cls = pipeline_cls or diffusers.StableDiffusionPipeline
            with load_errors(ref, source.path):
                pipe = cls.from_single_file(str(source.path), config=str(config), local_files_only=True, **kwargs)
            read_into_memory(pipe)
            return pipe
        import diffusers

        cls = pipeline_cls or diffusers.DiffusionPipeline
        if torch_dtype is not None:
            # diffusers 0.42 renamed from_pretrained's torch_dtype to dtype (single files not yet).
            kwargs["dtype"] = torch_dtype
        with load_errors(ref, source.path):
            safe = self._check_folder(source.path)
            pipe = cls.from_pretrained(str(source.path), use_safetensors=safe, local_files_only=True, **kwargs)
        read_into_memory(pipe)
        return pipe

    def load_model(
        self,
        ref: str,
        model_cls: Any,
        *,
        subfolder: str | None = None,
        torch_dtype: Any = None,
        **kwargs: Any,
    ) -> Any:
        """One model (UNet, ControlNet, MotionAdapter, a transformers model...) from a folder or file.

        Classes without ``from_pretrained`` (sentence-transformers) are called with the local path.
        The weights come back read into memory, not mapped from their files.
        """
        source = self._local(ref)
        if torch_dtype is not None:
            # transformers 5 calls it ``dtype``; diffusers still takes ``torch_dtype``.
            kwargs["dtype" if model_cls.__module__.startswith("transformers") else "torch_dtype"] = (
                torch_dtype
            )
        if subfolder:
            kwargs["subfolder"] = subfolder
        with load_errors(ref, source.path):
            if source.kind == "single_file":
                if not hasattr(model_cls, "from_single_file"):
                    raise InvalidRequestError(
                        f"{model_cls.__name__} cannot be read from the single file '{source.path.name}': "
                        "use its diffusers folder."
                    )
                self._check_file(source.path)
                model = model_cls.from_single_file(str(source.path), local_files_only=True, **kwargs)
            else:
                safe = self._check_folder(source.path)
                if not hasattr(model_cls, "from_pretrained"):
                    model = model_cls(str(source.path), **kwargs)
                else:
                    model = model_cls.from_pretrained(
                        str(source.path), use_safetensors=safe, local_files_only=True, **kwargs
                    )
        read_into_memory(model)
        return model

    def load_state_dict(self, path: Path) -> dict[str, Any]:
        """The tensors of one checkpoint file, read safely (nested ``state_dict`` unwrapped)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"There is no checkpoint file at {path}: check the path.")
        suffix = path.suffix.lower()
        if suffix not in CHECKPOINT_SUFFIXES:
            raise InvalidRequestError(
                f"'{path.name}' is not a checkpoint: use a .safetensors, .ckpt or .pt file."
            )
        self._check_file(path)
        with load_errors(path.name, path):
            if suffix in SAFE_SUFFIXES:
                from safetensors.torch import load_file

                state: Any = load_file(str(path), device="cpu")
            else:
                import torch

                state = torch.load(str(path), map_location="cpu", weights_only=True)
        while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        import torch

        tensors = (
            {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
        )
        if not tensors:
            raise CorruptModelError(f"'{path.name}' holds no weights: download it again or replace {path}.")
        read_into_memory(tensors)
        return tensors

    def files_for(self, ref: str) -> list[Path]:
        """The files loading ``ref`` reads, to notice when one is replaced (``FileStamp``); no network."""
        source = self.resolve(ref)
        if source.path is None:
            return []
        source = self._local_source(ref, source.path, source.repo_id)
        return [source.path] if source.kind == "single_file" else folder_model_files(source.path)

    def _local(self, ref: str) -> ModelSource:
        """Resolve, download if needed, and classify the local path as a folder or a single file."""
        source = self.resolve(ref)
        path = source.path or self.ensure_local(ref)
        return self._local_source(ref, path, source.repo_id)

    def _check_file(self, path: Path) -> None:
        if path.suffix.lower() in SAFE_SUFFIXES:
            check_safetensors_file(path)

    def _check_folder(self, folder: Path) -> bool | None:
        """Check every safetensors header; True when the folder has safetensors weights, else None.

        None lets diffusers fall back to ``.bin`` files, which it reads with ``weights_only=True``.
        """
        found = False
        for path in sorted(folder.rglob("*.safetensors")):
            if ".cache" not in path.relative_to(folder).parts:
                check_safetensors_file(path)
                found = True
        return True if found else None

    def _single_file_config(self, checkpoint: Path, config: str | None) -> Path:
        """A local diffusers folder with the base model's configs for a single-file checkpoint."""
        if config is not None:
            source = self._local(str(config))
            if not (source.path / "model_index.json").is_file():
                raise InvalidRequestError(
                    f"The config for '{checkpoint.name}' must be a diffusers folder with model_index.json, "
                    f"not {source.path}."
                )
            return source.path
        with load_errors(checkpoint.name, checkpoint):
            from diffusers.loaders.single_file_utils import fetch_diffusers_config

            is_safe = checkpoint.suffix.lower() in SAFE_SUFFIXES
            keys = LazyCheckpoint(checkpoint) if is_safe else self.load_state_dict(checkpoint)
            base = fetch_diffusers_config(keys)["pretrained_model_name_or_path"]
        full, configs = self.folder_for(base), self.models_dir / ".configs" / base.replace("/", "--")
        for folder in (full, configs):
            if is_complete(folder) and (folder / "model_index.json").is_file():
                return folder
        if self.offline:
            raise OfflineError(
                f"Checkpoint '{checkpoint.name}' needs the settings of its base model '{base}', which are not "
                f"on this computer and the studio is offline: put that model's folder in {full}."
            )
        return self._download(base, configs, configs_only=True)
