"""The Origin trainer on tiny configs: exact resume, crash safety, recovery paths, logs, search, SR.

Everything runs on the CPU with the real OriginModel, ArtDataset and losses at 16-32 px. Torch
runs single-threaded here: on a small shared CPU, two processes each spinning two OpenMP threads
make every step many times slower, and these models are too small to gain from threads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engines.context import build_engine_context
from engines.errors import InvalidRequestError
from engines.origin.model import checkpoints
from engines.origin.model.config import OriginConfig, tiny_config
from engines.origin.training.lr_control import AdaptiveLRController, LRControlSettings
from engines.origin.training.request import FaultInjection, TrainRequest
from engines.origin.training.trainer import train
from engines.settings import MachineSettings

ROOT = Path(__file__).resolve().parent.parent
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_dataset(folder: Path, size: int = 32, count: int = 8) -> Path:
    """Flat colours with a dark bar at a different place in each image, and a caption each."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.zeros((size, size, 3), np.uint8)
        pixels[:, :] = [(i * 37) % 256, 255 - i * 25, 90 + i * 10]
        x = (i * size) // (count + 2)
        pixels[size // 4: 3 * size // 4, x: x + size // 4] = 20
        Image.fromarray(pixels).save(folder / f"panel_{i}.png")
        (folder / f"panel_{i}.txt").write_text(f"bar at position {i}, ink", encoding="utf-8")
    return folder


def small_config(resolution: int = 32, **train_fields) -> OriginConfig:
    config = tiny_config(resolution)
    # "" selects the deterministic hash text encoder directly: no model lookup in tests.
    return replace(config, model=replace(config.model, text_encoder=""),
                   train=replace(config.train, disk_cache=False, **train_fields))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("origin-train")


@pytest.fixture(scope="module")
def dataset(workdir) -> Path:
    return make_dataset(workdir / "data")


@pytest.fixture(scope="module")
def ctx(workdir):
    return build_engine_context(MachineSettings(data_dir=workdir / "studio", cpu=True, offline=True))


def weights(checkpoint: Path, name: str = "model.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / name))


def assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), key


def run_cli(*args: str, data_dir: Path) -> int:
    """``app.py train ARGS`` in this process, as app.main runs it (its exit code for a StudioError)."""
    import app
    from engines.errors import StudioError
    from engines.origin.training import cli as train_cli

    argv = ["train", *args, "--data-dir", str(data_dir), "--cpu", "--offline"]
    parsed = app.build_parser().parse_args(argv)
    try:
        return train_cli.run(parsed, app.settings_from_args(parsed))
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


# -- a straight run that several tests compare against ------------------------------------------------
REFERENCE_STEPS = 4


@pytest.fixture(scope="module")
def reference_run(workdir, dataset, ctx):
    """4 steps straight: batch 3 of 8 images, so epochs end on a short batch and resume lands mid-epoch."""
    config = small_config(batch_size=3, warmup_steps=2, sample_every_steps=3)
    return train(
        TrainRequest(data=dataset, run=workdir / "straight", config=config, max_steps=REFERENCE_STEPS), ctx
    )


def test_resume_continues_exactly(workdir, dataset, ctx, reference_run):
    config = reference_run.config
    first = train(TrainRequest(data=dataset, run=workdir / "resumed", config=config, max_steps=2), ctx)
    assert first.checkpoint.name == "step-000002"
    second = train(
        TrainRequest(data=dataset, run=workdir / "resumed", resume=True, max_steps=REFERENCE_STEPS), ctx
    )
    assert second.steps == REFERENCE_STEPS
    assert first.losses + second.losses == pytest.approx(reference_run.losses, abs=1e-6)
    for name in ("model.safetensors", "ema.safetensors"):
        assert_same_weights(weights(reference_run.checkpoint, name), weights(second.checkpoint, name))
    meta = json.loads((second.checkpoint / "meta.json").read_text())
    assert meta["progress"]["batch_in_epoch"] == 1  # 4 steps = epoch 1 (3 batches) + 1 batch


def test_dropout_randomness_is_restored_on_resume(workdir, dataset, ctx):
    config = small_config(batch_size=4, warmup_steps=1)
    config = replace(config, model=replace(config.model, dropout=0.2))
    straight = train(
        TrainRequest(data=dataset, run=workdir / "drop-straight", config=config, max_steps=3), ctx
    )
    train(TrainRequest(data=dataset, run=workdir / "drop-resumed", config=config, max_steps=1), ctx)
    resumed = train(TrainRequest(data=dataset, run=workdir / "drop-resumed", resume=True, max_steps=3), ctx)
    assert_same_weights(weights(straight.checkpoint), weights(resumed.checkpoint))


def test_run_folder_has_metrics_logs_samples_and_checkpoints(reference_run):
    run = reference_run.run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lines = [line for line in records if "validation" not in line]
    assert [line["step"] for line in lines] == list(range(1, REFERENCE_STEPS + 1))
    # The validation loss at step 1 and at the end (validate_every_steps is 100).
    assert [line["step"] for line in records if "validation" in line] == [1, REFERENCE_STEPS]
    first = lines[0]
    for key in ("epoch", "loss", "lr", "lr_scale", "grad_norm", "samples_per_s", "memory"):
        assert key in first
    assert set(first["losses"]) == {
        "diffusion",
        "line_art",
        "color",
        "anatomy",
        "perspective",
        "color_harmony",
        "expert_aux",
    }
    experts = reference_run.config.model.expert_names
    assert set(first["experts"]) == set(experts)
    assert sum(e["routing"] for e in first["experts"].values()) == pytest.approx(1.0, abs=1e-4)
    logs = run / "logs"
    assert "training straight on 8 images" in (logs / "main.log").read_text()
    assert "samples/s" in (logs / "performance.log").read_text()
    assert (
        "routing" in (logs / "diagnosis.log").read_text()
        and "gradients" in (logs / "diagnosis.log").read_text()
    )
    assert (logs / "error.log").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step-000003-0.png",
        "step-000003-1.png",
    ]
    assert json.loads((run / "config.json").read_text())["train"]["batch_size"] == 3
    config, state, info = checkpoints.load_for_inference(run)
    assert info.step == REFERENCE_STEPS and config.model.resolution == 32 and state


