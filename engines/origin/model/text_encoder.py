"""Captions to tokens: a frozen sentence-transformers model, or a SHA-256 embedding when none loads.

``TextEncoder(model_ref, dim, max_tokens).encode(captions) -> (tokens [B, L, dim], mask [B, L])``

The studio keeps one encoder per process in the HardwareManager's pool (``register_text_encoder``):
loading a sentence-transformers model costs far more than encoding a prompt, so generations and
training samples share it, and the pool may evict it under memory pressure and reload it later.

- The real encoder is a sentence-transformers model (default in ``ModelConfig.text_encoder``:
  paraphrase-multilingual-MiniLM-L12-v2, 50+ languages). Its *token* embeddings are used, not the
  pooled sentence vector, so the UNet can attend to "girl" and "forest" separately. A hub id or
  a path goes through the ``ModelStore`` when one is given, so the studio's offline rules and
  models folder apply; without a store a local path is read directly and a hub id is looked up
  in the Hugging Face cache (never downloaded when ``offline``).
- Tokens are truncated or zero-padded to ``max_tokens``; the mask says which are real.
- When the encoder's width differs from ``dim``, a fixed (seeded, not learned) random projection
  maps it to ``dim``: random projections keep distances between embeddings (Johnson-Lindenstrauss),
  and the model's own learned text projection does the adapting. Training stays reproducible
  because the projection is the same on every machine.
- When no model can be loaded (none given, none downloaded, offline, damaged), every word piece is
  hashed with SHA-256 into a fixed vector: the same caption gives bit-identical tokens on every
  machine and every run, so a model trained with the fallback still works when it is reloaded.
  A warning says so once per process.
- An empty (or blank) caption, which the trainer uses for classifier-free guidance, encodes to the
  unconditional tokens: all zeros with an all-False mask, for both kinds of encoder.
- A UNet only understands the tokens of the encoder it was trained with, so ``identity`` names that
  encoder exactly (the fallback, or a model id and the SHA-256 of its weights); the trainer writes it
  into every checkpoint, and ``register_text_encoder(..., require=identity)`` gives back that encoder
  or refuses with one sentence, never a look-alike (a fallback for a real model, or other weights).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import unicodedata
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from torch import Tensor

from engines.errors import CorruptModelError, ModelNotFoundError

if TYPE_CHECKING:
    from engines.models import ModelStore
    from engines.origin.model.config import ModelConfig

log = logging.getLogger(__name__)

# The warning is about the process (this Python has no usable text model), not about one encoder,
# so it is remembered per process; the lock makes "once" hold when two jobs start together.
_fallback_warned = threading.Event()
_warn_lock = threading.Lock()

# CJK characters are words on their own (no spaces in Japanese/Chinese captions); other scripts
# split into runs of letters/digits; punctuation marks are tokens of their own.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD_PIECES = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_PROJECTION_SEED = 20240611


def _warn_fallback_once(reason: str) -> None:
    with _warn_lock:
        if _fallback_warned.is_set():
            return
        _fallback_warned.set()
    log.warning("No text model could be loaded (%s): captions use the deterministic SHA-256 embedding, "
                "which knows words but not their meaning; put a sentence-transformers model in the "
                "models folder for better prompts.", reason)


def word_pieces(caption: str) -> list[str]:
    """The fallback's tokens: NFKC-normalised (full-width letters fold), lower-cased word pieces."""
    return _WORD_PIECES.findall(unicodedata.normalize("NFKC", caption).lower())


def hash_vector(piece: str, dim: int) -> np.ndarray:
    """A unit-variance vector for one word piece, from SHA-256 in counter mode.

    Only integer arithmetic and an exact int -> float conversion are involved, so the bits do
    not depend on the machine, the BLAS or the torch version.
    """
    blocks, counter = [], 0
    while len(blocks) * 16 < dim:  # 32 bytes = 16 uint16 values per block
        blocks.append(hashlib.sha256(f"{counter}:{piece}".encode("utf-8")).digest())
        counter += 1
    values = np.frombuffer(b"".join(blocks), dtype="<u2")[:dim].astype(np.float64)
    uniform = values / 65535.0 * 2.0 - 1.0  # [-1, 1]
    return (uniform * np.sqrt(3.0)).astype(np.float32)  # variance of U(-1, 1) is 1/3


