"""The motion adapter in the pool, and the motion UNet that shares every weight with the pooled checkpoint.

AnimateDiff adds temporal attention ("motion modules") between the blocks of an SD 1.5 UNet. diffusers
builds its ``UNetMotionModel`` with ``UNetMotionModel.from_unet2d(unet, adapter)``, which creates new
layers and *copies* the UNet's weights into them: 1.7 GB more in fp16, and a second copy for the pool to
move and evict. Here the motion UNet is built per job on the meta device (no memory) and its layers are
then the very modules of the pooled UNet and the pooled adapter:

1. the 2D parts (``conv_in``, time embedding, each block's resnets, attentions and samplers, the mid
   block, ``conv_out``) are assigned from the pooled ``UNet2DConditionModel``;
2. each block's ``motion_modules`` are assigned from the pooled ``MotionAdapter``;
3. nothing is left on the meta device (checked), and nothing was copied: the pool still counts each
   weight once, and Text-to-Manga, Live-Action and Animation run on one copy of the checkpoint.
The result equals ``from_unet2d``'s pixel for pixel (tests/test_animation.py checks it). LoRAs fitted to
the checkpoint and an IP-Adapter's attention processors come along, being in those same modules.

A motion adapter comes as an HF id, a diffusers folder, or one file as AnimateDiff publishes it
(``mm_sd_v15_v2.ckpt``, ``v3_sd15_mm.ckpt``); a single file's config is written from its own weights
(widths, layers, mid block, frame limit), so diffusers never reaches for the Hub.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from engines.errors import InvalidRequestError
from engines.hardware import MemoryPolicy
from engines.models import config_folder

# The adapter alone holds no activations: the UNet's policy covers the job.
POLICY = MemoryPolicy(working_bytes=0)


def pool_name(ref: str) -> str:
    return f"motion:{ref}"


def register_motion_adapter(hardware: Any, store: Any, ref: str, norm_groups: int = 32) -> str:
    """Register the motion adapter ``ref`` in the pool (not on the device yet); returns its pool name.

    ``norm_groups`` is the checkpoint UNet's, which a single file's motion modules are given (as
    diffusers' ``from_unet2d`` gives them): the files do not record it."""
    dtype = hardware.dtype("inference")
    return hardware.register_once(pool_name(ref), lambda: load_motion_adapter(store, ref, dtype, norm_groups),
                                  policy=POLICY, files=store.files_for(ref))


def load_motion_adapter(store: Any, ref: str, dtype: Any, norm_groups: int = 32) -> Any:
    from diffusers import MotionAdapter

    source = store.resolve(ref)
    kwargs: dict[str, Any] = {}
    if source.kind == "single_file":
        kwargs["config"] = str(_config_folder(store, source.path, norm_groups))
    model = store.load_model(ref, MotionAdapter, torch_dtype=dtype, **kwargs)
    if not isinstance(model, MotionAdapter):
        raise InvalidRequestError(f"'{ref}' is not an AnimateDiff motion adapter.")
    model.eval()
    return model


def check_fits(unet: Any, adapter: Any, ref: str) -> None:
    """One sentence when the adapter was made for another UNet (SDXL's, or another layout)."""
    widths = tuple(unet.config.block_out_channels)
    if tuple(adapter.config.block_out_channels) != widths:
        raise InvalidRequestError(
            f"Motion adapter '{ref}' is made for another model family (block widths "
            f"{tuple(adapter.config.block_out_channels)}, the checkpoint's are {widths}): choose an SD 1.5 one.")
    layers = unet.config.layers_per_block
    wanted = adapter.config.motion_layers_per_block
    if (layers if isinstance(layers, int) else tuple(layers)) != (
            wanted if isinstance(wanted, int) else tuple(wanted)):
        raise InvalidRequestError(f"Motion adapter '{ref}' has {wanted} layers per block, the checkpoint {layers}.")


def motion_unet(unet: Any, adapter: Any) -> Any:
    """A ``UNetMotionModel`` whose every weight is one of ``unet``'s or ``adapter``'s (see the module's steps).

    Building the model's skeleton (even with no memory behind it) takes longer than the rest of a tab switch,
    so it is built once per UNet and adapter and kept with the adapter (dropped when that UNet is freed);
    each job gets its own copy of the skeleton's tables of layers, so what a job changes in the structure
    (FreeNoise blocks, split inference wrappers, hooks) stays with the job and never reaches the pool.
    """
    import weakref

    cache = adapter.__dict__.setdefault("_inkframe_motion_unets", {})
    entry = cache.get(id(unet))
    if entry is None or entry[0]() is not unet:
        entry = (weakref.ref(unet), _build_motion_unet(unet, adapter))
        cache[id(unet)] = entry
        weakref.finalize(unet, cache.pop, id(unet), None)
    model = _job_copy(entry[1])
    # An IP-Adapter fitted to the checkpoint since (or taken out) is the UNet's of today.
    model.encoder_hid_proj = getattr(unet, "encoder_hid_proj", None)
    model.register_to_config(encoder_hid_dim_type=unet.config.encoder_hid_dim_type)
    return model


def _build_motion_unet(unet: Any, adapter: Any) -> Any:
    from accelerate import init_empty_weights
    from diffusers import UNetMotionModel
    from diffusers.models.modeling_utils import no_init_weights

    with init_empty_weights(), no_init_weights():
        model = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)
    # 1. the 2D parts
    for name in ("conv_in", "time_proj", "time_embedding", "conv_norm_out", "conv_act", "conv_out"):
        setattr(model, name, getattr(unet, name))
    pairs = [(model.down_blocks, unet.down_blocks, adapter.down_blocks, "downsamplers"),
             (model.up_blocks, unet.up_blocks, adapter.up_blocks, "upsamplers"),
             ([model.mid_block], [unet.mid_block], [getattr(adapter, "mid_block", None)], "")]
    for mine, theirs, motion, sampler in pairs:
        for block, original, motion_block in zip(mine, theirs, motion):
            for part in ("resnets", "attentions", sampler):
                if part and getattr(original, part, None) is not None:
                    setattr(block, part, getattr(original, part))
            # 2. the motion modules
            if hasattr(block, "motion_modules") and motion_block is not None:
                block.motion_modules = motion_block.motion_modules
    model.encoder_hid_proj = None
    # 3. nothing left behind on the meta device
    _check_no_meta(model, "the motion UNet")
    return model