def test_training_and_its_samples_take_the_text_encoder_from_the_pool(ctx, reference_run):
    # The run drew its sample images with it and gave it back when it ended.
    (record,) = [r for r in ctx.hardware.pool.snapshot() if r.name.startswith("text-encoder:")]
    assert not record.in_use
    assert list((reference_run.run / "samples").glob("*.png"))


def test_main_log_reports_each_epochs_cache_hits(workdir, dataset, ctx):
    # Epoch 1 decodes every image, epoch 2 finds them all in the RAM tier: 0 % then 100 %
    # (a run-wide figure would say 50 % after the second epoch).
    config = small_config(batch_size=4, epochs=2, ram_cache_mb=16)
    result = train(TrainRequest(data=dataset, run=workdir / "cache-per-epoch", config=config,
                                write_checkpoints=False), ctx)
    assert result.epochs == 2
    log = (result.run / "logs" / "main.log").read_text()
    assert re.findall(r"data cache (\d+) % hits \(RAM (\d+) %", log) == [("0", "0"), ("100", "100")]


def test_nan_guard_skips_the_step(workdir, dataset, ctx, reference_run):
    config = reference_run.config
    result = train(TrainRequest(data=dataset, run=workdir / "nan", config=config, max_steps=2,
                                faults=FaultInjection(nan_at_step=2)), ctx)
    assert result.skipped_steps == 1
    # The poisoned step changed nothing: the weights are those after step 1 of the straight run.
    one = train(TrainRequest(data=dataset, run=workdir / "one-step", config=config, max_steps=1), ctx)
    assert_same_weights(weights(one.checkpoint), weights(result.checkpoint), atol=0)
    assert "not finite" in (result.run / "logs" / "error.log").read_text()
    steps = [json.loads(line) for line in (result.run / "metrics.jsonl").read_text().splitlines()]
    last = [line for line in steps if "validation" not in line][-1]
    assert last["skipped"] is True and last["loss"] is None


