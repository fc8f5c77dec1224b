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


class TextEncoder:
    """Frozen caption encoder; see the module docstring for the rules."""

    def __init__(self, model_ref: Optional[str], dim: int, max_tokens: int, *,
                 store: "Optional[ModelStore]" = None, offline: bool = False):
        if dim < 1 or max_tokens < 1:
            raise ValueError(f"dim and max_tokens must be positive, got dim={dim}, max_tokens={max_tokens}")
        self.dim = dim
        self.max_tokens = max_tokens
        self.model = None
        self.model_ref = model_ref
        self.projection: Optional[Tensor] = None
        self.fallback_reason: Optional[str] = None
        if model_ref is None:
            self.fallback_reason = "no text model was chosen"
            log.info("Text encoder: deterministic SHA-256 embedding (no model chosen).")
        else:
            self._load(model_ref, store, offline)

    @property
    def is_fallback(self) -> bool:
        return self.model is None

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

    def _load(self, model_ref: str, store: "Optional[ModelStore]", offline: bool) -> None:
        try:
            self.model = self._load_model(model_ref, store, offline)
        except Exception as error:  # noqa: BLE001 - any failure to load means: use the fallback, say why
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.fallback_reason = f"{model_ref}: {first_line}"
            _warn_fallback_once(self.fallback_reason)
            return
        self.model.eval()
        self.model.requires_grad_(False)

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


def register_text_encoder(hardware: Any, config: "ModelConfig", *, store: "Optional[ModelStore]" = None) -> str:
    """The pool name of the caption encoder ``config`` asks for, loading it only when it is not loaded.

    One per process: every generation and the training samples take it with ``hardware.use(name)``.
    The pool may evict it like any model and brings it back through the same loader. An empty
    ``config.text_encoder`` is the SHA-256 fallback, which has no weights and costs the pool nothing.
    """
    ref = config.text_encoder or None
    name = f"text-encoder:{ref or 'sha256'}:{config.text_dim}x{config.max_text_tokens}"
    if name not in hardware.pool:
        offline = bool(getattr(hardware.settings, "offline", False))

        def load() -> TextEncoder:
            return TextEncoder(ref, config.text_dim, config.max_text_tokens, store=store, offline=offline)

        encoder = load()
        # Watched like any model: replacing the encoder's files makes the next use reload it.
        files = store.files_for(ref) if store is not None and not encoder.is_fallback else ()
        hardware.register(name, encoder, loader=load, activate=False, files=files)
    return name