def use_free_noise(model: Any, context: int, stride: int) -> None:
    """Turn the job's motion modules into FreeNoise's windowed blocks, sharing their layers.

    diffusers' ``enable_free_noise`` builds each ``FreeNoiseTransformerBlock`` anew and copies the weights
    in, inside the adapter's own modules: a second copy of the motion weights, left in the pooled adapter
    after the job. Here each block is built empty and given the original's layers, in the job's copy of
    the motion module; ``enable_free_noise`` then finds FreeNoise blocks and only sets their windows.
    """
    from accelerate import init_empty_weights
    from diffusers.models.attention import BasicTransformerBlock, FreeNoiseTransformerBlock

    for block in (*model.down_blocks, model.mid_block, *model.up_blocks):
        for module in getattr(block, "motion_modules", ()):
            for index, basic in enumerate(module.transformer_blocks):
                if not isinstance(basic, BasicTransformerBlock):
                    continue
                with init_empty_weights():
                    windowed = FreeNoiseTransformerBlock(
                        dim=basic.dim, num_attention_heads=basic.num_attention_heads,
                        attention_head_dim=basic.attention_head_dim, dropout=basic.dropout,
                        cross_attention_dim=basic.cross_attention_dim, activation_fn=basic.activation_fn,
                        attention_bias=basic.attention_bias, only_cross_attention=basic.only_cross_attention,
                        double_self_attention=basic.double_self_attention,
                        positional_embeddings=basic.positional_embeddings,
                        num_positional_embeddings=basic.num_positional_embeddings,
                        context_length=context, context_stride=stride)
                for name in list(windowed._modules):
                    windowed._modules[name] = basic._modules.get(name)
                windowed.set_chunk_feed_forward(basic._chunk_size, basic._chunk_dim)
                _check_no_meta(windowed, "a FreeNoise block")
                module.transformer_blocks[index] = windowed


# The tables a job may change, and whether the modules in each are copied too (blocks and motion modules,
# whose own tables a job changes) or shared as they are (the layers holding weights).
_JOB_TABLES = {"down_blocks": True, "up_blocks": True, "motion_modules": True, "resnets": False,
               "attentions": False, "downsamplers": False, "upsamplers": False, "transformer_blocks": False}


def _job_copy(module: Any) -> Any:
    """A shallow copy of ``module`` for one job: the same layers, its own tables of children and hooks."""
    import copy
    from collections import OrderedDict

    from torch import nn

    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    for hooks in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                  "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
        if hasattr(module, hooks):
            setattr(clone, hooks, OrderedDict(getattr(module, hooks)))
    for name, child in list(clone._modules.items()):
        if name == "mid_block" and child is not None:
            clone._modules[name] = _job_copy(child)
        elif name in _JOB_TABLES and isinstance(child, nn.ModuleList):
            clone._modules[name] = nn.ModuleList([_job_copy(c) if _JOB_TABLES[name] else c for c in child])
    return clone


def _check_no_meta(model: Any, what: str) -> None:
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{what} has layers without weights: {', '.join(left[:3])}")


# -- a single file's config -----------------------------------------------------------------------------