def test_out_of_memory_writes_an_emergency_checkpoint_and_halves_the_batch(workdir, dataset, ctx):
    config = small_config(batch_size=4, warmup_steps=1)
    straight = train(
        TrainRequest(data=dataset, run=workdir / "oom-straight", config=config, max_steps=3), ctx
    )
    result = train(TrainRequest(data=dataset, run=workdir / "oom", config=config, max_steps=3,
                                faults=FaultInjection(oom_at_step=2)), ctx)
    assert result.oom_recoveries == 1 and result.micro_batch == 2 and result.steps == 3
    emergency = [c for c in checkpoints.list_checkpoints(result.run) if c.kind == "emergency"]
    assert [c.path.name for c in emergency] == ["emergency-000001"]
    checkpoints.load_for_inference(emergency[0].path)
    assert "out of memory" in (result.run / "logs" / "error.log").read_text()
    # Two micro-batches of 2 are the same step as one batch of 4, up to float rounding.
    assert_same_weights(weights(straight.checkpoint), weights(result.checkpoint), atol=1e-5)


def test_checkpoints_every_epoch_pruned_but_milestones_kept(workdir, dataset, ctx):
    config = small_config(
        batch_size=8, epochs=5, checkpoint_every_epochs=1, keep_checkpoints=2, milestones=(2,)
    )
    train(TrainRequest(data=dataset, run=workdir / "prune", config=config), ctx)
    names = [c.path.name for c in checkpoints.list_checkpoints(workdir / "prune")]
    assert names == ["milestone-000002", "epoch-000004", "epoch-000005"]


def test_lr_controller_lowers_on_plateau_and_raises_when_healthy():
    settings = LRControlSettings(patience=2)
    flat = AdaptiveLRController(window=5, warmup_steps=3, settings=settings)
    changes = [flat.observe(step, 1.0) for step in range(1, 4 + 5 * 3)]
    assert changes.count("lowered") == 1 and flat.scale == pytest.approx(0.5)

    falling = AdaptiveLRController(window=5, settings=settings)
    loss = 1.0
    for step in range(1, 5 * 3 + 1):
        falling.observe(step, loss)
        loss *= 0.97  # ~14 % better per window
    assert falling.scale == pytest.approx(1.1)

    clipped = AdaptiveLRController(window=5, settings=settings)
    loss = 1.0
    for step in range(1, 5 * 3 + 1):
        clipped.observe(step, loss, clipped=True)
        loss *= 0.97
    assert clipped.scale == 1.0  # healthy progress, but at the gradient limit: no raise

    skipping = AdaptiveLRController(window=5, settings=settings)
    assert [skipping.observe(s, float("nan"), skipped=True) for s in (1, 2, 3)] == ["", "", "lowered"]

    restored = AdaptiveLRController()
    restored.load_state_dict(falling.state_dict())
    assert restored.state_dict() == falling.state_dict()


def test_bad_requests_are_one_sentence(workdir, dataset, ctx, reference_run):
    empty = workdir / "empty"
    empty.mkdir(exist_ok=True)
    cases = [
        (TrainRequest(data=workdir / "missing", run=workdir / "r1"), "does not exist"),
        (TrainRequest(data=empty, run=workdir / "r2"), "has no images"),
        (TrainRequest(data=dataset, run=workdir / "r3", resume=True), "no finished checkpoint to resume"),
        (TrainRequest(data=dataset, run=reference_run.run), "already has checkpoints"),
        (TrainRequest(data=dataset, run=workdir / "r4", config=small_config(), resolution=30), "multiple of"),
        (
            TrainRequest(data=dataset, run=workdir / "r5", config=small_config(learning_rate=5.0)),
            "learning rate",
        ),
    ]
    for request, text in cases:
        with pytest.raises(InvalidRequestError, match=text):
            train(request, ctx)


