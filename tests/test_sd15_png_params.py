"""Generation parameters in images (A1111 text, ComfyUI graphs, Inkframe JSON) and A1111's file hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engines.errors import InvalidRequestError
from engines.sd15 import file_hashes
from engines.sd15.comfyui_graph import a1111_sampler, read_comfyui_graph
from engines.sd15.file_hashes import HashCache, lora_hash, model_hash
from engines.sd15.png_params import (
    GenerationParameters,
    format_a1111,
    parse_a1111,
    png_info,
    read_png_parameters,
    save_png,
)

FULL = GenerationParameters(
    prompt="1girl, solo, <lora:lineart:0.8>, monochrome\n(speed lines:1.2), screentone",
    negative="lowres, bad hands\ntext, watermark",
    steps=20, sampler="DPM++ 2M Karras", cfg=7.5, seed=1234, width=512, height=768,
    model="anything-v5", model_hash="6ce0161689", clip_skip=2,
    loras=(("lineart", "0a1b2c3d4e5f"), ("flat", "111111111111")),
    hires_scale=2.0, hires_steps=10, hires_strength=0.5,
    extra=(("Hires upscaler", "Latent"), ("Version", "Inkframe 0.1.0")),
)

# In the style Civitai shows for an A1111 1.10 image (an ADetailer pass, a LoRA, two embeddings).
CIVITAI_TEXT = (
    "masterpiece, best quality, 1girl, solo, long hair, school uniform, <lora:lineart_v2:0.8>, monochrome,\n"
    "(manga style:1.2), speed lines\n"
    "Negative prompt: (worst quality, low quality:1.4), easynegative, bad-hands-5, text, watermark\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 512x768, "
    "Model hash: 7f96a1a9ca, Model: AnythingV5Ink_ink, Denoising strength: 0.45, Clip skip: 2, "
    "ADetailer model: face_yolov8n.pt, ADetailer confidence: 0.3, ADetailer version: 24.9.0, "
    "Hires upscale: 1.5, Hires steps: 12, Hires upscaler: R-ESRGAN 4x+ Anime6B, "
    'Lora hashes: "lineart_v2: 6a2ad3b1b2c3", '
    'TI hashes: "easynegative: c74b4e810b03, bad-hands-5: aa7651be154c", '
    "Emphasis: Original, Version: v1.10.1"
)

COMFY_GRAPH = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 42, "steps": 25, "cfg": 7.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1,
        "model": ["10", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/anything-v5.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "1girl, manga, screentone", "clip": ["11", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres, bad anatomy", "clip": ["11", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    "10": {"class_type": "LoraLoader", "inputs": {
        "lora_name": "style\\lineart.safetensors", "strength_model": 0.8, "strength_clip": 1.0,
        "model": ["4", 0], "clip": ["4", 1]}},
    "11": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["10", 1]}},
}


def _png(path: Path, **texts: str) -> Path:
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8), "white").save(path, pnginfo=info)
    return path


# --- A1111's text ---------------------------------------------------------------------------------------


def test_full_parameters_round_trip() -> None:
    text = format_a1111(FULL)
    assert text.splitlines()[-1] == (
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234, Size: 512x768, "
        'Model hash: 6ce0161689, Model: anything-v5, Clip skip: 2, Lora hashes: "lineart: 0a1b2c3d4e5f, '
        'flat: 111111111111", Hires upscale: 2, Hires steps: 10, Denoising strength: 0.5, '
        "Hires upscaler: Latent, Version: Inkframe 0.1.0"
    )
    assert parse_a1111(text) == FULL


def test_missing_negative_and_missing_values_are_left_out() -> None:
    p = GenerationParameters(prompt="a cat\non a roof", steps=12, seed=7)
    text = format_a1111(p)
    assert text == "a cat\non a roof\nSteps: 12, Seed: 7"
    assert parse_a1111(text) == p
    only_prompt = "just a prompt, with commas"
    assert parse_a1111(only_prompt) == GenerationParameters(prompt=only_prompt)


def test_negative_prompt_words_inside_a_line_stay_in_the_prompt() -> None:
    p = GenerationParameters(prompt='a sign that reads "Negative prompt: none"', negative="blurry", steps=5)
    assert parse_a1111(format_a1111(p)) == p
    # A line that starts with it has no escape in A1111's format: like A1111, it starts the negative prompt.
    read = parse_a1111("cat\nNegative prompt: dog\nNegative prompt: again\nSteps: 5, Seed: 1")
    assert (read.prompt, read.negative) == ("cat", "dog\nNegative prompt: again")


def test_quoted_values_with_commas_and_colons_round_trip() -> None:
    extra = (("Hires prompt", "1girl, smile: wide"), ("Note", ' padded "quote" '), ("Emphasis", "Original"))
    p = GenerationParameters(prompt="x", steps=3, extra=extra)
    text = format_a1111(p)
    assert 'Hires prompt: "1girl, smile: wide"' in text and "Emphasis: Original" in text
    assert parse_a1111(text) == p


def test_unknown_keys_are_kept_in_order_and_bad_values_as_text() -> None:
    read = parse_a1111("p\nSteps: 20, Zeta: 1, Alpha: two, Seed: not-a-number, Size: huge, Beta: 3")
    assert read.steps == 20 and read.seed is None and read.width is None
    assert read.extra == (("Zeta", "1"), ("Alpha", "two"), ("Seed", "not-a-number"), ("Size", "huge"),
                          ("Beta", "3"))
    assert parse_a1111(format_a1111(read)) == read


@pytest.mark.parametrize("line", [
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7",
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7",
])
def test_old_and_new_karras_samplers_read_the_same(line: str) -> None:
    read = parse_a1111(f"cat\n{line}")
    assert read.sampler == "DPM++ 2M Karras" and read.extra == ()


def test_automatic_schedule_is_no_part_of_the_sampler_name() -> None:
    read = parse_a1111("cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7")
    assert read.sampler == "Euler a" and read.extra == ()
    assert "Sampler: Euler a, CFG" in format_a1111(read)


def test_civitai_style_text_reads() -> None:
    read = parse_a1111(CIVITAI_TEXT)
    assert read.prompt.startswith("masterpiece, best quality") and read.prompt.endswith("speed lines")
    assert "\n" in read.prompt
    assert read.negative == "(worst quality, low quality:1.4), easynegative, bad-hands-5, text, watermark"
    assert (read.steps, read.sampler, read.cfg, read.seed) == (28, "DPM++ 2M Karras", 6.5, 3141592653)
    assert (read.width, read.height) == (512, 768)
    assert (read.model_hash, read.model) == ("7f96a1a9ca", "AnythingV5Ink_ink")
    assert (read.clip_skip, read.hires_scale, read.hires_steps, read.hires_strength) == (2, 1.5, 12, 0.45)
    assert read.loras == (("lineart_v2", "6a2ad3b1b2c3"),)
    assert read.extra == (
        ("ADetailer model", "face_yolov8n.pt"), ("ADetailer confidence", "0.3"),
        ("ADetailer version", "24.9.0"),
        ("Hires upscaler", "R-ESRGAN 4x+ Anime6B"),
        ("TI hashes", "easynegative: c74b4e810b03, bad-hands-5: aa7651be154c"),
        ("Emphasis", "Original"), ("Version", "v1.10.1"),
    )
    assert read.source == "a1111"


@pytest.mark.parametrize("text", ["", "\n\n", ":", ", , ,", 'Steps: "unclosed, Seed: 1', "Steps:\nSteps:",
                                  "a: b: c, d", "Lora hashes: , Steps: 1", '"\\', "Size: 0x, Steps: -1"])
def test_odd_text_never_raises(text: str) -> None:
    assert isinstance(parse_a1111(text), GenerationParameters)


def test_a_comma_in_an_unquoted_value_is_glued_back() -> None:
    read = parse_a1111("cat\nSteps: 20, Hires upscaler: 4x, sharp, Seed: 5")
    assert read.seed == 5 and read.extra == (("Hires upscaler", "4x, sharp"),)


# --- ComfyUI graphs -------------------------------------------------------------------------------------


def test_comfyui_png_reads(tmp_path: Path) -> None:
    path = _png(tmp_path / "comfy.png", prompt=json.dumps(COMFY_GRAPH), workflow="{}")
    read, inkframe = read_png_parameters(path)
    assert inkframe is None
    assert read == GenerationParameters(
        prompt="1girl, manga, screentone, <lora:lineart:0.8>", negative="lowres, bad anatomy", steps=25,
        sampler="DPM++ 2M Karras", cfg=7.5, seed=42, width=512, height=768, model="anything-v5", clip_skip=2,
        loras=(("lineart", ""),), source="comfyui",
    )


def test_comfyui_prompts_behind_conditioning_nodes_and_linked_values() -> None:
    graph = json.loads(json.dumps(COMFY_GRAPH))
    graph["3"] = {"class_type": "KSamplerAdvanced", "inputs": {**graph["3"]["inputs"], "positive": ["20", 0],
                                                             "negative": ["20", 1], "noise_seed": ["30", 0]}}
    del graph["3"]["inputs"]["seed"]
    graph["20"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["21", 0], "negative": ["7", 0], "control_net": ["22", 0], "strength": 1.0}}
    graph["21"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0],
                                                                   "conditioning_2": ["7", 0]}}
    graph["30"] = {"class_type": "PrimitiveInt", "inputs": {"value": 99}}
    found = read_comfyui_graph(graph)
    assert found is not None and found.seed == 99
    assert found.prompt.startswith("1girl, manga") and found.negative == "lowres, bad anatomy"


@pytest.mark.parametrize(("name", "scheduler", "expected"), [
    ("euler_ancestral", "normal", "Euler a"), ("euler", "normal", "Euler"),
    ("dpmpp_2m", "karras", "DPM++ 2M Karras"), ("dpmpp_sde", "karras", "DPM++ SDE Karras"),
    ("ddim", "ddim_uniform", "DDIM"), ("uni_pc", "normal", "UniPC"), ("lcm", "normal", "LCM"),
    ("my_sampler", "karras", "my_sampler karras"), ("euler", "ays_custom", "euler ays_custom"),
])
def test_comfyui_sampler_names(name: str, scheduler: str, expected: str) -> None:
    assert a1111_sampler(name, scheduler) == expected


@pytest.mark.parametrize("graph", [
    None, [], "text", {"1": "node"}, {"1": {"class_type": "KSampler"}},
    {"1": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["1", 0], "steps": [None],
                                                 "latent_image": ["1", 0], "seed": True, "cfg": "x"}}},
    {"1": {"class_type": "KSampler", "inputs": {"positive": ["2", 0]}},
     "2": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0]}}},
    {"1": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": "deep"}}},
])
def test_graphs_we_cannot_understand_give_what_was_found(graph: object) -> None:
    found = read_comfyui_graph(graph)
    assert found is None or found.source == "comfyui"


def test_comfyui_graph_without_sampler_still_gives_the_model() -> None:
    assert read_comfyui_graph({"4": COMFY_GRAPH["4"]}) == GenerationParameters(model="anything-v5",
                                                                               source="comfyui")
    assert read_comfyui_graph({"1": {"class_type": "VAEDecode", "inputs": {}}}) is None


# --- image files ----------------------------------------------------------------------------------------


def test_save_png_then_read_gives_both_back(tmp_path: Path) -> None:
    inkframe = {"backend": "sd15", "request": {"seed": 1234, "loras": [["lineart", 0.8]]}, "size": [8, 8]}
    p = dataclasses.replace(FULL, prompt=FULL.prompt + ", 漫画")  # not Latin-1: Pillow writes iTXt
    saved = save_png(Image.new("RGB", (8, 8), "red"), tmp_path / "out" / "page.png", p, inkframe)
    assert saved == tmp_path / "out" / "page.png" and list(saved.parent.iterdir()) == [saved]
    with Image.open(saved) as image:
        image.load()
        assert image.format == "PNG" and image.size == (8, 8)
        assert image.text["inkframe"] == json.dumps(inkframe, sort_keys=True)
        assert image.text["parameters"] == format_a1111(p)
        read, read_json = read_png_parameters(image)
    assert read == dataclasses.replace(p, source="inkframe") and read_json == inkframe
    assert read_png_parameters(str(saved)) == (read, inkframe)


def test_png_info_carries_both_chunks() -> None:
    info = png_info(FULL, {"a": 1})
    keys = [chunk[1][: chunk[1].index(b"\0")] for chunk in info.chunks]
    assert keys == [b"parameters", b"inkframe"]


def test_inkframe_json_alone_gives_its_parameters(tmp_path: Path) -> None:
    from_text = _png(tmp_path / "a.png", inkframe=json.dumps({"a1111": format_a1111(FULL)}))
    assert read_png_parameters(from_text)[0] == dataclasses.replace(FULL, source="inkframe")
    fields = {"prompt": "cat", "steps": 9, "cfg": 5, "seed": "bad", "loras": [["x", "abc"]],
              "source": "a1111"}
    by_field = _png(tmp_path / "b.png", inkframe=json.dumps({"parameters": fields}))
    assert read_png_parameters(by_field)[0] == GenerationParameters(
        prompt="cat", steps=9, cfg=5.0, loras=(("x", "abc"),), source="inkframe")


def test_a1111_png_and_preference_order(tmp_path: Path) -> None:
    a1111 = _png(tmp_path / "a.png", parameters=CIVITAI_TEXT, prompt=json.dumps(COMFY_GRAPH))
    assert read_png_parameters(a1111) == (parse_a1111(CIVITAI_TEXT), None)
    broken = _png(tmp_path / "b.png", inkframe="{not json", prompt=json.dumps(COMFY_GRAPH))
    assert read_png_parameters(broken)[0].source == "comfyui"


def test_jpeg_exif_user_comment_reads(tmp_path: Path) -> None:
    exif = Image.Exif()
    # As piexif writes it for A1111: a charset prefix, then UTF-16 big-endian.
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + CIVITAI_TEXT.encode("utf-16-be")
    path = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(path, exif=exif)
    assert read_png_parameters(path)[0] == parse_a1111(CIVITAI_TEXT)


def test_png_without_chunks_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("L", (4, 4)).save(path)
    assert read_png_parameters(path) == (GenerationParameters(source="none"), None)


def test_files_that_are_not_images_give_one_sentence(tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.raises(InvalidRequestError, match="notes.png is not an image"):
        read_png_parameters(notes)
    with pytest.raises(InvalidRequestError, match="There is no file"):
        read_png_parameters(tmp_path / "missing.png")
    with pytest.raises(InvalidRequestError, match="only in .png files"):
        save_png(Image.new("RGB", (4, 4)), tmp_path / "a.jpg", FULL, {})


# --- file hashes ----------------------------------------------------------------------------------------


def _safetensors(path: Path, metadata: dict[str, str]) -> Path:
    from safetensors.numpy import save_file

    tensors = {"lora_up.weight": np.arange(64, dtype=np.float32).reshape(8, 8),
               "alpha": np.ones(1, np.float32)}
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_model_hash_is_the_start_of_sha256(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # more than one 1 MiB block
    assert model_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert lora_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_lora_hash_ignores_safetensors_metadata(tmp_path: Path) -> None:
    first = _safetensors(tmp_path / "a.safetensors", {"ss_output_name": "lineart"})
    second = _safetensors(tmp_path / "b.safetensors", {"ss_output_name": "renamed", "note": "x" * 100})
    assert first.read_bytes() != second.read_bytes()
    assert lora_hash(first) == lora_hash(second) and len(lora_hash(first)) == 12
    assert model_hash(first) != model_hash(second)
    data = first.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")
    assert lora_hash(first) == hashlib.sha256(data[start:]).hexdigest()[:12]


def test_a_cut_off_safetensors_file_is_one_sentence(tmp_path: Path) -> None:
    from engines.errors import CorruptModelError, ModelNotFoundError

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((10_000).to_bytes(8, "little") + b"{}")
    with pytest.raises(CorruptModelError, match="cut.safetensors is not a whole"):
        lora_hash(cut)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        HashCache(tmp_path / "cache.json").get(tmp_path / "gone.ckpt", "model")


def test_hash_cache_reads_each_file_version_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, str]] = []
    real = file_hashes.full_digest

    def counting(path: Path, kind: str) -> str:
        calls.append((Path(path), kind))
        return real(path, kind)

    monkeypatch.setattr(file_hashes, "full_digest", counting)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"first version")
    first = hashlib.sha256(b"first version").hexdigest()[:10]
    cache_file = tmp_path / "cache" / "hashes.json"
    cache = HashCache(cache_file)
    assert cache.get(model, "model") == first
    assert cache.get(model, "model") == first
    assert HashCache(cache_file).get(model, "model") == first  # a new process reads the file
    assert len(calls) == 1
    model.write_bytes(b"second, longer version")
    assert HashCache(cache_file).get(model, "model") == hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    assert len(calls) == 2
    os.utime(model, ns=(1, 1))  # same size, other mtime: another version
    cache.get(model, "model")
    assert len(calls) == 3


def test_corrupt_hash_cache_is_ignored_and_rewritten(tmp_path: Path) -> None:
    model = tmp_path / "model.ckpt"
    model.write_bytes(b"weights")
    cache_file = tmp_path / "hashes.json"
    cache_file.write_text("{ half a json")
    assert HashCache(cache_file).get(model, "model") == model_hash(model)
    entries = json.loads(cache_file.read_text())["entries"]
    assert entries[f"model:{model.resolve()}"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