def _config_folder(store: Any, path: Path, norm_groups: int) -> Path:
    """A folder with the MotionAdapter config read from the file's own keys, under models/.configs/."""
    fields = adapter_config_from_keys(_shapes(path), norm_groups)
    return config_folder(store.models_dir, "motion", {"_class_name": "MotionAdapter", **fields})


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, read without loading the weights (safetensors header; torch for a .ckpt)."""
    if Path(path).suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    import torch

    state = torch.load(str(path), map_location="meta", weights_only=True)
    state = state.get("state_dict", state)
    return {key: tuple(value.shape) for key, value in state.items()}


def adapter_config_from_keys(shapes: dict[str, tuple[int, ...]], norm_groups: int = 32) -> dict[str, Any]:
    """MotionAdapter's config from an AnimateDiff checkpoint's keys and shapes.

    Widths come from each down block's first temporal ``proj_in``; layers per block from the motion
    modules numbered in block 0; the frame limit from the position table (24 for v1, 32 since);
    a mid block when its keys are there (v2). Heads and norm groups are not in the shapes: heads are
    AnimateDiff's 8 in every release, norm groups the checkpoint UNet's (32 for SD 1.5).
    """
    down = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"down_blocks\.(\d+)\.motion_modules", k))})
    if not down:
        raise InvalidRequestError("This file has no AnimateDiff motion modules; it is not a motion adapter.")
    widths = [shapes[f"down_blocks.{b}.motion_modules.0.temporal_transformer.proj_in.weight"][0] for b in down]
    layers = len({m.group(1) for k in shapes if (m := re.match(r"down_blocks\.0\.motion_modules\.(\d+)\.", k))})
    table = next((shape for key, shape in shapes.items() if key.endswith("pos_encoder.pe")), (1, 32, 0))
    return {"block_out_channels": widths, "motion_layers_per_block": layers, "motion_max_seq_length": int(table[1]),
            "use_motion_mid_block": any(k.startswith("mid_block.motion_modules") for k in shapes),
            "motion_num_attention_heads": 8, "motion_norm_num_groups": int(norm_groups),
            "motion_mid_block_layers_per_block": 1, "motion_transformer_layers_per_block": 1,
            "motion_transformer_layers_per_mid_block": 1}


def frame_limit(store: Any, ref: str) -> int:
    """How many frames the adapter sees at once (its position table), read from its config or keys; 0 if unknown."""
    source = store.resolve(ref)
    try:
        if source.kind == "single_file":
            return int(adapter_config_from_keys(_shapes(source.path))["motion_max_seq_length"])
        config = json.loads((Path(source.path) / "config.json").read_text(encoding="utf-8"))
        return int(config.get("motion_max_seq_length", 32))
    except (OSError, ValueError, KeyError):
        return 0  # the loader will say what is wrong with it


# -- SparseCtrl and motion LoRAs -----------------------------------------------------------------------------


def register_sparsectrl(hardware: Any, store: Any, ref: str) -> str:
    """Register the SparseCtrl model ``ref`` (an HF id or a diffusers folder) in the pool; returns its name."""
    dtype = hardware.dtype("inference")

    def load() -> Any:
        from diffusers import SparseControlNetModel

        if store.resolve(ref).kind == "single_file":
            raise InvalidRequestError(f"Give SparseCtrl '{ref}' as a Hugging Face id or a diffusers folder; "
                                      "a single file has no config to build it from.")
        model = store.load_model(ref, SparseControlNetModel, torch_dtype=dtype)
        if not isinstance(model, SparseControlNetModel):
            raise InvalidRequestError(f"'{ref}' is not a SparseCtrl model.")
        return model.eval()

    return hardware.register_once(f"sparsectrl:{ref}", load, policy=POLICY, files=store.files_for(ref))


@contextmanager
def motion_lora(pipe: Any, store: Any, ref: str, scale: float) -> Iterator[None]:
    """A motion LoRA (a camera move: zoom, pan, roll) on the job's motion modules at ``scale``, for one job.

    PEFT wraps the adapter's attention layers in place, and those layers are the pooled adapter's: when the
    job ends every wrapper is replaced by the layer it wrapped, so the pool keeps the adapter as it was
    loaded and the checkpoint's own LoRAs (in the 2D layers) are never touched.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    name = "motion_lora"
    files = [f for f in store.files_for(ref) if Path(f).suffix.lower() == ".safetensors"]
    if not files:
        raise InvalidRequestError(f"Motion LoRA '{ref}' has no .safetensors file.")
    state = store.load_state_dict(Path(files[0]))
    motion_parts = [m for block in (*pipe.unet.down_blocks, pipe.unet.mid_block, *pipe.unet.up_blocks)
                    for m in getattr(block, "motion_modules", ())]
    try:
        pipe.load_lora_weights(state, adapter_name=name)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        _unwrap(motion_parts, BaseTunerLayer)
        raise InvalidRequestError(f"Motion LoRA '{ref}' does not fit this motion adapter ({str(error)[:120]}).") from error
    try:
        for part in motion_parts:
            for layer in part.modules():
                if isinstance(layer, BaseTunerLayer) and name in getattr(layer, "scaling", {}):
                    layer.set_scale(name, scale)
        yield
    finally:
        _unwrap(motion_parts, BaseTunerLayer)
        if hasattr(pipe.unet, "peft_config"):
            pipe.unet.peft_config.pop(name, None)


def _unwrap(parts: list, wrapper: type) -> None:
    for part in parts:
        for module in list(part.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, wrapper):
                    setattr(module, child_name, child.get_base_layer())
