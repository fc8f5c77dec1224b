"""The model store: resolution, downloads (against a local fake Hub), offline errors, safe loading."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from tiny_models import build_tiny_sd_pipeline, run_tiny_pipeline

from engines.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError, OfflineError
from engines.models import ModelStore, choose_download_files
from engines.progress import Cancelled, CancelToken


@pytest.fixture(scope="module")
def reference_image() -> np.ndarray:
    """What the seeded tiny pipeline draws when built in memory: every loading path must match it."""
    return run_tiny_pipeline(build_tiny_sd_pipeline(seed=0))


@pytest.fixture
def models_dir(isolated_data_dir: Path) -> Path:
    return isolated_data_dir / "models"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything opens a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model store touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def one_sentence(text: str) -> bool:
    return text.endswith(".") and "\n" not in text and len(re.findall(r"[.!?]\s+[A-Z]", text)) == 0


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class FakeHub:
    """The few Hub routes snapshot_download uses, served from memory on localhost."""

    SHA = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.fetched: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, send_body=False)

            def do_GET(self) -> None:
                hub.answer(self, send_body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def add_folder(self, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None) -> None:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        self.repos[repo_id] = {**files, **(extra or {})}

    def answer(self, request: BaseHTTPRequestHandler, send_body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlparse(request.path).path)
        api = re.match(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/.*)?$", path)
        file = re.match(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$", path)
        repo = self.repos.get((api or file)[1]) if (api or file) else None
        if repo is None or (file and file[2] not in repo):
            code = "RepoNotFound" if repo is None else "EntryNotFound"
            return self.send(request, 404, b"{}", {"X-Error-Code": code})
        if api and api[2] != "tree":
            info = {"id": api[1], "sha": self.SHA, "siblings": [{"rfilename": name} for name in repo]}
            return self.send(request, 200, json.dumps(info).encode())
        if api:
            tree = [{"type": "file", "path": n, "size": len(b), "oid": self.oid(b)} for n, b in repo.items()]
            return self.send(request, 200, json.dumps(tree).encode())
        body = repo[file[2]]
        if send_body:
            self.fetched.append(file[2])
        headers = {"X-Repo-Commit": self.SHA, "ETag": f'"{self.oid(body)}"'}
        self.send(request, 200, body, headers, send_body)

    @staticmethod
    def oid(data: bytes) -> str:
        return hashlib.sha1(data).hexdigest()

    @staticmethod
    def send(request, status: int, body: bytes, headers: dict | None = None, send_body: bool = True) -> None:
        request.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            request.send_header(key, value)
        request.end_headers()
        if send_body:
            request.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(tiny_sd_dir: Path):
    hub = FakeHub()
    # Decoys a real SD repo carries: pickled and fp16 copies, a root checkpoint, sample images.
    decoys = {
        "unet/diffusion_pytorch_model.bin": b"pickle" * 100,
        "unet/diffusion_pytorch_model.fp16.safetensors": b"half" * 100,
        "v1-5-pruned.ckpt": b"root" * 100,
        "samples/cat.png": b"png",
    }
    hub.add_folder("tiny/anime-sd", tiny_sd_dir, decoys)
    yield hub
    hub.close()


# --- resolution ------------------------------------------------------------------------------------


def test_a_diffusers_folder_resolves_by_path_and_by_name(tiny_sd_dir: Path, models_dir: Path) -> None:
    store = ModelStore(models_dir)
    by_path = store.resolve(str(tiny_sd_dir))
    assert (by_path.kind, by_path.path, by_path.is_local) == ("folder", tiny_sd_dir, True)

    shutil.copytree(tiny_sd_dir, models_dir / "my-anime")
    by_name = store.resolve("my-anime")
    assert (by_name.kind, by_name.path) == ("folder", models_dir / "my-anime")


def test_a_single_file_resolves_by_path_by_name_and_inside_its_folder(
    tiny_sd_single_file: Path, models_dir: Path
) -> None:
    store = ModelStore(models_dir)
    assert store.resolve(str(tiny_sd_single_file)).kind == "single_file"

    models_dir.mkdir(parents=True)
    shutil.copy(tiny_sd_single_file, models_dir / "anime-v5.safetensors")
    source = store.resolve("anime-v5")
    assert (source.kind, source.path) == ("single_file", models_dir / "anime-v5.safetensors")

    (models_dir / "inked").mkdir()
    shutil.copy(tiny_sd_single_file, models_dir / "inked" / "inked-v2.safetensors")
    assert store.resolve("inked").path == models_dir / "inked" / "inked-v2.safetensors"


def test_a_hub_id_is_local_once_its_folder_is_complete(tiny_sd_dir: Path, models_dir: Path) -> None:
    store = ModelStore(models_dir)
    missing = store.resolve("someone/anime-sd")
    assert (missing.kind, missing.repo_id, missing.path, missing.is_local) == (
        "hub",
        "someone/anime-sd",
        None,
        False,
    )

    folder = shutil.copytree(tiny_sd_dir, models_dir / "someone--anime-sd")
    assert store.resolve("someone/anime-sd").path == folder

    (folder / ".inkframe-downloading").write_text("someone/anime-sd")
    assert store.resolve("someone/anime-sd").path is None


@pytest.mark.parametrize(
    ("ref", "error", "words"),
    [
        ("", InvalidRequestError, "Choose a model"),
        ("./nowhere/anime.safetensors", ModelNotFoundError, "no model file or folder"),
        ("anime-v9", ModelNotFoundError, "is not in"),
    ],
)
def test_bad_references_get_one_sentence(models_dir: Path, ref: str, error: type, words: str) -> None:
    with pytest.raises(error) as caught:
        ModelStore(models_dir).resolve(ref)
    assert words in str(caught.value) and one_sentence(str(caught.value))


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path, models_dir: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    with pytest.raises(InvalidRequestError, match="not a model file"):
        ModelStore(models_dir).resolve(str(notes))


# --- known models and presence ---------------------------------------------------------------------


def test_known_models_cover_every_role_with_hub_ids(models_dir: Path) -> None:
    known = ModelStore(models_dir).known_models()
    roles = {model.role for model in known}
    assert {"sd15", "controlnet-depth", "controlnet-openpose", "motion-adapter", "text-encoder"} <= roles
    assert len({model.repo_id for model in known}) == len(known)
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+", m.repo_id) and m.approx_size_gb > 0 for m in known)


def test_presence_looks_only_at_the_disk(tiny_sd_dir: Path, models_dir: Path, no_network: None) -> None:
    store = ModelStore(models_dir, endpoint=closed_port_url())
    depth = next(m for m in store.known_models() if m.role == "controlnet-depth")
    shutil.copytree(tiny_sd_dir / "unet", store.folder_for(depth.repo_id))
    present = {model.role: path for model, path in store.presence()}
    assert present["controlnet-depth"] == store.folder_for(depth.repo_id)
    assert present["sd15"] is None and present["motion-adapter"] is None


# --- offline and network failures ------------------------------------------------------------------


def test_offline_names_the_model_and_the_folder(models_dir: Path, no_network: None) -> None:
    store = ModelStore(models_dir, offline=True)
    with pytest.raises(OfflineError) as caught:
        store.ensure_local("someone/anime-sd")
    message = str(caught.value)
    assert "'someone/anime-sd'" in message and str(models_dir / "someone--anime-sd") in message
    assert "offline" in message and one_sentence(message)
    with pytest.raises(OfflineError):
        store.load_pipeline("someone/anime-sd")


def test_an_unreachable_hub_fails_fast_with_the_same_advice(models_dir: Path) -> None:
    store = ModelStore(models_dir, endpoint=closed_port_url(), timeout_s=2)
    started = time.monotonic()
    with pytest.raises(OfflineError) as caught:
        store.ensure_local("someone/anime-sd")
    assert time.monotonic() - started < 5
    assert "cannot be reached" in str(caught.value) and str(models_dir / "someone--anime-sd") in str(
        caught.value
    )
    assert one_sentence(str(caught.value))


def test_an_unknown_repo_says_so(models_dir: Path, fake_hub: FakeHub) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist on the Hugging Face Hub"):
        ModelStore(models_dir, endpoint=fake_hub.url).ensure_local("nobody/nothing")


# --- downloads -------------------------------------------------------------------------------------


def test_choose_download_files_keeps_one_safe_copy() -> None:
    sd15 = [
        "model_index.json", "v1-5-pruned.safetensors", "v1-5-pruned-emaonly.ckpt", "README.md",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.non_ema.safetensors",
        "text_encoder/model.safetensors", "text_encoder/pytorch_model.bin", "text_encoder/flax_model.msgpack",
        "tokenizer/vocab.json", "tokenizer/merges.txt", "vae/diffusion_pytorch_model.bin",
    ]  # fmt: skip
    assert choose_download_files(sd15) == [
        "README.md", "model_index.json", "text_encoder/model.safetensors", "tokenizer/merges.txt",
        "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.bin",
    ]  # fmt: skip
    minilm = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "onnx/model.onnx",
              "openvino/openvino_model.bin", "1_Pooling/config.json", "sentencepiece.bpe.model"]  # fmt: skip
    assert choose_download_files(minilm) == [
        "1_Pooling/config.json", "config.json", "model.safetensors", "sentencepiece.bpe.model",
    ]  # fmt: skip


def test_download_reports_progress_skips_decoys_and_loads(
    models_dir: Path, fake_hub: FakeHub, reference_image: np.ndarray
) -> None:
    store = ModelStore(models_dir, endpoint=fake_hub.url)
    steps: list[tuple[int, int, str]] = []
    folder = store.ensure_local("tiny/anime-sd", on_step=lambda s, t, m="", p=None: steps.append((s, t, m)))

    assert folder == models_dir / "tiny--anime-sd" and store.resolve("tiny/anime-sd").path == folder
    assert not any(name.endswith((".bin", ".ckpt", ".png", ".fp16.safetensors")) for name in fake_hub.fetched)
    weights = sum(len(fake_hub.repos["tiny/anime-sd"][name]) for name in fake_hub.fetched)
    byte_steps = [(s, t) for s, t, m in steps if m.startswith("Downloading tiny/anime-sd")]
    assert byte_steps and byte_steps[-1][0] == weights and all(s <= t for s, t in byte_steps)
    assert steps[-1][:2] == (1, 1)

    image = run_tiny_pipeline(store.load_pipeline("tiny/anime-sd"))
    np.testing.assert_allclose(image, reference_image, atol=1e-6)


def test_a_cancelled_download_is_not_present_and_resumes(models_dir: Path, fake_hub: FakeHub) -> None:
    store = ModelStore(models_dir, endpoint=fake_hub.url)
    folder, cancel = models_dir / "tiny--anime-sd", CancelToken()

    def finished_files() -> set[str]:
        names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        return {name for name in names if not name.startswith(".")}

    def stop_once_a_file_is_done(step: int, total: int, message: str = "", preview=None) -> None:
        # 10 files on 8 download threads: the last ones start only after others are in place.
        if finished_files():
            cancel.cancel()

    with pytest.raises(Cancelled):
        store.ensure_local("tiny/anime-sd", on_step=stop_once_a_file_is_done, cancel=cancel)
    assert store.resolve("tiny/anime-sd").path is None
    with pytest.raises(OfflineError, match="only partly downloaded"):
        ModelStore(models_dir, offline=True).ensure_local("tiny/anime-sd")

    kept = finished_files()
    assert kept, "no file finished before the cancel, so resuming is not tested"
    fake_hub.fetched.clear()
    assert store.ensure_local("tiny/anime-sd") == folder
    assert fake_hub.fetched and not kept & set(fake_hub.fetched), "finished files were downloaded again"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert store.resolve("tiny/anime-sd").path == folder


# --- loading ---------------------------------------------------------------------------------------


def test_a_folder_loads_as_a_pipeline_and_as_models(
    tiny_sd_dir: Path, models_dir: Path, reference_image
) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    store = ModelStore(models_dir, offline=True)
    pipe = store.load_pipeline(str(tiny_sd_dir))
    np.testing.assert_allclose(run_tiny_pipeline(pipe), reference_image, atol=1e-6)

    unet = store.load_model(
        str(tiny_sd_dir), UNet2DConditionModel, subfolder="unet", torch_dtype=torch.float32
    )
    torch.testing.assert_close(unet.state_dict(), pipe.unet.state_dict())
    text_encoder = store.load_model(str(tiny_sd_dir), CLIPTextModel, subfolder="text_encoder")
    torch.testing.assert_close(text_encoder.state_dict(), pipe.text_encoder.state_dict())


def test_a_single_file_checkpoint_round_trips(
    tiny_sd_dir: Path, tiny_sd_single_file: Path, models_dir: Path, reference_image, no_network: None
) -> None:
    store = ModelStore(models_dir, offline=True)
    pipe = store.load_pipeline(str(tiny_sd_single_file), config=str(tiny_sd_dir))
    np.testing.assert_allclose(run_tiny_pipeline(pipe), reference_image, atol=1e-6)


def test_a_single_file_finds_its_base_model_in_the_models_folder(
    tiny_sd_dir: Path, tiny_sd_single_file: Path, models_dir: Path, reference_image, no_network: None
) -> None:
    store = ModelStore(models_dir, offline=True)
    with pytest.raises(OfflineError) as caught:
        store.load_pipeline(str(tiny_sd_single_file))
    base_folder = models_dir / "stable-diffusion-v1-5--stable-diffusion-v1-5"
    assert str(base_folder) in str(caught.value) and one_sentence(str(caught.value))

    shutil.copytree(tiny_sd_dir, base_folder)
    image = run_tiny_pipeline(store.load_pipeline(str(tiny_sd_single_file)))
    np.testing.assert_allclose(image, reference_image, atol=1e-6)


def test_load_state_dict_reads_safetensors_and_plain_ckpt(tiny_sd_single_file: Path, tmp_path: Path) -> None:
    import torch

    store = ModelStore(tmp_path / "models")
    state = store.load_state_dict(tiny_sd_single_file)
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in state
    # Training checkpoints nest the weights under "state_dict" beside plain numbers.
    torch.save({"state_dict": {"w": torch.arange(4.0)}, "global_step": 7}, tmp_path / "plain.ckpt")
    assert torch.equal(store.load_state_dict(tmp_path / "plain.ckpt")["w"], torch.arange(4.0))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_pickle_with_code_is_refused_without_running_it(tiny_sd_dir: Path, tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "code-ran.txt"
    torch.save({"w": torch.ones(2), "payload": _RunsCode(marker)}, tmp_path / "evil.ckpt")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(CorruptModelError, match="contains Python code") as caught:
        store.load_state_dict(tmp_path / "evil.ckpt")
    with pytest.raises(CorruptModelError, match="contains Python code"):
        store.load_pipeline(str(tmp_path / "evil.ckpt"), config=str(tiny_sd_dir))
    assert not marker.exists() and one_sentence(str(caught.value))


def test_truncated_and_wrong_format_files_get_clear_errors(
    tiny_sd_dir: Path, tiny_sd_single_file: Path, tmp_path: Path
) -> None:
    import torch

    store = ModelStore(tmp_path / "models", offline=True)
    data = tiny_sd_single_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match="truncated") as caught:
        store.load_state_dict(tmp_path / "cut.safetensors")
    assert "cut.safetensors" in str(caught.value) and one_sentence(str(caught.value))

    (tmp_path / "renamed.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    with pytest.raises(CorruptModelError, match="not a valid .safetensors file"):
        store.load_state_dict(tmp_path / "renamed.safetensors")

    torch.save({"w": torch.ones(1000)}, tmp_path / "whole.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "whole.ckpt").read_bytes()[:500])
    with pytest.raises(CorruptModelError, match="could not be loaded"):
        store.load_state_dict(tmp_path / "cut.ckpt")

    broken = shutil.copytree(tiny_sd_dir, tmp_path / "broken-sd")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(CorruptModelError, match="diffusion_pytorch_model.safetensors' is truncated"):
        store.load_pipeline(str(broken))


def test_a_folder_of_the_wrong_kind_fails_clearly(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    store = ModelStore(tmp_path / "models", offline=True)
    with pytest.raises(CorruptModelError, match="could not be loaded") as caught:
        store.load_model(str(tiny_sd_dir / "unet"), AutoencoderKL)
    assert one_sentence(str(caught.value))

    garbled = shutil.copytree(tiny_sd_dir, tmp_path / "garbled")
    (garbled / "model_index.json").write_text("{ not json")
    with pytest.raises(CorruptModelError, match="could not be loaded"):
        store.load_pipeline(str(garbled))


# --- weights in memory, not mapped from their files ---------------------------------------------------


def mapped_paths(folder: Path) -> set[str]:
    """Files under ``folder`` that this process has memory-mapped (Linux), an empty set elsewhere."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return set()
    return {line.split(maxsplit=5)[5].strip() for line in maps.read_text().splitlines()
            if len(line.split(maxsplit=5)) == 6 and str(folder) in line}


