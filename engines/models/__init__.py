"""The model store: how a reference becomes a local model, downloads, and safe loading.

    store.py   ModelStore: resolve an id, a folder or a single file; download; load pipelines and models
    files.py   which files to download, whether a file or folder is whole, one-sentence load errors
    residency.py   weights copied out of their memory-mapped files, and how many bytes still are mapped

``from engines.models import ModelStore``. Nothing heavy is imported with this package.
"""

from engines.models.files import (CHECKPOINT_SUFFIXES, PICKLE_SUFFIXES, SAFE_SUFFIXES, check_safetensors_file,
                                  choose_download_files, config_folder)
from engines.models.store import KnownModel, ModelSource, ModelStore, derive_pipeline

__all__ = ["CHECKPOINT_SUFFIXES", "PICKLE_SUFFIXES", "SAFE_SUFFIXES", "KnownModel", "ModelSource", "ModelStore",
           "check_safetensors_file", "choose_download_files", "config_folder", "derive_pipeline"]