def test_cli_rejects_a_bad_dataset_and_a_bad_config(workdir, capsys):
    bad_config = workdir / "bad.json"
    bad_config.write_text('{"train": {"epochz": 3}}')
    code = run_cli("--data", str(workdir / "nowhere"), "--run", str(workdir / "cli-bad"),
                   data_dir=workdir / "s")
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = run_cli("--data", str(workdir), "--run", str(workdir / "cli-bad"), "--config", str(bad_config),
                   data_dir=workdir / "s")
    assert code == 2 and "Unknown TrainConfig setting(s): epochz" in capsys.readouterr().err
    code = run_cli("--run", str(workdir / "cli-bad"), data_dir=workdir / "s")
    assert code == 2 and "Give the dataset folder with --data DIR." in capsys.readouterr().err


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(workdir, dataset):
    config_file = workdir / "kill.json"
    small_config(batch_size=8, epochs=3).save(config_file)
    run = workdir / "killed"
    env = {**SUBPROCESS_ENV, "INKFRAME_TRAIN_FAULTS": json.dumps({"pause_in_checkpoint_s": 120,
                                                                   "pause_from_checkpoint": 2})}
    args = [sys.executable, str(ROOT / "app.py"), "train", "--data", str(dataset), "--run", str(run),
            "--config", str(config_file), "--data-dir", str(workdir / "s"), "--cpu", "--offline"]
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        # The second checkpoint pauses after its weights are written and before meta.json.
        while not list((run / "checkpoints").glob(".tmp-epoch-000002-*/ema.safetensors")):
            assert process.poll() is None, "the training process ended before its second checkpoint"
            assert time.monotonic() < deadline, "the second checkpoint never started"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    latest = checkpoints.find_latest(run)
    assert latest.path.name == "epoch-000001"
    config, state, _ = checkpoints.load_for_inference(run)
    assert state and config.train.epochs == 3
    # --data left out: the run remembers its dataset.
    assert run_cli("--run", str(run), "--resume", data_dir=workdir / "s") == 0
    assert [c.path.name for c in checkpoints.list_checkpoints(run)] == ["epoch-000001", "epoch-000002",
                                                                        "epoch-000003"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert "removed the unfinished .tmp-epoch-000002" in (run / "logs" / "main.log").read_text()


# -- two processes through accelerate launch, then a resume in one ------------------------------------
# With --verbose every process logs which images each step trained on (optimizer_step.py's debug line).
BATCH_LINE = re.compile(r"process (\d+), step (\d+) \(epoch (\d+)\): (.+)$", re.M)


def images_by_epoch_and_process(text: str) -> dict[tuple[int, int], list[str]]:
    """{(epoch, process): the image names its steps trained on, in order} from the debug lines."""
    seen: dict[tuple[int, int], list[str]] = {}
    for process, _step, epoch, paths in BATCH_LINE.findall(text):
        seen.setdefault((int(epoch), int(process)), []).extend(Path(p).name for p in paths.split(", "))
    return seen


@pytest.fixture(scope="module")
def two_process_run(workdir, dataset):
    """2 epochs in 2 processes: batch 2 per process over 8 images, so 2 steps an epoch; (run, stderr)."""
    config_file = workdir / "ddp.json"
    small_config(batch_size=2, epochs=2).save(config_file)
    return launch_two_processes(workdir, dataset, workdir / "ddp", config_file, port=29517)


def launch_two_processes(workdir: Path, dataset: Path, run: Path, config_file: Path, *extra: str,
                         port: int) -> tuple[Path, str]:
    # accelerate's --cpu launcher starts one process (several need mpirun); --multi_gpu starts them
    # through torchrun, and on a machine without a GPU they talk over gloo on the CPU.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port),
        str(ROOT / "app.py"), "train", "--data", str(dataset), "--run", str(run),
        "--config", str(config_file), "--data-dir", str(workdir / "s"), "--cpu", "--offline", "--verbose", *extra,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT,
                            env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result.stderr


def test_two_process_accelerate_launch_trains_and_checkpoints(workdir, dataset, ctx, two_process_run):
    run, _ = two_process_run
    # One set of checkpoints (the main process writes them), not one per process.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-000001", "epoch-000002"]
    latest = checkpoints.find_latest(run)
    assert latest.step == 4 and latest.epoch == 2  # 8 images / (2 per batch x 2 processes) = 2 steps an epoch
    assert latest.meta["processes"] == 2 and latest.meta["progress"]["batch_in_epoch"] == 0
    assert latest.meta["progress"]["samples_seen"] == 16  # 2 epochs of 8 images
    state = latest.path / "training_state"
    assert sorted(p.name for p in state.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                        "random_states_1.pkl"]
    # One metrics.jsonl, with the lines a one-process run of the same 4 steps (batch 4 = 2 x 2) writes:
    # not a second writer's copies.
    one = train(TrainRequest(data=dataset, run=workdir / "ddp-one-process",
                             config=small_config(batch_size=4, epochs=2), write_checkpoints=False), ctx)
    assert one.steps == 4
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (one.run / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], sorted(line)) for line in lines] == [(line["step"], sorted(line))
                                                                for line in expected]
    assert [line["epoch"] for line in lines if "loss" in line] == [0.5, 1.0, 1.5, 2.0]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    logs = run / "logs"
    main_log = (logs / "main.log").read_text()
    assert main_log.count("training ddp on 8 images") == 1
    assert "2 epochs x 2 steps (batch 2 x 1 accumulation x 2 processes" in main_log
    assert main_log.count("checkpoint epoch-000002 written") == 1
    performance = (logs / "performance.log").read_text()
    assert re.findall(r"step (\d+): batch", performance) == ["1", "2", "3", "4"]
    assert (logs / "diagnosis.log").is_file() and (logs / "error.log").read_text() == ""
    config, weights_, _ = checkpoints.load_for_inference(run)
    from engines.origin.model.network import OriginModel

    OriginModel(config.model).load_state_dict(weights_)  # the model's own names, not DDP's "module."


