"""Where a pipeline's weights live while it runs: the placement policy, declared per pipeline as data.

From most to least VRAM: whole on the GPU; model CPU offload (one component on the GPU at a
time); group offload (blocks of layers streamed in); sequential offload (one layer at a time).
The HardwareManager picks the fastest that fits the budget, the pool applies it through
``TorchMover``, and VAE slicing/tiling plus a tiled retry keep the decode from running out.
"""

from __future__ import annotations

import enum
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from engines.errors import OutOfMemoryError, is_torch_oom

log = logging.getLogger(__name__)


class Placement(str, enum.Enum):
    WHOLE = "whole"
    MODEL_OFFLOAD = "model_offload"
    GROUP_OFFLOAD = "group_offload"
    SEQUENTIAL_OFFLOAD = "sequential_offload"


@dataclass(frozen=True)
class MemoryPolicy:
    """How one pipeline may be placed; engines declare it, only the HardwareManager acts on it."""

    placement: str = "auto"  # "auto" or a Placement value to force one
    working_bytes: int = 0  # activations at the pipeline's usual size, on top of its weights
    vae_slicing: Optional[bool] = None  # None: on whenever the device is an accelerator
    vae_tiling: Optional[bool] = None  # None: on when the weights had to be offloaded


@dataclass(frozen=True)
class PlacementPlan:
    placement: Placement
    device_bytes: int  # what the pool counts against the device budget
    vae_slicing: bool = False
    vae_tiling: bool = False
    reason: str = ""


# Rough share of a UNet-sized model resident at once under each offload mode. Block-level
# groups hold one of ~9 top-level UNet blocks; leaf-level holds one layer (a few % at most).
_GROUP_SHARE = 1 / 4
_SEQUENTIAL_SHARE = 1 / 32


def plan_placement(
    sizes: dict[str, int], budget: int, policy: MemoryPolicy, accelerator: bool
) -> PlacementPlan:
    """The fastest placement whose weights plus working memory fit in ``budget`` bytes."""
    total = sum(sizes.values())
    largest = max(sizes.values(), default=0)
    work = policy.working_bytes
    if not accelerator:
        return PlacementPlan(Placement.WHOLE, total, reason="CPU: weights stay in RAM")
    footprints = {
        Placement.WHOLE: total,
        Placement.MODEL_OFFLOAD: largest,
        Placement.GROUP_OFFLOAD: int(largest * _GROUP_SHARE),
        Placement.SEQUENTIAL_OFFLOAD: int(largest * _SEQUENTIAL_SHARE),
    }
    if policy.placement != "auto":
        chosen = Placement(policy.placement)
        reason = "forced by the pipeline's memory policy"
    else:
        chosen = next((p for p, size in footprints.items() if size + work <= budget),
                      Placement.SEQUENTIAL_OFFLOAD)
        reason = (f"{total / 2**30:.2f} GB of weights, {work / 2**30:.2f} GB working memory, "
                  f"{budget / 2**30:.2f} GB budget")
    tiling = policy.vae_tiling if policy.vae_tiling is not None else chosen != Placement.WHOLE
    slicing = policy.vae_slicing if policy.vae_slicing is not None else True
    return PlacementPlan(chosen, footprints[chosen] + work, slicing, tiling, reason)


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers (what moving it costs)."""
    params = getattr(module, "parameters", None)
    if params is None:
        return 0
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    total += sum(b.numel() * b.element_size() for b in module.buffers())
    return int(total)


def components_of(obj: Any) -> dict[str, Any]:
    """The torch modules that make up a pipeline, a module, or a dict of modules."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return {"model": obj}
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if isinstance(v, torch.nn.Module)}
    comps = getattr(obj, "components", None)
    if isinstance(comps, dict):
        return {k: v for k, v in comps.items() if isinstance(v, torch.nn.Module)}
    raise TypeError(f"Cannot manage memory of {type(obj).__name__}: not a module or pipeline.")


def _is_pipeline(obj: Any) -> bool:
    return hasattr(obj, "components") and hasattr(obj, "enable_model_cpu_offload")


class ModuleMover(Protocol):
    def to_device(self, obj: Any, plan: PlacementPlan) -> PlacementPlan: ...
    def to_host(self, obj: Any, plan: Optional[PlacementPlan], keep_ids: set[int]) -> None: ...
    def empty_cache(self) -> None: ...


