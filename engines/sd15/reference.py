"""The character reference for SD 1.5: one picture of the character steers every panel (IP-Adapter).

IP-Adapter (Ye et al. 2023) adds a second cross-attention to the UNet that reads a CLIP image
encoder's embedding of the reference, beside the prompt's; its scale sets how strongly the panel
follows the reference (0.5 to 0.8 keeps a character's colours and outfit and leaves the pose to
the prompt). Two variants of h94/IP-Adapter for SD 1.5 are offered:

    plain   models/ip-adapter_sd15.safetensors            the whole picture: outfit, colours, style
    face    models/ip-adapter-plus-face_sd15.safetensors  a cropped face: the face, less the rest

both with the repository's ``models/image_encoder`` (CLIP ViT-H). The weights load through the model
store (safetensors, never a pickle) and diffusers' own ``load_ip_adapter``; only the three files a
variant needs are downloaded, not the repository's several GB. The adapter changes the pooled UNet's
attention, so it is loaded when a job asks for a reference and taken out again when one does not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError, ModelNotFoundError, OfflineError
from engines.models import ModelStore

log = logging.getLogger(__name__)

IP_ADAPTER_REPO = "h94/IP-Adapter"
VARIANTS = {"plain": "models/ip-adapter_sd15.safetensors", "face": "models/ip-adapter-plus-face_sd15.safetensors"}
ENCODER_FOLDER = "models/image_encoder"
SPLITS = ("left-right", "top-bottom")
ENCODER_FILES = ("models/image_encoder/config.json", "models/image_encoder/model.safetensors")


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise InvalidRequestError(f"The reference variant must be one of {', '.join(VARIANTS)}, not '{variant}'.")


def adapter_files(store: ModelStore, variant: str, repo: str = IP_ADAPTER_REPO) -> tuple[Path, Path]:
    """The variant's weights file and the image encoder folder, downloading just those when needed."""
    folder = Path(repo).expanduser() if Path(repo).expanduser().is_dir() else store.folder_for(repo)
    wanted = (VARIANTS[variant], *ENCODER_FILES)
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        if store.offline or Path(repo).expanduser().is_dir():
            raise OfflineError(
                f"The character reference needs {', '.join(missing)} from {repo}, which are not in {folder}"
                f"{' and the studio is offline' if store.offline else ''}: download them there.")
        _download(repo, folder, missing, store)
    return folder / VARIANTS[variant], folder / ENCODER_FOLDER


def _download(repo: str, folder: Path, names: list[str], store: ModelStore) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hub_errors

    from engines.models.files import network_errors

    try:
        for name in names:
            hf_hub_download(repo, name, local_dir=folder, endpoint=store.endpoint,
                            cache_dir=store.models_dir / ".hub-cache", etag_timeout=store.timeout_s)
    except (hub_errors.HfHubHTTPError, *network_errors()) as error:
        raise OfflineError(f"The character reference needs {repo} and the Hugging Face Hub cannot be reached: "
                           f"download {', '.join(names)} into {folder}.") from error
    except hub_errors.EntryNotFoundError as error:
        raise ModelNotFoundError(f"{repo} has no file {error}: choose another reference variant.") from error


def fit_reference(pipe: Any, store: ModelStore, variant: Optional[str], dtype: Any,
                  repo: str = IP_ADAPTER_REPO) -> None:
    """Load the variant's adapter into the pooled pipeline, or take any adapter out when ``variant`` is None."""
    loaded = pipe.__dict__.get("_inkframe_reference")
    if loaded == (variant, repo):
        return
    if loaded is not None:
        pipe.unload_ip_adapter()
        pipe.__dict__["_inkframe_reference"] = None
    if variant is None:
        return
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    weights, encoder_folder = adapter_files(store, variant, repo)
    state = store.load_state_dict(weights)
    nested: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        if part in nested:
            nested[part][rest] = value
    if not nested["image_proj"] or not nested["ip_adapter"]:
        raise InvalidRequestError(f"'{weights.name}' is not an IP-Adapter for SD 1.5 (no image_proj/ip_adapter weights).")
    encoder = store.load_model(str(encoder_folder), CLIPVisionModelWithProjection, torch_dtype=dtype)
    try:
        pipe.load_ip_adapter(nested, subfolder="", weight_name="", image_encoder_folder=None)
    except (ValueError, RuntimeError, KeyError) as error:
        raise InvalidRequestError(f"'{weights.name}' does not fit this SD 1.5 checkpoint ({error}).") from error
    size = encoder.config.image_size
    pipe.register_modules(image_encoder=encoder.to(pipe.unet.device),
                          feature_extractor=CLIPImageProcessor(size=size, crop_size=size))
    pipe.__dict__["_inkframe_reference"] = (variant, repo)
    log.info("loaded the %s IP-Adapter from %s", variant, weights)


def reference_kwargs(pipe: Any, first: Any, second: Any, scale: float, split: str, width: int,
                     height: int) -> dict[str, Any]:
    """The pipeline arguments for one reference, or two placed in halves of the panel by attention masks."""
    if second is None:
        pipe.set_ip_adapter_scale(scale)
        return {"ip_adapter_image": first}
    from diffusers.image_processor import IPAdapterMaskProcessor
    from PIL import Image

    halves = []
    for index in range(2):
        mask = Image.new("L", (width, height), 0)
        box = ((0, 0, width // 2, height), (width // 2, 0, width, height)) if split == "left-right" else (
            (0, 0, width, height // 2), (0, height // 2, width, height))
        mask.paste(255, box[index])
        halves.append(mask)
    masks = IPAdapterMaskProcessor().preprocess(halves, height=height, width=width)
    pipe.set_ip_adapter_scale([[scale, scale]])
    return {"ip_adapter_image": [[first, second]],
            "cross_attention_kwargs": {"ip_adapter_masks": [masks.reshape(1, 2, *masks.shape[2:])]}}


def load_reference_image(path: Path) -> Any:
    """The reference as RGB (transparency on white, as a character sheet is drawn); one sentence if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("RGB")
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as error:
        raise InvalidRequestError(f"The reference image {path} cannot be read ({error}).") from error