def test_every_loading_path_returns_weights_in_memory_not_mapped_from_the_file(
    tiny_sd_dir: Path, tiny_sd_single_file: Path, models_dir: Path, reference_image
) -> None:
    import gc

    import torch
    from diffusers import DiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from engines.models.residency import file_mapped_bytes

    # diffusers alone maps the safetensors files: the measurement sees a mapping when there is one.
    mapped = DiffusionPipeline.from_pretrained(str(tiny_sd_dir), local_files_only=True)
    assert file_mapped_bytes(mapped) > 0
    del mapped
    gc.collect()

    store = ModelStore(models_dir, offline=True)
    pipe = store.load_pipeline(str(tiny_sd_dir))
    single = store.load_pipeline(str(tiny_sd_single_file), config=str(tiny_sd_dir))
    unet = store.load_model(str(tiny_sd_dir), UNet2DConditionModel, subfolder="unet")
    text_encoder = store.load_model(str(tiny_sd_dir), CLIPTextModel, subfolder="text_encoder")
    state = store.load_state_dict(tiny_sd_single_file)
    for loaded in (pipe, single, unet, text_encoder, state):
        assert file_mapped_bytes(loaded) == 0
    gc.collect()
    # Nothing keeps the files mapped, so Windows would let the artist replace or delete them.
    assert mapped_paths(tiny_sd_dir) == set() and mapped_paths(tiny_sd_single_file) == set()
    # Same pixels, and the weights stay ordinary trainable parameters.
    np.testing.assert_allclose(run_tiny_pipeline(pipe), reference_image, atol=1e-6)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in unet.parameters())


