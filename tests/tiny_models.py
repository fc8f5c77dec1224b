"""Tiny random-weight models in the real on-disk formats, for tests that load through real loaders.

Modelled on diffusers' ``get_dummy_components``: a 2-block UNet, a 2-block VAE and a 2-layer CLIP
text encoder, seeded so the same seed gives the same weights and the same pixels. Nothing here
touches the network: the CLIP tokenizer is written from a byte-level vocabulary built locally,
because hf-internal-testing's tiny tokenizers cannot be fetched offline.

``save_tiny_sd_pipeline`` writes a diffusers folder (safetensors); ``save_tiny_sd_single_file``
writes the same weights as one original-layout (LDM) ``.safetensors`` checkpoint, the format
anime checkpoints are shared in, so ``from_single_file`` is exercised with its real key conversion.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

IMAGE_SIZE = 32
CROSS_ATTENTION_DIM = 16
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
# Merges so that a few words of our test prompts become single tokens, as in a real CLIP vocabulary.
_MERGES = ("i n", "in k</w>", "m a", "n g", "ng a</w>", "ma nga</w>")


def _byte_characters() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, the alphabet of byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def write_tiny_clip_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` for a tiny byte-level CLIP BPE tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_characters()
    tokens = chars + [c + "</w>" for c in chars]
    tokens += [left + right for left, right in (m.split(" ") for m in _MERGES)]
    tokens += [START_TOKEN, END_TOKEN]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")
    return folder


def build_tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_clip_tokenizer_files(Path(tmp))
        return CLIPTokenizer(
            vocab=str(folder / "vocab.json"),
            merges=str(folder / "merges.txt"),
            model_max_length=77,
        )


def build_tiny_sd_pipeline(seed: int = 0):
    """A seeded tiny ``StableDiffusionPipeline`` (32 px, runs 2 steps on a CPU in well under a second)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer()
    torch.manual_seed(seed)
    # SD 1.5's block order (attention in the high-resolution block), so the LDM layout matches.
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=CROSS_ATTENTION_DIM,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def save_tiny_sd_pipeline(folder: Path, seed: int = 0) -> Path:
    """Save the tiny pipeline as a diffusers folder with safetensors weights; returns the folder."""
    folder = Path(folder)
    build_tiny_sd_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def run_tiny_pipeline(pipe, *, seed: int = 0, steps: int = 2, prompt: str = "ink manga"):
    """Generate one 32 px image as a numpy array, seeded, the way pipeline tests compare pixels."""
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=2.0,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        generator=generator,
        output_type="np",
    ).images[0]


# --- original (LDM) single-file layout ------------------------------------------------------------