def test_two_processes_each_train_on_half_of_every_epoch(two_process_run):
    _, stderr = two_process_run
    seen = images_by_epoch_and_process(stderr)
    assert sorted(seen) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    everything = {f"panel_{i}.png" for i in range(8)}
    for epoch in (1, 2):
        first, second = seen[(epoch, 0)], seen[(epoch, 1)]
        assert len(first) == len(second) == 4  # 2 steps of batch 2 each
        assert not set(first) & set(second), (epoch, first, second)
        assert set(first) | set(second) == everything


def test_a_two_process_run_resumes_in_one_process(workdir, two_process_run, caplog):
    import shutil

    # A copy: the tests above read the 2-process run as it was written.
    run = workdir / "ddp-resumed"
    shutil.copytree(two_process_run[0], run)
    # No accelerate launch and no --data: one process, on the dataset the run remembers.
    with caplog.at_level("DEBUG", logger="engines.origin.training.optimizer_step"):
        assert run_cli("--run", str(run), "--resume", "--epochs", "3", data_dir=workdir / "s") == 0
    main_log = (run / "logs" / "main.log").read_text()
    assert "resumed from epoch-000002: epoch 2, step 4, batch 0 of the epoch" in main_log
    assert "3 epochs x 4 steps (batch 2 x 1 accumulation x 1 processes" in main_log
    # At an epoch boundary nothing is skipped: the one process trains all 8 images of epoch 3, once each.
    seen = images_by_epoch_and_process(caplog.text)
    assert sorted(seen) == [(3, 0)]
    assert sorted(seen[(3, 0)]) == [f"panel_{i}.png" for i in range(8)]
    assert [c.path.name for c in checkpoints.list_checkpoints(run)] == ["epoch-000001", "epoch-000002",
                                                                        "epoch-000003"]
    latest = checkpoints.find_latest(run)
    assert latest.step == 8 and latest.epoch == 3 and latest.meta["processes"] == 1
    assert latest.meta["progress"]["samples_seen"] == 24  # 3 epochs of 8 images
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, 9))  # the training steps
    config, weights_, info = checkpoints.load_for_inference(run)
    from engines.origin.model.network import OriginModel

    assert info.path.name == "epoch-000003"
    OriginModel(config.model).load_state_dict(weights_)  # the EMA weights
    OriginModel(config.model).load_state_dict(weights(info.path))  # the raw ones