def weights_sha256(module: Any) -> str:
    """SHA-256 of a model's learned weights: name, dtype, shape and bytes of each state_dict tensor.

    Keys in sorted order; every floating-point tensor is hashed as contiguous fp32 on the CPU, so
    the same weights give the same digest whether a library loads them in fp16, bf16 or fp32.
    Integer buffers (BERT's position ids) are left out: they are derived, not learned, and whether
    they are saved changes between transformers versions. About 0.07 s for all-MiniLM-L6-v2 (91 MB).
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        tensor = state[key]
        if not torch.is_floating_point(tensor):
            continue
        array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
        digest.update(f"{key}|float32|{tuple(array.shape)}\n".encode("utf-8"))
        digest.update(array.reshape(-1))
    return digest.hexdigest()


def describe_identity(identity: Optional[dict]) -> str:
    """One line for logs and messages: "all-MiniLM-L6-v2 (weights 3f2a9c1e)" or the fallback's name."""
    if not identity or identity.get("kind") == "sha256":
        return "the SHA-256 word embedding (no text model)"
    return f"{identity.get('id')} (weights {str(identity.get('weights_sha256', ''))[:8]})"


class TextEncoder:
    """Frozen caption encoder; see the module docstring for the rules."""

    def __init__(self, model_ref: Optional[str], dim: int, max_tokens: int, *,
                 store: "Optional[ModelStore]" = None, offline: bool = False, warn: bool = True,
                 reason: str = "no text model was chosen"):
        """``warn=False``: a failed load is only recorded (``fallback_reason``, ``load_error``), for a
        caller that refuses instead of falling back; ``reason`` says why ``model_ref=None`` was chosen."""
        if dim < 1 or max_tokens < 1:
            raise ValueError(f"dim and max_tokens must be positive, got dim={dim}, max_tokens={max_tokens}")
        self.dim = dim
        self.max_tokens = max_tokens
        self.model = None
        self.model_ref = model_ref
        self.projection: Optional[Tensor] = None
        self.fallback_reason: Optional[str] = None
        self.load_error: Optional[str] = None  # the first line of the error that made a model fall back
        self.weights_sha256: Optional[str] = None  # computed once, on the CPU, right after loading
        if model_ref is None:
            self.fallback_reason = reason
            log.info("Text encoder: deterministic SHA-256 embedding (%s).", reason)
        else:
            self._load(model_ref, store, offline, warn)

    @property
    def is_fallback(self) -> bool:
        return self.model is None

    @property
    def identity(self) -> dict:
        """Exactly which encoder this is, as a small JSON-able dict (recorded in every checkpoint)."""
        if self.model is None:
            return {"kind": "sha256", "id": "sha256", "dim": self.dim, "max_tokens": self.max_tokens}
        return {"kind": "sentence-transformers", "id": self.model_ref, "weights_sha256": self.weights_sha256,
                "dim": self.dim, "max_tokens": self.max_tokens}

    @property
    def components(self) -> dict:
        """The weights, for the HardwareManager's pool: it counts them and moves them between devices."""
        return {} if self.model is None else {"text_model": self.model}

    @property
    def device(self) -> torch.device:
        """Where the encoder runs: wherever the pool put the model (the fallback runs on the CPU)."""
        if self.model is None:
            return torch.device("cpu")
        return next(self.model.parameters()).device

    # 1. loading

    def _load(self, model_ref: str, store: "Optional[ModelStore]", offline: bool, warn: bool = True) -> None:
        try:
            self.model = self._load_model(model_ref, store, offline)
        except Exception as error:  # noqa: BLE001 - any failure to load means: use the fallback, say why
            self.load_error = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.fallback_reason = f"{model_ref}: {self.load_error}"
            if warn:
                _warn_fallback_once(self.fallback_reason)
            return
        self.model.eval()
        self.model.requires_grad_(False)
        # Now, while the weights are on the CPU in the dtype they were loaded in: the pool may later
        # move them to the GPU in half precision.
        self.weights_sha256 = weights_sha256(self.model)

    def _load_model(self, model_ref: str, store: "Optional[ModelStore]", offline: bool):
        from pathlib import Path

        from sentence_transformers import SentenceTransformer

        # Loaded on the CPU: the pool, not the encoder, decides where the weights live.
        if store is not None:
            return store.load_model(model_ref, SentenceTransformer, device="cpu")
        path = Path(model_ref).expanduser()
        if path.exists():
            return SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return SentenceTransformer(model_ref, device="cpu", local_files_only=offline)

    # 2. encoding

    def encode(self, captions: list[str], device: Optional[torch.device] = None) -> tuple[Tensor, Tensor]:
        """``([B, max_tokens, dim] float32, [B, max_tokens] bool)`` on ``device`` (default: the encoder's)."""
        if isinstance(captions, str):
            raise TypeError("encode takes a list of captions, not one string")
        device = torch.device(device) if device is not None else self.device
        tokens = torch.zeros(len(captions), self.max_tokens, self.dim, device=device)
        mask = torch.zeros(len(captions), self.max_tokens, dtype=torch.bool, device=device)
        real = [i for i, caption in enumerate(captions) if caption and caption.strip()]
        if not real:
            return tokens, mask
        encoded = self._encode_model([captions[i] for i in real]) if self.model is not None \
            else [self._encode_hash(captions[i]) for i in real]
        for i, vectors in zip(real, encoded):
            n = min(len(vectors), self.max_tokens)
            tokens[i, :n] = vectors[:n].to(device)
            mask[i, :n] = True
        return tokens, mask

    def _encode_hash(self, caption: str) -> Tensor:
        pieces = word_pieces(caption)[: self.max_tokens]
        if not pieces:
            return torch.zeros(0, self.dim)
        return torch.from_numpy(np.stack([hash_vector(p, self.dim) for p in pieces]))

    def _encode_model(self, captions: list[str]) -> list[Tensor]:
        with torch.no_grad():
            # No device argument: sentence-transformers would move the model there, behind the pool's back.
            out = self.model.encode(captions, output_value="token_embeddings", convert_to_tensor=False,
                                    show_progress_bar=False)
            # encode() runs under inference_mode; a clone outside it is an ordinary tensor that a
            # trainable projection can use in autograd.
            vectors = [t[: self.max_tokens].float().clone() for t in out]
            if vectors and vectors[0].shape[-1] != self.dim:
                projection = self._projection(vectors[0].shape[-1]).to(vectors[0].device)
                vectors = [v @ projection for v in vectors]
        return vectors

    def _projection(self, width: int) -> Tensor:
        # Built on first use from the tokens' real width: a model's pooled-sentence width
        # (get_embedding_dimension) can differ from its token width when it ends in a Dense layer.
        if self.projection is None or self.projection.shape[0] != width:
            # NumPy's legacy RandomState has a frozen stream (NEP 19): the same matrix with every
            # NumPy version, so a checkpoint trained here reads its captions the same way anywhere.
            matrix = np.random.RandomState(_PROJECTION_SEED).standard_normal((width, self.dim)) / width ** 0.5
            self.projection = torch.from_numpy(matrix.astype(np.float32))
        return self.projection


