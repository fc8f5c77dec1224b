"""Every size and weight of an Origin model and its training, as one JSON-serialisable config.

A 6 GB card, a 12 GB card and the tests run the same code with different configs; a checkpoint
carries its config so it can be rebuilt exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError

# What the network predicts: the noise (epsilon) or the velocity v = sqrt(ab) eps - sqrt(1 - ab) x0.
PREDICTION_TYPES = ("epsilon", "v_prediction")
# "origin": the UNet conditioned through the experts and the GNN; "plain": a diffusers
# UNet2DConditionModel on the caption alone, the baseline the benchmark holds Origin against.
ARCHITECTURES = ("origin", "plain")
SPACES = ("auto", "pixel", "latent")
CONFIG_VERSION = 4
LATENT_ABOVE = 128  # "auto" space: latent above this many pixels, pixel space up to it
# Every expert there is (each has its auxiliary target in expert_targets.py): the full mixture.
EXPERT_NAMES = (
    "line_art", "color", "light", "anatomy", "scene", "camera", "story",
    "structure", "precision", "memory", "safety", "editing", "quality", "style",
)
# The default since version 4: the colour expert alone, without the GNN. On the learns-benchmark at
# 3,000 steps it got all four attributes right on 48 % of captions, the 14 experts with the GNN on
# 6 %, the 14 without the GNN on 6 %, one line-art expert on 16 % (docs/origin-model.md).
DEFAULT_EXPERTS = ("color",)
# What older configs meant by the settings later versions added (their defaults differ): version 2
# added the schedule and caption settings, version 3 the latent space, version 4 made one expert
# without the GNN the default.
_VERSION_1_MODEL = {"noise_schedule": "linear", "caption_to_time": False, "caption_layers": 0,
                    "architecture": "origin"}
_VERSION_2_MODEL = {"space": "pixel", "latent_factor": 1}
_VERSION_3_MODEL = {"expert_names": EXPERT_NAMES, "gnn_layers": 2}


@dataclass
class ModelConfig:
    """The network: pixel-space UNet + text/vision conditioning + experts + GNN."""

    resolution: int = 64  # training/sampling size in pixels (of the decoded picture in latent space)
    # Where the UNet draws: "pixel" (R, G, B), "latent" (the latents of the frozen ``vae``, 8x
    # smaller each side, so 512 px costs what 64 px costs in pixels; model/latent.py) or "auto"
    # (latent above 128 px). A run's config.json and checkpoints hold the resolved space.
    space: str = "auto"
    vae: str = "stabilityai/sd-vae-ft-mse"  # latent space only: a hub id, folder or single file
    in_channels: int = 3  # 3 in pixel space; the VAE's latent channels (4) in latent space
    latent_factor: int = 1  # pixels per latent along each side: 1 in pixel space, the VAE's (8) in latent
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2)  # UNet levels with cross-attention
    attention_heads: int = 4
    dropout: float = 0.0
    context_dim: int = 256  # width of the UNet's cross-attention context tokens
    text_encoder: str = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
    text_dim: int = 384  # output width of the text encoder (hash fallback uses the same)
    max_text_tokens: int = 32
    vision_dim: int = 128  # width of each VisionEncoder embedding
    # Which experts condition the UNet (any of EXPERT_NAMES), and the graph layers between them
    # (0: none; they only pay with several experts, and did not on the benchmark).
    expert_names: tuple[str, ...] = DEFAULT_EXPERTS
    expert_dim: int = 128
    router_temperature: float = 1.0  # initial value; learnable
    gnn_layers: int = 0
    gnn_heads: int = 4
    prediction_type: str = "v_prediction"  # or "epsilon" (not with the zero_snr schedule)
    noise_schedule: str = "zero_snr"  # zero_snr | linear | cosine (schedule.py)
    # The caption's pooled embedding joins the UNet's time embedding, so every ResNet block hears
    # it (as SDXL's pooled text does), not only the cross-attention layers.
    caption_to_time: bool = True
    # The model's own transformer layers (with learned word positions) over the caption tokens, so
    # word order reaches the cross-attention even from the order-blind SHA-256 fallback (caption.py).
    caption_layers: int = 1
    architecture: str = "origin"  # origin | plain (ARCHITECTURES)

    @property
    def num_experts(self) -> int:
        return len(self.expert_names)

    @property
    def sample_size(self) -> int:
        """Side of the tensor the UNet works on: the resolution, or the latents' side."""
        return self.resolution // max(1, self.latent_factor)


