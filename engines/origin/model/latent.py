"""Latent space: the frozen autoencoder Origin draws in when a config's ``space`` is "latent".

A 512 px picture is a 512x512x3 tensor in pixel space and a 64x64x4 one in the latent space of
Stable Diffusion's VAE (``stabilityai/sd-vae-ft-mse`` by default, any diffusers folder, hub id or
single file): the UNet does 1/48 of the work per step, and the VAE (frozen, never trained, not part
of the artist's model) turns latents back into pixels once per picture. ``LatentCodec`` wraps it:

- ``encode(pixels)``: [-1, 1] images to model latents, ``(mean - shift) * scale``, or per channel
  ``(mean - latents_mean) * scale / latents_std`` when the VAE's config carries those statistics
  (diffusers' convention, as SDXL-family VAEs such as Playground's do). The posterior's
  mean, not a sample: the tensor cache stores one latent per image (the VAE runs once per image,
  not once per epoch) and the same image must give the same latent on every machine. For SD's
  VAE the posterior's spread is a small fraction of a latent's (it barely differs from a sample).
- ``decode(latents, hardware)``: back to [-1, 1] pixels through the HardwareManager's decode,
  which retries in tiles when the full picture does not fit in VRAM.
- ``to_rgb(latents)``: a cheap approximate picture at latent resolution, one linear map from the
  latent channels to R, G, B (plus a bias), differentiable. The art losses, the experts'
  auxiliary targets and the live previews read it (docs/origin-model.md says why not a decode).
  The map is fitted to this VAE when it loads, by least squares on the latents of a fixed chart
  of 64 flat colours, so it needs no data and is the same for every run with this VAE.
- ``identity``: the VAE's id, the SHA-256 of its weights and its latent geometry, recorded in each
  latent checkpoint; resuming and generating require exactly that VAE (``register_vae``).

Weights stay fp32: the VAE runs once per image in training and once per picture in generation, and
SD's VAE is known to overflow in fp16 on some pictures (a black or NaN image after a long denoise).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from engines.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError, OfflineError
# The latent -> RGB map is shared with SD 1.5's live previews; re-exported here for Origin's callers.
from engines.latent_rgb import colour_chart, fit_rgb_map, latents_to_rgb

if TYPE_CHECKING:
    from engines.models import ModelStore

log = logging.getLogger(__name__)

DEFAULT_VAE = "stabilityai/sd-vae-ft-mse"
# A VAE as one .safetensors file (vae-ft-mse-840000-ema-pruned.safetensors, what most artists have)
# carries no config: it is read with SD's VAE layout, kept here so that no download is needed.
SINGLE_FILE_CONFIG = Path(__file__).resolve().parents[3] / "assets" / "vae" / "sd-vae-ft-mse"
ENCODE_BATCH = 8  # images per VAE call when the tensor cache is filled


class LatentCodec:
    """A frozen AutoencoderKL between pixels and the latents an Origin model draws; see the module."""

    def __init__(self, vae: Any, ref: str, weights_sha256: str) -> None:
        from diffusers import AutoencoderKL

        if not isinstance(vae, AutoencoderKL):
            raise InvalidRequestError(f"'{ref}' is a {type(vae).__name__}, not an autoencoder (AutoencoderKL): "
                                      "choose a VAE such as stabilityai/sd-vae-ft-mse.")
        self.vae = vae.eval().requires_grad_(False)
        self.ref = ref
        config = vae.config
        self.latent_channels = int(config.latent_channels)
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.scaling_factor = float(getattr(config, "scaling_factor", None) or 1.0)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.latents_mean, self.latents_std = _channel_statistics(config, self.latent_channels)
        # One per-channel form of both conventions: model = (vae - shift) * scale / spread.
        self._shift = self.latents_mean or [self.shift_factor] * self.latent_channels
        self._spread = self.latents_std or [1.0] * self.latent_channels
        self.weights_sha256 = weights_sha256
        self.rgb_map = self._fit_rgb_map()

    @classmethod
    def load(cls, ref: str, store: "ModelStore") -> "LatentCodec":
        """Load ``ref`` (hub id, folder or single file) through the model store, fp32, frozen."""
        from diffusers import AutoencoderKL

        from engines.origin.model.text_encoder import weights_sha256

        ref = (ref or "").strip() or DEFAULT_VAE
        source = store.resolve(ref)
        if source.kind == "single_file":
            vae = store.load_model(ref, AutoencoderKL, config=str(SINGLE_FILE_CONFIG))
        else:
            vae = store.load_model(ref, AutoencoderKL, subfolder=_vae_subfolder(source))
        return cls(vae.float(), ref, weights_sha256(vae))

    # -- what the pool needs -------------------------------------------------------------------
    @property
    def components(self) -> dict[str, Any]:
        return {"vae": self.vae}

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "vae", "id": self.ref, "weights_sha256": self.weights_sha256,
                "latent_channels": self.latent_channels, "factor": self.factor,
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor,
                **({"latents_mean": self.latents_mean, "latents_std": self.latents_std} if self.latents_mean else {})}

    def _channel_view(self, values: list[float], like: Tensor) -> Tensor:
        return torch.tensor(values, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)

    def to_vae_latents(self, latents: Tensor) -> Tensor:
        """Model latents -> the VAE's own latents, what ``vae.decode`` reads (differentiable)."""
        return (latents * self._channel_view(self._spread, latents) / self.scaling_factor
                + self._channel_view(self._shift, latents))

    # -- pixels <-> latents ----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixels: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, C, H / f, W / f]`` model latents (fp32, on the VAE's device)."""
        pixels = pixels.to(self.device, torch.float32)
        mean = self.vae.encode(pixels).latent_dist.mean
        shift, spread = self._channel_view(self._shift, mean), self._channel_view(self._spread, mean)
        return (mean - shift) * self.scaling_factor / spread

    def decode(self, latents: Tensor, hardware: Any = None) -> Tensor:
        """Model latents -> ``[B, 3, H, W]`` pixels in [-1, 1] (tiled retry on out-of-memory)."""
        from engines.hardware.placement import decode_with_tiled_retry

        z = self.to_vae_latents(latents.to(self.device, torch.float32))
        with torch.no_grad():
            if hardware is not None:
                pixels = hardware.decode_latents(self.vae, z)
            else:
                pixels = decode_with_tiled_retry(self.vae, z, empty_cache=lambda: None)
        return pixels.float().clamp(-1, 1)

    def to_rgb(self, latents: Tensor) -> Tensor:
        """The approximate picture of ``latents`` at their resolution, about [-1, 1] (differentiable)."""
        return latents_to_rgb(latents, self.rgb_map)

    def _fit_rgb_map(self) -> Tensor:
        chart, colours = colour_chart(self.factor)
        return fit_rgb_map(self.encode(chart).cpu(), colours, self.factor)

    def check_size(self, height: int, width: int, unet_factor: int) -> None:
        """One sentence when a picture size cannot be drawn in this latent space."""
        step = self.factor * unet_factor
        if height % step or width % step:
            raise InvalidRequestError(f"In latent space this model needs a width and height divisible by {step} "
                                      f"(the VAE's {self.factor}x times the UNet's {unet_factor}x), "
                                      f"not {width}x{height}.")


