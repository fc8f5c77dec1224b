"""Reading generation parameters out of a ComfyUI API graph, the ``prompt`` text chunk of its PNGs.

The graph is ``{node_id: {"class_type": ..., "inputs": {...}}}``, and an input fed by another node is the
list ``[node_id, output_index]``. The parameters sit on the sampler node and on the nodes behind its links:

1. the sampler (KSampler or KSamplerAdvanced; the first by node id when there are several, since a hires
   pass is a second sampler added later) has the seed, steps, CFG, sampler and scheduler;
2. ``positive`` and ``negative`` lead to the text encoders, often through a ControlNet or a combine node;
3. ``model`` leads back through the LoRA loaders to the checkpoint loader;
4. ``latent_image`` leads to the empty latent that sets the size; CLIPSetLastLayer sets the clip skip.

Graphs are made by hand and by hundreds of custom nodes, so each step tolerates what it does not know and
the reader returns whatever it found, never raising: a half-read graph still fills half the fields.
"""

from __future__ import annotations

from typing import Any

from engines.sd15.a1111_text import GenerationParameters

_SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced")
# ComfyUI's sampler and scheduler names -> the names artists know from A1111 (its sampler list, and the
# schedule types it folds into a sampler's name, e.g. "DPM++ 2M Karras").
_SAMPLER_NAMES = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "lms": "LMS",
    "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a", "dpm_fast": "DPM fast", "dpm_adaptive": "DPM adaptive",
    "dpmpp_2s_ancestral": "DPM++ 2S a", "dpmpp_sde": "DPM++ SDE", "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE", "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "ddim": "DDIM", "uni_pc": "UniPC", "lcm": "LCM",
}
_SCHEDULE_NAMES = {
    "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform", "simple": "Simple",
    "beta": "Beta", "kl_optimal": "KL Optimal", "ddim_uniform": "DDIM",
}
# Inputs through which conditioning passes unchanged enough to find its text behind them.
_CONDITIONING_INPUTS = ("conditioning", "conditioning_1", "conditioning_to", "conditioning_from")
_TEXT_INPUTS = ("text", "text_g", "text_l")  # CLIPTextEncode, CLIPTextEncodeSDXL
# Where primitive and seed nodes (built in and custom) keep the value they feed to a linked input.
_VALUE_INPUTS = ("value", "int", "float", "string", "seed", "noise_seed", "text")
_CHECKPOINT_INPUTS = ("ckpt_name", "unet_name")
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")
_MAX_HOPS = 8  # a graph may link in a circle; no real chain is this long


def _node(graph: dict, ref: Any) -> dict | None:
    """The node a link ``[node_id, output_index]`` points to."""
    if not (isinstance(ref, list) and ref and isinstance(ref[0], (str, int))):
        return None
    node = graph.get(str(ref[0]))
    return node if isinstance(node, dict) else None


def _inputs(node: dict | None) -> dict:
    inputs = node.get("inputs") if node else None
    return inputs if isinstance(inputs, dict) else {}


def _value(graph: dict, value: Any, keys: tuple[str, ...] = _VALUE_INPUTS) -> Any:
    """A widget value, following a link to a primitive or seed node when the input is converted to one."""
    for _ in range(_MAX_HOPS):
        node = _node(graph, value)
        if node is None:
            return value
        inputs = _inputs(node)
        value = next((inputs[key] for key in keys if key in inputs), None)
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _short_name(file_name: Any) -> str | None:
    """``"sd15/anything-v5.safetensors"`` -> ``"anything-v5"``: the name A1111 shows for a model file."""
    if not isinstance(file_name, str) or not file_name.strip():
        return None
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in _MODEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def a1111_sampler(sampler: str, scheduler: str) -> str:
    """ComfyUI's ``sampler_name`` and ``scheduler`` as one A1111 sampler name, e.g. "DPM++ 2M Karras".

    A pair A1111 has no name for keeps ComfyUI's words ("name scheduler"), so nothing is guessed."""
    base = _SAMPLER_NAMES.get(sampler)
    # The sampler's own default schedule in A1111, so its name carries none.
    if base and (scheduler in ("", "normal") or (sampler, scheduler) == ("ddim", "ddim_uniform")):
        return base
    schedule = _SCHEDULE_NAMES.get(scheduler)
    if base and schedule:
        return f"{base} {schedule}"
    return f"{sampler} {scheduler}".strip()