def test_a_two_process_run_stopped_mid_epoch_resumes_in_one_process_on_the_right_batches(workdir, dataset,
                                                                                        caplog):
    config_file = workdir / "ddp-mid.json"
    small_config(batch_size=2, epochs=1, warmup_steps=0).save(config_file)
    # Step 1 of 2 in 2 processes (batches 0 and 1 of the epoch), then the rest in one process.
    run, stderr = launch_two_processes(workdir, dataset, workdir / "ddp-mid", config_file, "--max-steps", "1",
                                       port=29518)
    first = images_by_epoch_and_process(stderr)
    with caplog.at_level("DEBUG", logger="engines.origin.training.optimizer_step"):
        assert run_cli("--run", str(run), "--resume", data_dir=workdir / "s") == 0
    second = images_by_epoch_and_process(caplog.text)
    trained = first[(1, 0)] + first[(1, 1)] + second[(1, 0)]
    assert sorted(trained) == [f"panel_{i}.png" for i in range(8)]  # every image once: none twice, none left
    main_log = (run / "logs" / "main.log").read_text()
    assert "saved by 2 process(es), continuing on 1: batch 1 of the epoch becomes 2" in main_log
    latest = checkpoints.find_latest(run)
    assert latest.meta["progress"]["samples_seen"] == 8 and latest.step == 3 and latest.epoch == 1
    # The learning-rate schedule went on from the data's position (2 of 4 one-process steps), to its end.
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3]


def test_search_writes_the_best_config(workdir):
    run = workdir / "search"
    config_file = workdir / "search-base.json"
    small_config(resolution=16).save(config_file)
    data16 = make_dataset(workdir / "data16", size=16)
    assert run_cli("--data", str(data16), "--run", str(run), "--config", str(config_file), "--search", "2",
                   "--max-steps", "3", data_dir=workdir / "s") == 0
    best = OriginConfig.load(run / "search" / "best_config.json")
    trials = [json.loads(line) for line in (run / "search" / "trials.jsonl").read_text().splitlines()]
    assert [t["kind"] for t in trials] == ["random", "around the best"]
    winner = min(trials, key=lambda t: t["score"])
    assert best.train.learning_rate == pytest.approx(winner["learning_rate"])
    assert best.train.batch_size == winner["batch_size"] and best.model.dropout == pytest.approx(
        winner["dropout"]
    )
    # A normal training config again, not a trial's (no endless epochs, checkpoints as in the base).
    assert best.train.epochs == small_config().train.epochs and best.train.checkpoint_every_epochs == 1


def test_sr_stage_writes_the_super_resolution_model(workdir, dataset, ctx):
    from engines.origin.generation.enhance import SuperResolution, find_sr_model
    from engines.origin.training.sr_stage import SrRequest, train_sr

    result = train_sr(
        SrRequest(data=dataset, run=workdir / "sr-run", resolution=32, epochs=2, batch_size=4), ctx
    )
    assert result.steps == 4 and result.loss < 1.0
    path = find_sr_model(workdir / "sr-run")
    assert path == workdir / "sr-run" / "sr" / "sr.safetensors" and path.with_suffix(".json").is_file()
    assert SuperResolution.load(path).scale == 2


def test_tiny_model_overfits_eight_images(workdir, ctx):
    data = make_dataset(workdir / "overfit-data", size=16)
    config = small_config(
        resolution=16,
        batch_size=8,
        learning_rate=1e-3,
        warmup_steps=10,
        caption_dropout=0.0,
        epochs=1000,
        checkpoint_every_epochs=10**6,
        milestones=(),
    )
    result = train(TrainRequest(data=data, run=workdir / "overfit", config=config, max_steps=120,
                                write_checkpoints=False), ctx)
    first, last = result.losses[:25], result.losses[-25:]
    # Measured: 0.58 with v-prediction on the zero_snr schedule and Min-SNR's v weight floored at 1
    # (0.2 to 0.3 with epsilon on the linear one): the noisiest levels, where there is no picture left
    # to see, now count fully and hold a loss floor that 120 steps cannot remove. No learning is ~1.
    assert sum(last) / len(last) < 0.7 * sum(first) / len(first)