def _pool_name(key: str, dim: int, max_tokens: int) -> str:
    return f"text-encoder:{key}:{dim}x{max_tokens}"


def _check_required(require: Any, dim: int, max_tokens: int) -> None:
    """A recorded identity must be one this studio can honour; anything else is a damaged meta.json."""
    kind = require.get("kind") if isinstance(require, dict) else None
    real = kind == "sentence-transformers"
    if (kind not in ("sha256", "sentence-transformers")
            or (real and not (isinstance(require.get("id"), str) and isinstance(require.get("weights_sha256"), str)))):
        raise CorruptModelError(f"This model's meta.json records a text encoder the studio does not know "
                                f"({require!r}); use another checkpoint of the run.")
    if (require.get("dim", dim), require.get("max_tokens", max_tokens)) != (dim, max_tokens):
        raise CorruptModelError(f"This model's meta.json records a text encoder {require.get('dim')} wide and "
                                f"{require.get('max_tokens')} tokens long, but its config says {dim} and "
                                f"{max_tokens}; use another checkpoint of the run.")


def _refuse_unless(encoder: TextEncoder, require: dict) -> None:
    """Raise one sentence unless ``encoder`` is exactly the real model ``require`` names."""
    wanted = describe_identity(require)
    advice = ("put it in the models folder (docs/models.md) or use a checkpoint trained with the text "
              "model you have.")
    if encoder.is_fallback:
        reason = (encoder.load_error or encoder.fallback_reason or "unknown error").rstrip(". ")
        raise ModelNotFoundError(f"This model was trained with the text model {wanted}, which cannot be "
                                 f"loaded here ({reason}); {advice}")
    if encoder.weights_sha256 != require["weights_sha256"]:
        raise CorruptModelError(f"This model was trained with the text model {wanted}, but the one here has "
                                f"other weights ({encoder.weights_sha256[:8]}); put the original one back, or "
                                f"use a checkpoint trained with the text model you have (docs/models.md).")