def _unet_to_ldm(unet) -> dict[str, str]:
    """diffusers UNet key prefix -> original key prefix, derived from the model's own blocks.

    The inverse of diffusers' ``convert_ldm_unet_checkpoint``: input and output blocks are numbered
    through the whole network, with ``layers_per_block + 1`` slots per level.
    """
    layers = unet.config.layers_per_block
    renames = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i, block in enumerate(unet.down_blocks):
        for j in range(layers):
            slot = (layers + 1) * i + j + 1
            renames[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{slot}.0."
            if getattr(block, "attentions", None):
                renames[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{slot}.1."
        if block.downsamplers:
            renames[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(layers + 1) * (i + 1)}.0.op."
    for i, block in enumerate(unet.up_blocks):
        has_attention = bool(getattr(block, "attentions", None))
        for j in range(layers + 1):
            slot = (layers + 1) * i + j
            renames[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{slot}.0."
            if has_attention:
                renames[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{slot}.1."
        if block.upsamplers:
            last = (layers + 1) * i + layers
            renames[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{last}.{2 if has_attention else 1}."
    return renames


_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _rename(key: str, renames: dict[str, str]) -> str:
    for old in sorted(renames, key=len, reverse=True):
        if key.startswith(old):
            return renames[old] + key[len(old) :]
    return key


def _ldm_unet_state(unet) -> dict:
    renames = _unet_to_ldm(unet)
    state = {}
    for key, value in unet.state_dict().items():
        new = _rename(key, renames)
        if ".resnets." in key:
            head, _, leaf = new.rpartition(".")
            head, _, part = head.rpartition(".")
            new = f"{head}.{_RESNET_PARTS.get(part, part)}.{leaf}"
        state["model.diffusion_model." + new] = value
    return state


def _ldm_vae_state(vae) -> dict:
    levels = len(vae.config.block_out_channels)
    renames = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
    for part in ("encoder", "decoder"):
        renames[f"{part}.mid_block.resnets.0."] = f"{part}.mid.block_1."
        renames[f"{part}.mid_block.resnets.1."] = f"{part}.mid.block_2."
        renames[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
    for i in range(levels):
        renames[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        renames[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        # The original decoder numbers its levels from the lowest resolution up.
        renames[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{levels - 1 - i}.block."
        renames[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{levels - 1 - i}.upsample."
    attention = {
        "group_norm.": "norm.",
        "to_q.": "q.",
        "to_k.": "k.",
        "to_v.": "v.",
        "to_out.0.": "proj_out.",
    }
    state = {}
    for key, value in vae.state_dict().items():
        new = _rename(key, renames).replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in new:
            head, _, rest = new.partition(".mid.attn_1.")
            new = f"{head}.mid.attn_1.{_rename(rest, attention)}"
            if value.ndim == 2:  # the original stores these projections as 1x1 convolutions
                value = value[:, :, None, None]
        state["first_stage_model." + new] = value
    return state


def save_tiny_sd_single_file(path: Path, seed: int = 0) -> Path:
    """Save the tiny pipeline as one original-layout ``.safetensors`` checkpoint (UNet, VAE, CLIP)."""
    from safetensors.torch import save_file

    pipe = build_tiny_sd_pipeline(seed)
    state = {**_ldm_unet_state(pipe.unet), **_ldm_vae_state(pipe.vae)}
    for key, value in pipe.text_encoder.state_dict().items():
        state["cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# --- a tiny sentence-transformers text encoder -------------------------------------------------------
TINY_TEXT_WORDS = ("manga", "girl", "forest", "background", "cat", "rooftop", "night", "ink", "a", "on", "at", ",")


def save_tiny_sentence_transformer(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT sentence-transformers model with a word-piece vocabulary written locally.

    The same kind of model as the studio's real caption encoder (token embeddings + mean pooling),
    small enough to build in a second; the real all-MiniLM-L6-v2 is 88 MB.
    """
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    bert = folder / "bert"
    bert.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_TEXT_WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    (bert / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    BertTokenizer(str(bert / "vocab.txt")).save_pretrained(str(bert))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(bert))
    words = models.Transformer(str(bert), max_seq_length=32)
    model = SentenceTransformer(modules=[words, models.Pooling(words.get_embedding_dimension())], device="cpu")
    model.save(str(folder / "encoder"))
    return folder / "encoder"


# --- a tiny Origin checkpoint ---------------------------------------------------------------------------
def save_origin_checkpoint(run: Path, model, config, name: str = "epoch-000001", step: int = 12) -> Path:
    """A checkpoint the way the trainer writes it: weights, EMA weights, meta.json last, atomically."""
    from safetensors.torch import save_file

    from engines.origin.model import checkpoints

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with checkpoints.atomic_checkpoint_dir(run, name) as folder:
        save_file(state, str(folder / "model.safetensors"))
        save_file(state, str(folder / "ema.safetensors"))
        checkpoints.write_meta(folder, epoch=1, step=step, config=config)
    config.save(run / "config.json")
    return run / "checkpoints" / name


# --- a tiny VAE for latent-space Origin -----------------------------------------------------------------
def build_tiny_vae(seed: int = 0, levels: int = 2):
    """A random-weight AutoencoderKL with SD's layout (4 latent channels) and ``2 ** (levels - 1)``x
    downsampling; SD's scaling factor, so the code paths that scale latents are exercised."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    widths = (8, 16, 16, 16)[:levels]
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=widths, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.18215,
    )


def save_tiny_vae(folder: Path, seed: int = 0, levels: int = 2) -> Path:
    """The tiny VAE as a diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    build_tiny_vae(seed, levels).save_pretrained(str(folder))
    return folder


# --- tiny LoRA and embeddings in the files artists download ----------------------------------------------
def save_tiny_kohya_lora(path: Path, seed: int = 0, rank: int = 2, scale: float = 1.0) -> Path:
    """A LoRA for the tiny pipeline in kohya's format (what A1111 and Civitai share): ``lora_unet_*`` and
    ``lora_te_*`` keys with ``lora_down``/``lora_up`` weights and an ``alpha`` per module."""
    import torch
    from safetensors.torch import save_file

    pipe = build_tiny_sd_pipeline(0)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    targets = [("lora_unet", pipe.unet, ("to_q", "to_k", "to_v", "to_out.0")),
               ("lora_te", pipe.text_encoder, ("q_proj", "k_proj", "v_proj", "out_proj"))]
    for prefix, model, leaves in targets:
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or not name.endswith(leaves):
                continue
            # kohya names text-encoder modules as transformers 4 nested them, under text_model.
            if prefix == "lora_te" and not name.startswith("text_model."):
                name = f"text_model.{name}"
            key = f"{prefix}_{name.replace('.', '_')}"
            state[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * scale
            state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * scale
            state[f"{key}.alpha"] = torch.tensor(float(rank))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return path


def save_tiny_embedding(path: Path, seed: int = 0, vectors: int = 2) -> Path:
    """A textual-inversion embedding for the tiny pipeline: A1111's ``.safetensors`` (``emb_params``) or,
    for a ``.pt`` path, A1111's pickle layout (``string_to_param``) with only tensors, ints and strings."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    vectors_tensor = torch.randn(vectors, CROSS_ATTENTION_DIM, generator=generator) * 3
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pt":
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors_tensor},
                    "name": path.stem, "step": 100}, str(path))
    else:
        from safetensors.torch import save_file

        save_file({"emb_params": vectors_tensor}, str(path))
    return path


# --- a tiny IP-Adapter in h94/IP-Adapter's layout ------------------------------------------------------
IMAGE_EMBED_DIM = 8


# The tiny encoder; bench/ passes ViT-H's shapes (what h94/IP-Adapter's SD 1.5 encoder is) for real timings.
TINY_IMAGE_ENCODER = dict(hidden_size=16, intermediate_size=32, projection_dim=IMAGE_EMBED_DIM, num_hidden_layers=2,
                          num_attention_heads=2, image_size=32, patch_size=8)


def save_tiny_ip_adapter(folder: Path, seed: int = 0, scale: float = 1.0, unet=None, encoder_config=None) -> Path:
    """``folder/models/ip-adapter_sd15.safetensors`` (the plain IP-Adapter's ``image_proj.*`` and
    ``ip_adapter.N.to_k_ip/to_v_ip`` keys, N odd, one per cross-attention layer in the UNet's order) and
    ``folder/models/image_encoder`` (a CLIPVisionModelWithProjection), as h94/IP-Adapter lays them out;
    random weights for ``unet`` (default: the tiny pipeline's)."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    config = CLIPVisionConfig(**(encoder_config or TINY_IMAGE_ENCODER))
    CLIPVisionModelWithProjection(config).save_pretrained(str(folder / "models" / "image_encoder"))
    unet = unet if unet is not None else build_tiny_sd_pipeline(0).unet
    width, embed = unet.config.cross_attention_dim, config.projection_dim
    generator = torch.Generator().manual_seed(seed)
    # Scaled like a trained projection: outputs of about unit size, whatever the widths.
    state = {
        "image_proj.proj.weight": torch.randn(4 * width, embed, generator=generator) * scale / embed**0.5,
        "image_proj.proj.bias": torch.zeros(4 * width),
        "image_proj.norm.weight": torch.ones(width),
        "image_proj.norm.bias": torch.zeros(width),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        for part in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{part}.weight"] = torch.randn(
                hidden, width, generator=generator) * scale / width**0.5
        key_id += 2
    save_file(state, str(folder / "models" / "ip-adapter_sd15.safetensors"))
    # The "plus" (face) variant: a perceiver resampler over the encoder's hidden states, 16 tokens.
    face = {k: v for k, v in state.items() if k.startswith("ip_adapter.")}
    face.update(_plus_image_proj(config.hidden_size, width, generator))
    save_file(face, str(folder / "models" / "ip-adapter-plus-face_sd15.safetensors"))
    return folder


def _plus_image_proj(embed_dims: int, output_dims: int, generator, hidden_dims: int = 64, depth: int = 4) -> dict:
    """IP-Adapter Plus's ``image_proj.*`` keys in the original layout: diffusers' resampler, renamed back."""
    import torch
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    module = IPAdapterPlusImageProjection(embed_dims=embed_dims, output_dims=output_dims, hidden_dims=hidden_dims,
                                          depth=depth, heads=hidden_dims // 64, num_queries=16)
    state = {}
    for key, value in module.state_dict().items():
        value = torch.randn(value.shape, generator=generator) * 0.2 if value.dim() > 1 else value.clone()
        parts = key.split(".")
        if parts[0] != "layers":
            state[key] = value
            continue
        layer, rest = parts[1], ".".join(parts[2:])
        renames = {"ln0.": "0.norm1.", "ln1.": "0.norm2.", "attn.to_q.": "0.to_q.", "attn.to_out.0.": "0.to_out.",
                   "ff.0.": "1.0.", "ff.1.net.0.proj.": "1.1.", "ff.1.net.2.": "1.3."}
        if rest.startswith(("attn.to_k.", "attn.to_v.")):
            half = "k" if rest.startswith("attn.to_k.") else "v"
            state.setdefault(f"layers.{layer}.0.to_kv.{rest.rsplit('.', 1)[1]}", {})[half] = value
            continue
        for old, new in renames.items():
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        state[f"layers.{layer}.{rest}"] = value
    for key, halves in list(state.items()):
        if isinstance(halves, dict):
            state[key] = torch.cat([halves["k"], halves["v"]], dim=0)
    return {f"image_proj.{k}": v.contiguous() for k, v in state.items()}


def cpu_engines(data_dir: Path, device_budget: int = 2**30, host_budget: int = 2**30):
    """A HardwareManager on the CPU with a fake budget and an offline ModelStore over ``data_dir/models``:
    what an engine test hands the engine (``hardware, store``)."""
    from engines.hardware import HardwareManager
    from engines.models import ModelStore
    from engines.settings import MachineSettings

    settings = MachineSettings(data_dir=data_dir, cpu=True, offline=True)
    hardware = HardwareManager(settings, device_budget_bytes=device_budget, host_budget_bytes=host_budget)
    return hardware, ModelStore(Path(data_dir) / "models", offline=True)