def _channel_statistics(config: Any, channels: int) -> tuple[Optional[list[float]], Optional[list[float]]]:
    """The VAE config's per-channel ``latents_mean``/``latents_std``, or (None, None) when absent or unusable."""
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is None or std is None:
        return None, None
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise CorruptModelError(f"The VAE's config gives latents_mean/latents_std for {len(mean)}/{len(std)} channels "
                                f"(some not positive?) but its latents have {channels}: fix or remove them.")
    return mean, std


def _vae_subfolder(source: Any) -> Optional[str]:
    """A whole pipeline's folder holds its VAE in ``vae/``; a VAE's own folder is the VAE."""
    if source.path is None or not source.path.is_dir():
        return None
    return "vae" if (source.path / "vae" / "config.json").is_file() else None


def describe_vae(identity: Optional[dict]) -> str:
    if not identity:
        return "no VAE (pixel space)"
    return f"{identity.get('id')} (weights {str(identity.get('weights_sha256', ''))[:8]})"


def _refuse_unless(codec: LatentCodec, required: dict) -> None:
    if codec.weights_sha256 != required.get("weights_sha256"):
        raise CorruptModelError(
            f"This model was trained in the latent space of the VAE {describe_vae(required)}, but the one "
            f"here has other weights ({codec.weights_sha256[:8]}); put the original VAE back, or use a "
            "checkpoint trained with the VAE you have (docs/origin-model.md).")


def register_vae(hardware: Any, ref: str, *, store: "Optional[ModelStore]" = None,
                 require: Optional[dict] = None) -> str:
    """The pool name of the VAE ``ref`` (or, with ``require`` from a checkpoint, exactly that VAE).

    Loaded once per process and shared by the trainer, its samples and generation. A missing VAE is
    ``ModelNotFoundError``/``OfflineError`` with the store's sentence; with ``require``, one whose
    weights differ is ``CorruptModelError`` (checked again whenever the pool reloads it).
    """
    if store is None:
        from engines.models import ModelStore

        settings = hardware.settings
        store = ModelStore(settings.paths.models, offline=bool(getattr(settings, "offline", False)))
    if require is not None:
        ref = str(require.get("id") or DEFAULT_VAE)
        name = f"origin-vae:{ref}@{str(require.get('weights_sha256', ''))[:16]}"
    else:
        ref = (ref or "").strip() or DEFAULT_VAE
        name = f"origin-vae:{ref}"
    if name in hardware.pool:
        return name

    def load() -> LatentCodec:
        try:
            codec = LatentCodec.load(ref, store)
        except (ModelNotFoundError, OfflineError) as error:
            hint = "" if require is not None else " Or train in pixel space: --space pixel."
            raise type(error)(f"Latent-space Origin needs its VAE: {error}{hint}") from error
        if require is not None:
            _refuse_unless(codec, require)
        return codec

    codec = load()
    log.info("VAE %s: %d latent channels, %dx smaller each side", describe_vae(codec.identity),
             codec.latent_channels, codec.factor)
    hardware.register(name, codec, loader=load, activate=False, files=store.files_for(ref))
    return name


def downsample_to(pixels: Tensor, latents: Tensor) -> Tensor:
    """Pixels area-averaged to the latents' size (what ``to_rgb`` approximates), for measurements."""
    return F.interpolate(pixels, size=latents.shape[-2:], mode="area")
