"""OriginModel on tiny configs: shapes, routing, references, learning, and the DataFlow it runs on."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file

from engines.origin.model.config import EXPERT_NAMES, tiny_config
from engines.origin.model.dataflow import CycleError, DataFlow, DataFlowError, MissingInputError
from engines.origin.training.losses import (ArtLosses, add_noise_target, art_loss_weights, diffusion_loss,
                                   predicted_clean)
from engines.origin.model.network import OriginModel, OriginOutput
from test_origin_losses import manga_images


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # On 2 shared, busy cores, two OpenMP threads per process wait on each other and on the
    # neighbours: the tiny model's step ran 5-8x slower than with one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(resolution: int = 32, **changes) -> OriginModel:
    torch.manual_seed(0)
    config = tiny_config(resolution).model
    if changes.get("prediction_type") == "epsilon":
        changes.setdefault("noise_schedule", "linear")  # zero_snr needs v-prediction
    return OriginModel(replace(config, **changes))


def inputs(model: OriginModel, batch: int = 2, seed: int = 0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, 3, cfg.resolution, cfg.resolution, generator=g)
    timesteps = torch.randint(0, 1000, (batch,), generator=g)
    tokens = torch.randn(batch, cfg.max_text_tokens, cfg.text_dim, generator=g)
    mask = torch.ones(batch, cfg.max_text_tokens, dtype=torch.bool)
    mask[:, cfg.max_text_tokens // 2:] = False
    return x_t, timesteps, tokens, mask


# --- shapes and routing --------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_forward_shapes_and_routing(resolution: int, prediction_type: str) -> None:
    model = tiny_model(resolution, prediction_type=prediction_type)
    x_t, timesteps, tokens, mask = inputs(model, batch=3)
    out = model(x_t, timesteps, tokens, mask)
    assert isinstance(out, OriginOutput)
    assert out.sample.shape == x_t.shape
    assert out.routing.shape == (3, len(EXPERT_NAMES))
    torch.testing.assert_close(out.routing.sum(dim=1), torch.ones(3))
    assert (out.routing >= 0).all()
    assert out.expert_states.shape == (3, len(EXPERT_NAMES), model.config.expert_dim)
    assert all(torch.isfinite(t).all() for t in (out.sample, out.routing, out.expert_states))


def test_untrained_model_predicts_zero_thanks_to_the_zero_output_conv() -> None:
    model = tiny_model()
    out = model(*inputs(model))
    assert out.sample.abs().max() == 0


def test_reference_is_optional_and_changes_the_conditioning() -> None:
    model = tiny_model()
    x_t, timesteps, tokens, mask = inputs(model)
    without = model(x_t, timesteps, tokens, mask)
    reference = manga_images(2, 48)[..., :40]  # any size: the encoder resizes it
    with_ref = model(x_t, timesteps, tokens, mask, reference=reference)
    assert with_ref.sample.shape == without.sample.shape
    assert not torch.allclose(with_ref.expert_states, without.expert_states)
    other = model(x_t, timesteps, tokens, mask, reference=manga_images(2, 48, seed=5))
    assert not torch.allclose(other.expert_states, with_ref.expert_states)


def test_an_empty_caption_still_gives_a_finite_prediction() -> None:
    model = tiny_model()
    x_t, timesteps, tokens, _ = inputs(model)
    # Empty captions (CFG's unconditional branch) have an all-False mask and zero tokens.
    empty, nothing = torch.zeros_like(tokens), torch.zeros(tokens.shape[:2], dtype=torch.bool)
    out = model(x_t, timesteps, empty, nothing)
    with torch.no_grad():
        model.unet.out[-1].weight.normal_(0, 0.1)  # let the prediction depend on the context
        again = model(x_t, timesteps, empty, nothing)
    assert torch.isfinite(out.sample).all() and torch.isfinite(again.sample).all()


def test_fewer_experts_from_the_config() -> None:
    model = tiny_model(expert_names=("line_art", "color", "light"))
    out = model(*inputs(model))
    assert out.routing.shape == (2, 3) and out.expert_states.shape[1] == 3
    assert set(model.expert_aux_losses(out, manga_images(2, 32))) == {"line_art", "color", "light"}


@pytest.mark.parametrize("changes, message", [
    ({"expert_names": ("line_art", "cooking")}, "cooking"),
    ({"prediction_type": "sample"}, "prediction_type"),
    ({"attention_levels": (3,)}, "attention level"),
    ({"resolution": 33}, "multiple of 2"),
    ({"prediction_type": "epsilon", "noise_schedule": "zero_snr"}, "needs prediction_type v_prediction"),
    ({"noise_schedule": "sigmoid"}, "noise_schedule"),
])
def test_bad_configs_fail_with_one_sentence(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_model(**changes)


def test_bad_inputs_fail_before_any_work() -> None:
    model = tiny_model()
    x_t, timesteps, tokens, mask = inputs(model)
    with pytest.raises(ValueError, match="text_tokens"):
        model(x_t, timesteps, tokens[..., :5], mask)
    with pytest.raises(ValueError, match="multiple of 2"):
        model(x_t[..., :31, :31], timesteps, tokens, mask)
    with pytest.raises(ValueError, match="timesteps"):
        model(x_t, timesteps[:1], tokens, mask)


def test_deepcopy_for_ema_runs_its_own_weights() -> None:
    model = tiny_model()
    ema = copy.deepcopy(model)  # what EMA helpers do; the DataFlow must follow the copy
    args = inputs(model)
    torch.testing.assert_close(ema(*args).expert_states, model(*args).expert_states)
    with torch.no_grad():
        ema.text_proj.weight.add_(1.0)
    assert not torch.allclose(ema(*args).expert_states, model(*args).expert_states)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model = tiny_model()
        with torch.no_grad():
            model.unet.out[-1].weight.normal_(0, 0.1)  # let gradients reach the inner blocks
        model.enable_gradient_checkpointing(checkpointing)
        model(*inputs(model)).sample.square().mean().backward()
        return [p.grad for p in model.unet.parameters() if p.grad is not None]

    plain, checkpointed = grads(False), grads(True)
    assert len(plain) == len(checkpointed) > 0
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)


def test_weights_round_trip_through_safetensors(tmp_path) -> None:
    model = tiny_model()
    with torch.no_grad():
        model.unet.out[-1].weight.normal_(0, 0.1)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    loaded = tiny_model()
    loaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    args = inputs(model)
    torch.testing.assert_close(loaded(*args).sample, model(*args).sample)


# --- learning ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run() -> dict:
    """A tiny model trained on 4 images with fixed noise and timesteps, as the trainer would step it."""
    torch.manual_seed(0)
    model = OriginModel(tiny_config(32).model)
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type="epsilon")
    clean = manga_images(4, 32)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=g)
    timesteps = torch.tensor([50, 200, 400, 700])
    tokens = torch.randn(4, 8, 32, generator=g)
    x_t = sched.add_noise(clean, noise, timesteps)
    target = add_noise_target(sched, clean, noise, timesteps, "epsilon")
    art = ArtLosses()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history: dict[str, list[float]] = {"diffusion": []}
    for _ in range(60):
        out = model(x_t, timesteps, tokens)
        loss = diffusion_loss(out.sample, target, timesteps, sched, 5.0)
        aux = model.expert_aux_losses(out, clean)
        arts = art(predicted_clean(sched, x_t, out.sample, timesteps, "epsilon"), clean,
                   art_loss_weights(sched, timesteps))
        total = loss + 0.1 * sum(aux.values()) + 0.01 * sum(arts.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history["diffusion"].append(loss.item())
        for name, value in aux.items():
            history.setdefault(name, []).append(value.item())
    return history


def test_tiny_model_overfits_a_few_images(tiny_run: dict) -> None:
    losses = tiny_run["diffusion"]
    assert losses[-1] < 0.2 * losses[0], losses[::10]


@pytest.mark.parametrize("expert", EXPERT_NAMES)
def test_each_expert_auxiliary_loss_falls(tiny_run: dict, expert: str) -> None:
    losses = tiny_run[expert]
    assert losses[-1] < 0.5 * losses[0], (expert, losses[::10])


# --- DataFlow ------------------------------------------------------------------------------------


def test_dataflow_runs_stages_in_dependency_order() -> None:
    flow, calls = DataFlow(), []

    def stage(name, fn):
        def run(**kwargs):
            calls.append(name)
            return fn(**kwargs)
        return run

    # Registered out of order on purpose: the flow sorts them.
    flow.register("plus_one", stage("plus_one", lambda y: {"z": y + 1}), inputs=("y",), outputs=("z",))
    flow.register("report", stage("report", lambda z, x: {"text": f"{x}->{z}"}),
                  inputs=("z", "x"), outputs=("text",))
    flow.register("double", stage("double", lambda x: {"y": 2 * x}), inputs=("x",), outputs=("y",))
    values = flow.run({"x": 3})
    assert values["z"] == 7 and values["text"] == "3->7"
    assert calls == ["double", "plus_one", "report"]
    assert flow.order({"x"}) == ("double", "plus_one", "report")


def test_dataflow_reports_cycles_missing_inputs_and_duplicates() -> None:
    flow = DataFlow()
    flow.register("a", lambda b_out: {"a_out": b_out}, inputs=("b_out",), outputs=("a_out",))
    flow.register("b", lambda a_out: {"b_out": a_out}, inputs=("a_out",), outputs=("b_out",))
    with pytest.raises(CycleError, match="a, b"):
        flow.run({})

    flow = DataFlow()
    flow.register("needs", lambda ghost: {"out": ghost}, inputs=("ghost",), outputs=("out",))
    with pytest.raises(MissingInputError, match="'needs' needs 'ghost'"):
        flow.run({})
    assert flow.run({"ghost": 1})["out"] == 1

    with pytest.raises(DataFlowError, match="already outputs"):
        flow.register("again", lambda: {"out": 2}, inputs=(), outputs=("out",))
    with pytest.raises(DataFlowError, match="already registered"):
        flow.register("needs", lambda: {"other": 2}, inputs=(), outputs=("other",))
    flow.register("liar", lambda: {"wrong": 1}, inputs=(), outputs=("promised",))
    with pytest.raises(DataFlowError, match="did not return promised"):
        flow.run({"ghost": 1})


def test_dataflow_is_thread_safe() -> None:
    flow = DataFlow()
    flow.register("square", lambda x: {"sq": x * x}, inputs=("x",), outputs=("sq",))
    start = threading.Barrier(8)

    def worker(i: int) -> list[int]:
        start.wait()
        # Register while the other threads run the flow, then run it many times with our own x.
        flow.register(f"plus_{i}", lambda sq, i=i: {f"r{i}": sq + i}, inputs=("sq",), outputs=(f"r{i}",))
        return [flow.run({"x": x})[f"r{i}"] - x * x for x in range(200)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    assert results == [[i] * 200 for i in range(8)]
    assert len(flow.stages) == 9
    order = flow.order({"x"})
    assert order[0] == "square" and sorted(order[1:]) == sorted(f"plus_{i}" for i in range(8))


def test_the_model_conditioning_path_is_a_dataflow() -> None:
    model = tiny_model()
    order = model.flow.order({"x_t", "timesteps", "text_tokens", "text_mask", "reference"})
    assert order.index("text") < order.index("condition") < order.index("experts") < order.index("gnn")
    assert order.index("vision") < order.index("condition") and order.index("router") < order.index("fusion")
    assert order[-1] == "fusion"


# -- version 2: the schedule, the caption in the time embedding, one expert, the plain baseline -------
def test_new_configs_default_to_zero_snr_v_prediction_and_old_ones_keep_their_meaning() -> None:
    from engines.origin.model.config import OriginConfig

    current = OriginConfig()
    assert (current.model.noise_schedule, current.model.prediction_type, current.model.caption_to_time) == (
        "zero_snr", "v_prediction", True)
    # A version-1 checkpoint's config, as it was saved (every field it had, and no newer ones).
    saved = tiny_config(32).to_dict()
    for key in ("noise_schedule", "caption_to_time", "caption_layers", "architecture"):
        del saved["model"][key]
    saved["model"]["prediction_type"] = "epsilon"
    saved["version"] = 1
    old = OriginConfig.from_dict(saved)
    assert (old.model.noise_schedule, old.model.prediction_type, old.model.caption_to_time) == (
        "linear", "epsilon", False)
    # ... so its weights still fit the network its config builds (no time-embedding projection).
    assert not any(key.startswith(("unet.cond_proj", "caption.")) for key in OriginModel(old.model).state_dict())
    assert OriginConfig.from_dict(old.to_dict()) == old  # and it stays that way once saved again


def test_new_configs_default_to_one_expert_and_older_ones_keep_the_mixture() -> None:
    """Version 4 made the colour expert alone, without the GNN, the default (the learns-benchmark:
    docs/origin-model.md); a config of version 3 or older that names no experts meant all 14 and
    two graph layers, and a run saved with them rebuilds exactly the network it trained."""
    from engines.origin.model.config import CONFIG_VERSION, DEFAULT_EXPERTS, OriginConfig

    current = OriginConfig()
    assert CONFIG_VERSION == 4 and current.model.expert_names == DEFAULT_EXPERTS == ("color",)
    assert current.model.gnn_layers == 0
    assert OriginConfig.from_dict({"model": {"resolution": 32}}).model.expert_names == ("color",)
    for version in (1, 2, 3):
        hand_written = OriginConfig.from_dict({"version": version, "model": {"resolution": 32}})
        assert hand_written.model.expert_names == EXPERT_NAMES and hand_written.model.gnn_layers == 2
        assert hand_written.version == CONFIG_VERSION
    saved = tiny_config(32).to_dict()  # a version-3 run's config.json: every field written out
    saved["version"] = 3
    loaded = OriginConfig.from_dict(saved)
    assert loaded.model.expert_names == EXPERT_NAMES and loaded.model.gnn_layers == 1
    weights = OriginModel(tiny_config(32).model).state_dict()
    OriginModel(loaded.model).load_state_dict(weights)  # strict: the same network


def test_the_training_schedule_reaches_pure_noise() -> None:
    from engines.origin.model.config import OriginConfig
    from engines.origin.model.schedule import training_scheduler

    ab = training_scheduler(OriginConfig()).alphas_cumprod
    assert ab[-1] == 0 and ab[0] > 0.99  # zero terminal SNR: the last level has no picture left
    linear = OriginConfig.from_dict({"model": {"noise_schedule": "linear", "prediction_type": "epsilon"}})
    assert float(training_scheduler(linear).alphas_cumprod[-1].sqrt()) > 0.006  # the washed-out schedule


def test_the_caption_reaches_the_unet_time_embedding() -> None:
    model = tiny_model()
    x, t, tokens, mask = inputs(model)
    values = model.flow.run({"x_t": x, "timesteps": t, "text_tokens": tokens, "text_mask": mask, "reference": None})
    unet_inputs = (x, t, values["context"], values["context_mask"])

    def difference() -> float:
        with torch.no_grad():
            heard = model.unet(*unet_inputs, cond=values["text_summary"])
            deaf = model.unet(*unet_inputs, cond=torch.zeros_like(values["text_summary"]))
        return float((heard - deaf).abs().max())

    assert difference() == 0  # zero-initialised: a new model starts as the UNet without it
    with torch.no_grad():  # as after some training: the zero-initialised layers have grown
        for weight in model.unet.parameters():
            if weight.dim() > 1 and not weight.any():
                weight.normal_(std=0.1)
    assert difference() > 1e-3


def test_one_expert_without_a_graph_runs_and_learns() -> None:
    model = tiny_model(expert_names=("color",), gnn_layers=0)
    x, t, tokens, mask = inputs(model)
    out = model(x, t, tokens, mask)
    assert out.routing.shape == (2, 1) and torch.isfinite(out.sample).all()
    aux = model.expert_aux_losses(out, x)
    (out.sample.square().mean() + aux["color"]).backward()
    assert model.experts.w1.grad is not None and torch.isfinite(model.experts.w1.grad).all()


def test_the_plain_baseline_answers_like_origin() -> None:
    from engines.origin.model.build import build_model

    torch.manual_seed(0)
    config = replace(tiny_config(32).model, architecture="plain")
    model = build_model(config)
    x, t, tokens, mask = inputs(model)
    mask[1] = False  # an empty caption (classifier-free guidance's unconditional branch)
    out = model(x, t, tokens, mask)
    assert out.sample.shape == x.shape and torch.isfinite(out.sample).all()
    assert out.routing.shape == (2, 1) and model.expert_aux_losses(out, x) == {}
    assert model.parameter_counts()["total"] == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="architecture"):
        build_model(replace(config, architecture="transformer"))


def test_word_order_reaches_the_context_even_from_order_blind_tokens() -> None:
    """The SHA-256 fallback gives a word the same vector anywhere; the caption layers tell
    "red circle, blue background" from "blue circle, red background"."""
    from engines.origin.model.text_encoder import TextEncoder

    encoder = TextEncoder(None, 32, 8)
    tokens, mask = encoder.encode(["red circle, blue background", "blue circle, red background", ""])
    for layers in (0, 1):
        model = tiny_model(caption_layers=layers)
        with torch.no_grad():
            text = model.flow.run({"x_t": torch.zeros(3, 3, 32, 32), "timesteps": torch.zeros(3, dtype=torch.long),
                                   "text_tokens": tokens, "text_mask": mask, "reference": None})
        context, summary = text["text_context"], text["text_summary"]
        same_set = torch.allclose(summary[0], summary[1], atol=1e-6)
        assert same_set == (layers == 0)  # without the layers, only the set of words arrives
        assert not text["text_context_mask"][2].any()  # the empty caption stays empty
        assert not layers or not context[2].any()