def register_text_encoder(hardware: Any, config: "ModelConfig", *, store: "Optional[ModelStore]" = None,
                          require: Optional[dict] = None) -> str:
    """The pool name of the caption encoder, loading it only when it is not loaded.

    Without ``require``, the encoder ``config`` asks for (``config.text_encoder``; empty means the
    SHA-256 fallback), falling back when it cannot be loaded. With ``require`` (an ``identity`` read
    from a checkpoint), exactly that encoder: the fallback when it says ``sha256`` even if a model
    is present, otherwise its model with the same weights, or ``ModelNotFoundError`` (it cannot be
    loaded) / ``CorruptModelError`` (other weights) with one sentence.

    One per process: every generation and the training samples take it with ``hardware.use(name)``.
    The pool may evict it like any model and brings it back through the same loader, which checks a
    required identity again. The name says which encoder an entry holds (the fallback, a model as
    configured, a model with given weights), so a fallback never stands in for a real model.
    """
    dim, max_tokens = config.text_dim, config.max_text_tokens
    offline = bool(getattr(hardware.settings, "offline", False))
    reason = "no text model was chosen"
    if require is not None:
        _check_required(require, dim, max_tokens)
        real = require["kind"] != "sha256"
        ref = require["id"] if real else None
        if not real:
            reason = "the checkpoint was trained with it"
        name = _pool_name(f"{ref}@{require['weights_sha256'][:16]}" if real else "sha256", dim, max_tokens)
    else:
        ref = config.text_encoder or None
        name = _pool_name(ref or "sha256", dim, max_tokens)
    # Where this ref's fallback goes when its model cannot be loaded (only without ``require``):
    # apart from the real model's entry, and found there next time instead of failing again.
    failed = _pool_name(f"sha256 for {ref}", dim, max_tokens)
    if require is None and ref is not None and failed in hardware.pool:
        return failed
    if name in hardware.pool:
        return name
    if ref is None:
        encoder = TextEncoder(None, dim, max_tokens, reason=reason)
        hardware.register(name, encoder, loader=lambda: TextEncoder(None, dim, max_tokens, reason=reason),
                          activate=False)
        return name

    def load() -> TextEncoder:
        encoder = TextEncoder(ref, dim, max_tokens, store=store, offline=offline, warn=require is None)
        if require is not None:
            _refuse_unless(encoder, require)
        return encoder

    encoder = load()
    if encoder.is_fallback:  # only without ``require``: keep it apart from the real model, with its reason
        why = encoder.fallback_reason or reason
        hardware.register(failed, encoder, activate=False,
                          loader=lambda: TextEncoder(None, dim, max_tokens, reason=why))
        return failed
    # Watched like any model: replacing the encoder's files makes the next use reload it.
    files = store.files_for(ref) if store is not None else ()
    hardware.register(name, encoder, loader=load, activate=False, files=files)
    return name
