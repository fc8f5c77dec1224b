"""Per-component health checks for ``logs/diagnosis.log``: the first place to look when a run goes wrong.

Each check answers one question an engineer asks about a sick diffusion run: which part of the
network has exploding or vanishing gradients, did a weight turn NaN, is the router still using
its experts or has it collapsed onto a few (the classic MoE failure, Shazeer et al. 2017), and
which experts no sample routes to any more.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

# An expert that gets less than this share of its fair (uniform) routing weight is "dead":
# it no longer learns, and its auxiliary head only adds noise.
DEAD_EXPERT_SHARE = 0.1


def grad_norms_by_group(model: torch.nn.Module) -> dict[str, float]:
    """L2 norm of the gradients of each top-level submodule (unet, experts, gnn, ...)."""
    norms: dict[str, float] = {}
    for name, child in model.named_children():
        total = 0.0
        has_grad = False
        for param in child.parameters():
            if param.grad is not None:
                has_grad = True
                total += float(param.grad.detach().float().pow(2).sum())
        if has_grad:
            norms[name] = math.sqrt(total) if math.isfinite(total) else float("nan")
    own = [p for n, p in model.named_parameters(recurse=False) if p.grad is not None]
    if own:
        norms["(top)"] = math.sqrt(sum(float(p.grad.detach().float().pow(2).sum()) for p in own))
    return norms


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of parameters holding NaN or Inf (should always be empty: the guard skips such steps)."""
    return [name for name, param in model.named_parameters() if not torch.isfinite(param.detach()).all()]


def routing_health(mean_routing: Sequence[float], names: Sequence[str]) -> dict[str, Any]:
    """Normalised entropy of the mean routing (1 = uniform use, 0 = one expert) and dead experts."""
    weights = [max(0.0, float(w)) for w in mean_routing]
    total = sum(weights) or 1.0
    probs = [w / total for w in weights]
    count = len(probs)
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    normalised = entropy / math.log(count) if count > 1 else 1.0
    fair = 1.0 / count if count else 0.0
    dead = [name for name, p in zip(names, probs) if p < DEAD_EXPERT_SHARE * fair]
    return {"entropy": normalised, "dead_experts": dead}


def report_lines(step: int, *, grad_norms: dict[str, float], nonfinite: list[str],
                 routing: dict[str, Any], aux: dict[str, float]) -> list[str]:
    """The diagnosis.log lines of one check, each saying OK or what is wrong."""
    lines = []
    groups = ", ".join(f"{k}={v:.3g}" for k, v in grad_norms.items())
    worst = [k for k, v in grad_norms.items() if not math.isfinite(v) or v > 100.0]
    zero = [k for k, v in grad_norms.items() if math.isfinite(v) and v < 1e-8]
    state = f"CHECK: exploding in {', '.join(worst)}" if worst else "OK"
    lines.append(f"step {step} gradients {state}: {groups}")
    if zero:
        # Normal for zero-initialised output layers in the first steps, and for the reference
        # path on steps without a reference; worth a look only when it persists.
        lines.append(f"step {step} no gradient this step in: {', '.join(zero)}")
    weights = "OK: all finite" if not nonfinite else "NaN/Inf in " + ", ".join(nonfinite[:10])
    lines.append(f"step {step} weights {weights}")
    dead = routing.get("dead_experts", [])
    entropy = routing.get("entropy", float("nan"))
    collapse = entropy < 0.5
    lines.append(
        f"step {step} routing {'CHECK' if dead or collapse else 'OK'}: entropy {entropy:.3f} "
        "(1 = all experts used)"
        + (f"; dead experts: {', '.join(dead)}" if dead else "")
        + ("; the router is collapsing onto few experts" if collapse else "")
    )
    if aux:
        lines.append(f"step {step} expert aux losses: " + ", ".join(f"{k}={v:.4g}" for k, v in aux.items()))
    return lines