def _sort_key(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _first_node(graph: dict, accept: Any) -> dict | None:
    for node_id in sorted(graph, key=lambda k: _sort_key(str(k))):
        node = graph[node_id]
        if isinstance(node, dict) and accept(node):
            return node
    return None


def _prompt_text(graph: dict, ref: Any, side: str) -> str | None:
    """The text of the encoder behind a conditioning link, through ControlNet, combine and similar nodes."""
    frontier, seen = [ref], set()
    for _ in range(_MAX_HOPS):
        node = _node(graph, frontier.pop(0)) if frontier else None
        if node is None or id(node) in seen:
            return None
        seen.add(id(node))
        inputs = _inputs(node)
        for key in _TEXT_INPUTS:
            text = _value(graph, inputs.get(key), ("text", "string", "value"))
            if isinstance(text, str):
                return text
        # ControlNetApplyAdvanced passes both sides on: follow the one we came from first.
        frontier += [inputs[key] for key in (side, *_CONDITIONING_INPUTS) if key in inputs]
    return None


def _model_chain(graph: dict, ref: Any) -> tuple[str | None, list[tuple[str, float | None]]]:
    """The checkpoint behind a ``model`` link and the LoRAs on the way, in the order they are applied."""
    loras: list[tuple[str, float | None]] = []
    for _ in range(_MAX_HOPS):
        node = _node(graph, ref)
        if node is None:
            break
        inputs = _inputs(node)
        checkpoint = next((inputs[key] for key in _CHECKPOINT_INPUTS if key in inputs), None)
        if checkpoint is not None:
            return _short_name(_value(graph, checkpoint)), loras[::-1]
        lora = _short_name(_value(graph, inputs.get("lora_name")))
        if lora:
            loras.append((lora, _as_float(_value(graph, inputs.get("strength_model")))))
        ref = inputs.get("model")
    return None, loras[::-1]


def _latent_size(graph: dict, ref: Any) -> tuple[int | None, int | None]:
    for _ in range(_MAX_HOPS):
        inputs = _inputs(_node(graph, ref))
        if "width" in inputs and "height" in inputs:
            return _as_int(_value(graph, inputs["width"])), _as_int(_value(graph, inputs["height"]))
        ref = inputs.get("samples")
    return None, None


def _with_lora_tags(prompt: str, loras: list[tuple[str, float | None]]) -> str:
    """A1111 keeps a LoRA's strength in the prompt as ``<lora:name:weight>``, so the studio's prompt
    reader applies the same LoRAs at the same strengths as the graph did."""
    tags = [f"<lora:{name}:{_number_text(1.0 if weight is None else weight)}>" for name, weight in loras
            if f"<lora:{name}:" not in prompt and f"<lora:{name}>" not in prompt]  # already tagged by hand
    return ", ".join(part for part in (prompt, *tags) if part)


def read_comfyui_graph(graph: Any) -> GenerationParameters | None:
    """The parameters found in a ComfyUI API graph (``source == "comfyui"``); None when nothing was found."""
    if not isinstance(graph, dict):
        return None
    sampler = _first_node(graph, lambda node: node.get("class_type") in _SAMPLER_CLASSES)
    found: dict[str, Any] = {}
    if sampler is not None:
        inputs = _inputs(sampler)
        found["seed"] = _as_int(_value(graph, inputs.get("seed", inputs.get("noise_seed"))))
        found["steps"] = _as_int(_value(graph, inputs.get("steps")))
        found["cfg"] = _as_float(_value(graph, inputs.get("cfg")))
        name, scheduler = _value(graph, inputs.get("sampler_name")), _value(graph, inputs.get("scheduler"))
        if isinstance(name, str):
            found["sampler"] = a1111_sampler(name, scheduler if isinstance(scheduler, str) else "")
        found["prompt"] = _prompt_text(graph, inputs.get("positive"), "positive")
        found["negative"] = _prompt_text(graph, inputs.get("negative"), "negative")
        found["model"], loras = _model_chain(graph, inputs.get("model"))
        found["width"], found["height"] = _latent_size(graph, inputs.get("latent_image"))
    else:
        loras = []
    if not found.get("model"):  # no sampler, or a chain through nodes we cannot read: any checkpoint will do
        loader = _first_node(graph, lambda node: any(key in _inputs(node) for key in _CHECKPOINT_INPUTS))
        inputs = _inputs(loader)
        checkpoint = next((inputs[key] for key in _CHECKPOINT_INPUTS if key in inputs), None)
        found["model"] = _short_name(_value(graph, checkpoint))
    clip = _first_node(graph, lambda node: node.get("class_type") == "CLIPSetLastLayer")
    layer = _as_int(_value(graph, _inputs(clip).get("stop_at_clip_layer")))
    if layer is not None and layer < 0:
        found["clip_skip"] = -layer  # -2 is "the second layer from the end": A1111's clip skip 2
    if loras:
        found["loras"] = tuple((name, "") for name, _ in loras)
        found["prompt"] = _with_lora_tags(found.get("prompt") or "", loras)
    found = {key: value for key, value in found.items() if value is not None}
    return GenerationParameters(**found, source="comfyui") if found else None