@dataclass
class LossConfig:
    """Weights of each loss term; 0 switches a term off (it is still logged)."""

    min_snr_gamma: float = 5.0  # Min-SNR weighting (Hang et al. 2023); 0 disables
    line_art: float = 0.1
    color: float = 0.05
    anatomy: float = 0.02
    perspective: float = 0.02
    color_harmony: float = 0.01
    expert_aux: float = 0.1  # the experts' auxiliary heads


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    grad_clip: float = 1.0
    mixed_precision: str = "auto"  # auto, no, fp16, bf16
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # for classifier-free guidance
    offset_noise: float = 0.0  # per-channel noise offset (Guttenberg 2023); 0 = off
    num_train_timesteps: int = 1000
    checkpoint_every_epochs: int = 10
    milestones: tuple[int, ...] = (50, 100, 150, 200, 250, 300)
    keep_checkpoints: int = 20
    # Besides the epoch checkpoints: one on a timer, so a crash or power cut loses minutes, not
    # epochs. It replaces the previous one and never counts against keep_checkpoints. 0 = off.
    safety_checkpoint_minutes: float = 30.0
    # The validation loss (fixed images, timesteps and noise) every N steps; 0 = off.
    validate_every_steps: int = 100
    sample_every_steps: int = 500
    sample_prompts: tuple[str, ...] = ("manga girl, forest background", "a cat on a rooftop at night, ink")
    seed: int = 0
    num_workers: int = -1  # -1: from the CPU count
    ram_cache_mb: int = 1024
    disk_cache: bool = True


@dataclass
class OriginConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OriginConfig":
        def build(kind, values):
            known = {f.name: f for f in fields(kind)}
            unknown = set(values) - set(known)
            if unknown:
                raise InvalidRequestError(f"Unknown {kind.__name__} setting(s): {', '.join(sorted(unknown))}.")
            out = {}
            for name, value in values.items():
                # JSON has no tuples; the dataclass defaults say which fields are tuples.
                default = known[name].default
                out[name] = tuple(value) if isinstance(value, list) else value
                if isinstance(default, tuple) and not isinstance(out[name], tuple):
                    out[name] = (out[name],)
            return kind(**out)

        # Saved configs (config.json, checkpoints) always carry their version; a hand-written one
        # without it means the current defaults.
        version = int(data.get("version", CONFIG_VERSION))
        model = dict(data.get("model", {}))
        if version < 2:
            model = {**_VERSION_1_MODEL, **model}
        if version < 3:
            model = {**_VERSION_2_MODEL, **model}
        if version < 4:
            model = {**_VERSION_3_MODEL, **model}
        return cls(
            model=build(ModelConfig, model),
            loss=build(LossConfig, data.get("loss", {})),
            train=build(TrainConfig, data.get("train", {})),
            version=max(version, CONFIG_VERSION),
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "OriginConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise InvalidRequestError(f"Cannot read the config {path}: {error}.") from error


def resolve_space(config: OriginConfig, space: Optional[str] = None) -> OriginConfig:
    """``config`` with a concrete space: ``space`` if given, else the config's, "auto" decided by size.

    Pixel space also resets the latent geometry (3 channels, factor 1); latent space keeps the
    config's until the VAE is loaded and says what it is (``with_latent_geometry``).
    """
    from dataclasses import replace

    chosen = space or config.model.space
    if chosen not in SPACES:
        raise InvalidRequestError(f"The space must be one of {', '.join(SPACES)}, not '{chosen}'.")
    if chosen == "auto":
        chosen = "latent" if config.model.resolution > LATENT_ABOVE else "pixel"
    model = replace(config.model, space=chosen)
    if chosen == "pixel":
        model = replace(model, in_channels=3, latent_factor=1)
    return replace(config, model=model)


def with_latent_geometry(config: OriginConfig, latent_channels: int, factor: int) -> OriginConfig:
    """A latent-space config with the loaded VAE's channels and downsampling factor."""
    from dataclasses import replace

    return replace(config, model=replace(config.model, in_channels=int(latent_channels), latent_factor=int(factor)))


def tiny_config(resolution: int = 32) -> OriginConfig:
    """The smallest real configuration, for tests and CPU smoke runs.

    It keeps the full mixture (all 14 experts and a graph layer), so the tests exercise every part
    of the model; the default config has one expert (``DEFAULT_EXPERTS``).
    """
    return OriginConfig(
        model=ModelConfig(resolution=resolution, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=(1,), attention_heads=2, context_dim=32, text_dim=32,
                          max_text_tokens=8, vision_dim=16, expert_names=EXPERT_NAMES, expert_dim=16,
                          gnn_layers=1, gnn_heads=2),
        train=TrainConfig(batch_size=4, warmup_steps=10, sample_every_steps=0, num_workers=0,
                          checkpoint_every_epochs=1, ema_decay=0.9),
    )