def test_a_sentence_transformer_loads_into_memory(tmp_path: Path, models_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from tiny_models import save_tiny_sentence_transformer

    from engines.models.residency import file_mapped_bytes

    folder = save_tiny_sentence_transformer(tmp_path / "text", seed=0)
    encoder = ModelStore(models_dir, offline=True).load_model(str(folder), SentenceTransformer, device="cpu")
    assert file_mapped_bytes(encoder) == 0
    assert encoder.encode(["ink manga"]).shape == (1, 32)


def test_read_into_memory_keeps_ties_views_and_requires_grad(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from engines.models.residency import file_mapped_bytes, read_into_memory

    save_file({"w": torch.randn(4, 4), "v": torch.arange(8.0)}, tmp_path / "t.safetensors")
    state = load_file(tmp_path / "t.safetensors")
    model = torch.nn.Module()
    model.a, model.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4, bias=False)
    model.a.weight.data = state["w"]
    model.b.weight = model.a.weight  # tied, as language models tie their embeddings
    model.frozen = torch.nn.Parameter(state["v"], requires_grad=False)
    model.register_buffer("window", state["v"][2:6])  # a view into the same storage
    weight = model.a.weight
    assert file_mapped_bytes(model) > 0

    assert read_into_memory(model) == 4 * 4 * 4 + 8 * 4
    assert file_mapped_bytes(model) == 0
    assert model.a.weight is weight and model.b.weight is weight and weight.requires_grad
    assert not model.frozen.requires_grad and torch.equal(model.window, torch.arange(2.0, 6.0))
    model.frozen.data[3] = 42.0
    assert model.window[1] == 42.0  # still one storage


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="exact mapping check is Linux's")
def test_weights_already_in_memory_are_not_copied_again(tmp_path: Path) -> None:
    import torch

    from engines.models.residency import read_into_memory

    # A plain torch.load reads every record into memory (storages torch's allocator did not make,
    # yet not mapped): a multi-GB .ckpt must not be copied a second time.
    torch.save({"w": torch.arange(1000.0)}, tmp_path / "plain.ckpt")
    state = torch.load(tmp_path / "plain.ckpt", map_location="cpu", weights_only=True)
    before = state["w"].untyped_storage().data_ptr()
    assert read_into_memory(state) == 0 and state["w"].untyped_storage().data_ptr() == before


def test_files_for_names_what_a_reference_loads_from(
    tiny_sd_dir: Path, tiny_sd_single_file: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_sd_dir, tmp_path / "models" / "tiny-sd")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "unet.metadata.json").write_text("{}")
    store = ModelStore(tmp_path / "models", offline=True)

    files = store.files_for("tiny-sd")
    names = {p.relative_to(folder).as_posix() for p in files}
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"} <= names
    assert not any(name.startswith(".cache") for name in names)
    assert store.files_for(str(tiny_sd_single_file)) == [tiny_sd_single_file.resolve()]
    assert ModelStore(tmp_path / "empty", offline=True).files_for("owner/not-downloaded") == []