def test_stop_saves_a_checkpoint_to_resume_from(workdir, dataset, ctx):
    from engines.errors import Cancelled
    from engines.progress import CancelToken

    cancel = CancelToken()

    def on_step(step, total, message="", preview=None):
        if step == 2:
            cancel.cancel()  # the Stop button, pressed during step 2

    with pytest.raises(Cancelled):
        train(
            TrainRequest(
                data=dataset, run=workdir / "stopped", config=small_config(batch_size=4), max_steps=5
            ),
            ctx,
            on_step=on_step,
            cancel=cancel,
        )
    # Stopped during step 2, which ended epoch 1: its epoch checkpoint is the one to resume from
    # (no second copy of the same step is written).
    latest = checkpoints.find_latest(workdir / "stopped")
    assert latest.step == 2 and latest.path.name == "epoch-000001"


# -- the text encoder: recorded in every checkpoint, required on --resume -----------------------------------
def test_a_run_on_the_fallback_records_it_and_resumes_with_it_when_the_model_appears(workdir, dataset, ctx,
                                                                                     monkeypatch):
    from engines.origin.model.text_encoder import TextEncoder
    from tiny_models import save_tiny_sentence_transformer

    later = workdir / "text-model-later"  # named by the config, not downloaded yet: the fallback
    config = small_config(batch_size=4)
    config = replace(config, model=replace(config.model, text_encoder=str(later / "encoder")))
    run = workdir / "on-fallback"
    first = train(TrainRequest(data=dataset, run=run, config=config, max_steps=1), ctx)
    recorded = json.loads((first.checkpoint / "meta.json").read_text())["text_encoder"]
    assert recorded == {"kind": "sha256", "id": "sha256", "dim": 32, "max_tokens": 8}
    log = (run / "logs" / "main.log").read_text()
    assert "text encoder: the SHA-256 word embedding (no text model)" in log
    assert re.search(r"WARNING .*SHA-256 fallback embedding \(.*text-model-later.*\).*models folder", log)

    save_tiny_sentence_transformer(later)  # the model is here now; the run keeps reading captions its way

    def no_load(self, *args):
        raise AssertionError("a run trained on the fallback must not switch to the model")

    monkeypatch.setattr(TextEncoder, "_load_model", no_load)
    second = train(TrainRequest(data=dataset, run=run, resume=True, max_steps=2), ctx)
    assert json.loads((second.checkpoint / "meta.json").read_text())["text_encoder"] == recorded


def test_resume_refuses_a_text_model_whose_weights_changed(workdir, dataset, ctx, capsys):
    from tiny_models import save_tiny_sentence_transformer

    model = save_tiny_sentence_transformer(workdir / "text-model")
    config = small_config(batch_size=4)
    config = replace(config, model=replace(config.model, text_encoder=str(model)))
    run = workdir / "on-text-model"
    first = train(TrainRequest(data=dataset, run=run, config=config, max_steps=1), ctx)
    recorded = json.loads((first.checkpoint / "meta.json").read_text())["text_encoder"]
    assert recorded["kind"] == "sentence-transformers" and recorded["id"] == str(model)
    assert f"text encoder: {model} (weights {recorded['weights_sha256'][:8]})" in (run / "logs" / "main.log").read_text()

    save_tiny_sentence_transformer(workdir / "text-model", seed=1)  # retrained in place
    capsys.readouterr()
    assert run_cli("--run", str(run), "--resume", "--max-steps", "2", data_dir=workdir / "studio") == 4
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: This model was trained with the text model {model} (weights "
                            f"{recorded['weights_sha256'][:8]}), but the one here has other weights")
    assert checkpoints.find_latest(run).step == 1  # nothing trained on the wrong captions


def test_resume_from_a_checkpoint_that_records_no_text_encoder_warns(workdir, dataset, ctx):
    run = workdir / "older-studio"
    first = train(TrainRequest(data=dataset, run=run, config=small_config(batch_size=4), max_steps=1), ctx)
    meta_path = first.checkpoint / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["text_encoder"]  # as an older studio wrote it
    meta_path.write_text(json.dumps(meta))
    second = train(TrainRequest(data=dataset, run=run, resume=True, max_steps=2), ctx)
    assert second.steps == 2
    log = (run / "logs" / "main.log").read_text()
    assert re.search(r"WARNING .*step-000001 records no text encoder .*resuming with the config's", log)