class TorchMover:
    """Applies placement plans with torch and diffusers' own offloading hooks."""

    def __init__(self, device: str) -> None:
        self.device = device
        # Offload hooks are sticky: sequential and group offload keep the weights in CPU RAM
        # (removing accelerate's hooks would leave parameters on "meta"), so once applied they
        # stay until the pipeline is unloaded, and "moving to RAM" only frees what is cached.
        self._sticky: "weakref.WeakKeyDictionary[Any, PlacementPlan]" = weakref.WeakKeyDictionary()

    def to_device(self, obj: Any, plan: PlacementPlan) -> PlacementPlan:
        sticky = self._sticky.get(obj) if _is_pipeline(obj) else None
        if sticky is not None:
            return sticky
        if plan.placement == Placement.WHOLE or not _is_pipeline(obj):
            if self.device != "cpu":  # on a CPU-only machine both tiers are RAM: nothing moves
                for module in components_of(obj).values():
                    module.to(self.device)
        elif plan.placement == Placement.MODEL_OFFLOAD:
            obj.enable_model_cpu_offload(device=self.device)
        elif plan.placement == Placement.GROUP_OFFLOAD:
            import torch

            obj.enable_group_offload(
                onload_device=torch.device(self.device), offload_device=torch.device("cpu"),
                offload_type="block_level", num_blocks_per_group=1,
                # CUDA streams overlap the next group's copy with this group's compute.
                use_stream=self.device.startswith("cuda"),
            )
        else:
            obj.enable_sequential_cpu_offload(device=self.device)
        if plan.placement != Placement.WHOLE and _is_pipeline(obj):
            self._sticky[obj] = plan
        self._configure_vae(obj, plan)
        return plan

    @staticmethod
    def _configure_vae(obj: Any, plan: PlacementPlan) -> None:
        vae = getattr(obj, "vae", None)
        if vae is None:
            return
        for flag, on, off in ((plan.vae_slicing, "enable_slicing", "disable_slicing"),
                              (plan.vae_tiling, "enable_tiling", "disable_tiling")):
            method = getattr(vae, on if flag else off, None)
            if method is not None:
                method()

    def to_host(self, obj: Any, plan: Optional[PlacementPlan], keep_ids: set[int]) -> None:
        if _is_pipeline(obj) and obj in self._sticky:
            if self._sticky[obj].placement == Placement.MODEL_OFFLOAD:
                obj.maybe_free_model_hooks()  # pushes the component still on the GPU back to RAM
            return
        if self.device == "cpu":
            return
        for module in components_of(obj).values():
            if id(module) not in keep_ids:
                module.to("cpu")

    def empty_cache(self) -> None:
        empty_device_cache(self.device)


def empty_device_cache(device: str) -> None:
    """Hand the caching allocator's free blocks back to the driver (a no-op on the CPU)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def decode_with_tiled_retry(
    vae: Any, latents: Any, *, empty_cache: Callable[[], None], min_tile: int = 128
) -> Any:
    """Decode latents; on out-of-memory switch to tiled decoding and halve the tile to a floor.

    ComfyUI's rule: a VAE that does not fit still decodes, in smaller tiles, rather than failing
    the whole generation after the expensive denoising is done.
    """
    try:
        return vae.decode(latents, return_dict=False)[0]
    except Exception as error:  # noqa: BLE001 - only OOM is handled, the rest re-raised
        if not is_torch_oom(error):
            raise
        log.warning("VAE decode ran out of memory; retrying with tiled decoding")
    vae.enable_tiling()
    scale = vae.tile_sample_min_size // max(1, vae.tile_latent_min_size)
    while True:
        empty_cache()
        try:
            return vae.decode(latents, return_dict=False)[0]
        except Exception as error:  # noqa: BLE001
            if not is_torch_oom(error):
                raise
            tile = vae.tile_sample_min_size // 2
            if tile < min_tile:
                raise OutOfMemoryError(
                    "The image decoder ran out of memory even in the smallest tiles; "
                    "lower the resolution or the batch size."
                ) from error
            vae.tile_sample_min_size = tile
            vae.tile_latent_min_size = max(1, tile // scale)
            log.warning("VAE tiled decode ran out of memory; tile size now %d px", tile)


def follow_offload_hooks(pairs: Any) -> list[Any]:
    """Make each ``(base, derived)`` pair's ``derived`` module bring in and send back ``base``'s weights the way
    ``base``'s own offload hooks do; returns the torch hook handles (``handle.remove()`` when the job ends).

    A module built per job out of a pooled model's layers (Animation's motion UNet is made of the pooled
    UNet's blocks) never calls the pooled model's ``forward``, so the hooks offloading placed there do not
    fire: under model offload the UNet would stay in RAM, under group offload so would each block. Running
    those same hooks around the derived module's forward keeps one placement for both, decided here by the
    pool. Sequential offload needs nothing: its hooks sit on the leaf layers, which the derived module calls.
    """
    handles = []
    for base, derived in pairs:
        hooks = _offload_hooks(base)
        if not hooks:
            continue

        def before(module: Any, args: Any, kwargs: Any, hooks: list = hooks, base: Any = base) -> Any:
            for hook in hooks:
                args, kwargs = hook.pre_forward(base, *args, **kwargs)
            return args, kwargs

        def after(module: Any, args: Any, kwargs: Any, output: Any, hooks: list = hooks, base: Any = base) -> Any:
            for hook in reversed(hooks):
                output = hook.post_forward(base, output)
            return output

        handles.append(derived.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(derived.register_forward_hook(after, with_kwargs=True))
    return handles


def _offload_hooks(module: Any) -> list[Any]:
    """The offload hooks on ``module`` itself, outermost first: accelerate's (model offload) and diffusers'."""
    hooks = []
    accelerate_hook = getattr(module, "_hf_hook", None)
    if accelerate_hook is not None:
        hooks.append(accelerate_hook)
    registry = getattr(module, "_diffusers_hook", None)
    if registry is not None:
        hooks += [registry.hooks[name] for name in reversed(registry._hook_order)]
    return hooks
