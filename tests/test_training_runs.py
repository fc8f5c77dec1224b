"""Runs as the Training tab sees them: status, steering flags, the queue, safety checkpoints, crash
and re-attach, the validation loss. Real tiny training runs on the CPU, in this process or as the
detached ``app.py train`` processes the studio starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from engines.context import build_engine_context
from engines.errors import Cancelled
from engines.origin.model import checkpoints
from engines.origin.training import runs
from engines.origin.training.request import TrainRequest
from engines.origin.training.run_control import ControlFlags, ProcessId, TrainingQueue, read_status
from engines.origin.training.trainer import train
from engines.settings import MachineSettings
from test_origin_train import make_dataset, run_cli, small_config


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("training-runs")


@pytest.fixture(scope="module")
def dataset(workdir) -> Path:
    return make_dataset(workdir / "data")


@pytest.fixture(scope="module")
def settings(workdir) -> MachineSettings:
    return MachineSettings(data_dir=workdir / "studio", cpu=True, offline=True)


@pytest.fixture(scope="module")
def ctx(settings):
    return build_engine_context(settings)


def _dead_process() -> ProcessId:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = ProcessId.of(child.pid)
    child.wait()
    return identity or ProcessId(child.pid, time.time(), "")


def wait_for(condition, timeout: float, what: str, process=None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None and not condition():
            raise AssertionError(f"the process ended (code {process.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# -- the pieces --------------------------------------------------------------------------------------
def test_a_reused_pid_is_not_the_run(tmp_path):
    me = ProcessId.current()
    assert me.alive()
    assert not ProcessId(me.pid, me.started - 3600, me.host).alive()  # same pid, another process's start
    assert not _dead_process().alive()


def test_control_flags_are_files(tmp_path):
    flags = ControlFlags(tmp_path)
    assert flags.pending() == set()
    flags.request("save")
    flags.request("stop")
    assert flags.pending() == {"save", "stop"} and (tmp_path / "control" / "save").is_file()
    flags.clear("save")
    assert flags.pending() == {"stop"}
    with pytest.raises(ValueError):
        flags.request("format-disk")
    old = tmp_path / "control" / "stop"
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    flags.request("save")
    flags.clear_older_than(time.time() - 60)  # a new process drops what an ended one left
    assert flags.pending() == {"save"}


def test_the_queue_is_first_come_first_served_and_skips_dead_processes(tmp_path):
    queue = TrainingQueue(tmp_path)
    ghost = queue.join(tmp_path / "ghost", _dead_process())
    first = queue.join(tmp_path / "a")
    second = queue.join(tmp_path / "b")
    assert queue.position(first) == 0 and queue.position(second) == 1
    assert not ghost.path.exists()  # its process is gone: its ticket too
    told = []
    assert not queue.wait(second, cancelled=lambda: True, on_wait=told.append, poll_s=0.01)
    assert not second.path.exists()  # a cancelled wait leaves the queue
    queue.leave(first)
    third = queue.join(tmp_path / "c")
    assert queue.wait(third, cancelled=lambda: False, poll_s=0.01)


def _fake_checkpoint(run: Path, name: str, step: int) -> None:
    folder = run / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"epoch": 0, "step": step}))


def test_a_safety_checkpoint_replaces_the_previous_one_and_never_counts(tmp_path):
    for i, step in enumerate((10, 20, 30)):
        _fake_checkpoint(tmp_path, f"epoch-{i + 1:06d}", step)
    _fake_checkpoint(tmp_path, "safety-000035", 35)
    assert checkpoints.prune(tmp_path, keep=3) == []  # 3 epoch checkpoints kept, the safety one is extra
    _fake_checkpoint(tmp_path, "safety-000040", 40)
    assert [p.name for p in checkpoints.prune(tmp_path, keep=3)] == ["safety-000035"]
    _fake_checkpoint(tmp_path, "epoch-000004", 50)
    gone = [p.name for p in checkpoints.prune(tmp_path, keep=3)]
    assert sorted(gone) == ["epoch-000001", "safety-000040"]
    assert checkpoints.find_latest(tmp_path).path.name == "epoch-000004"


def test_validation_holds_out_one_image_in_forty_and_keeps_its_choice(tmp_path):
    from engines.origin.training.validation import HOLD_OUT_EVERY, choose, load_or_choose

    paths = [str(tmp_path / f"img_{i:03d}.png") for i in range(2 * HOLD_OUT_EVERY)]
    choice = choose(paths, tmp_path)
    assert choice.held_out and len(choice.paths) == 2
    more = choose(paths + [str(tmp_path / f"new_{i}.png") for i in range(HOLD_OUT_EVERY)], tmp_path)
    assert set(choice.paths) & set(more.paths)  # adding images keeps most of the choice
    small = choose(paths[:10], tmp_path)
    assert not small.held_out and len(small.paths) == 4
    (tmp_path / "run").mkdir()
    recorded = load_or_choose(tmp_path / "run", paths, tmp_path, resuming=False)
    again = load_or_choose(tmp_path / "run", paths[:5], tmp_path, resuming=True)
    assert again == recorded  # read back from validation.json, whatever the folder holds now


# -- in-process runs --------------------------------------------------------------------------------
def test_flags_save_sample_and_stop_a_run_and_its_status_says_so(workdir, dataset, ctx):
    run = workdir / "steered"
    flags = ControlFlags(run)
    statuses = []

    def on_step(step, total, message="", preview=None):
        statuses.append(read_status(run)["state"])
        if step == 2:
            flags.request("save")
            flags.request("sample")
        if step == 4:
            flags.request("stop")

    config = small_config(batch_size=2, epochs=50, checkpoint_every_epochs=100, milestones=(),
                          sample_every_steps=0, validate_every_steps=2, safety_checkpoint_minutes=0)
    with pytest.raises(Cancelled):
        train(TrainRequest(data=dataset, run=run, config=config), ctx, on_step=on_step)
    assert statuses and set(statuses) == {"running"}  # what the tab reads while the run trains
    names = [c.path.name for c in checkpoints.list_checkpoints(run)]
    assert names == ["step-000002", "step-000004"]  # Save now after step 2, Stop after step 4
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step-000003-0.png", "step-000003-1.png"]
    assert flags.pending() == set()
    status = read_status(run)
    assert status["state"] == "stopped" and status["step"] == 4 and status["pid"] == os.getpid()
    assert runs.judge(run).describe().startswith("stopped at step 4")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validation = [line for line in lines if "validation" in line]
    assert [v["step"] for v in validation] == [1, 2, 4]
    assert all(v["validation"]["held_out"] is False and v["validation"]["images"] == 4 for v in validation)
    assert len(validation[0]["validation"]["by_timestep"]) == 5
    assert "validation loss: 4 training images" in (run / "logs" / "main.log").read_text()


def test_the_validation_loss_is_the_same_for_the_same_weights(workdir, dataset, ctx):
    from engines.origin.model.build import build_model
    from engines.origin.model.schedule import training_scheduler
    from engines.origin.model.text_encoder import register_text_encoder
    from engines.origin.training.forward_backward import TextCache
    from engines.origin.training.validation import Validator

    config = small_config()
    torch.manual_seed(0)
    model = build_model(config.model)
    clean = torch.rand(3, 3, 32, 32) * 2 - 1
    validator = Validator(clean, ["a", "b", "c"], num_timesteps=config.train.num_train_timesteps, held_out=True)
    with ctx.hardware.use(register_text_encoder(ctx.hardware, config.model)) as encoder:
        def measure():
            return validator.measure(model, TextCache(encoder), training_scheduler(config), config,
                                     torch.device("cpu"), batch=2, autocast=nullcontext)

        first, second = measure(), measure()
    assert first == second and first["loss"] > 0
    assert model.training  # put back in training mode
    assert list(first["by_timestep"]) == [str(t) for t in validator.timesteps] == ["100", "300", "500", "700", "900"]


def test_a_safety_checkpoint_on_a_timer(workdir, dataset, ctx):
    run = workdir / "safety"
    config = small_config(batch_size=2, epochs=2, checkpoint_every_epochs=100, milestones=(),
                          safety_checkpoint_minutes=1e-6, validate_every_steps=0, sample_every_steps=0)
    train(TrainRequest(data=dataset, run=run, config=config), ctx)
    names = [c.path.name for c in checkpoints.list_checkpoints(run)]
    # One every step (the timer is a microsecond), each replacing the last; the end writes epoch-000002.
    assert names == ["epoch-000002"]
    log = (run / "logs" / "main.log").read_text()
    assert log.count("checkpoint safety-") == 7 and "removed safety-000006" in log


# -- detached processes, as the studio starts them ----------------------------------------------------
def test_a_detached_run_is_queued_reattached_killed_resumed_and_stopped(workdir, dataset, settings):
    run = settings.paths.runs / "detached"
    config_file = workdir / "detached.json"
    small_config(batch_size=2, epochs=1000, checkpoint_every_epochs=10**6, milestones=(), sample_every_steps=0,
                 validate_every_steps=0, safety_checkpoint_minutes=0).save(config_file)
    env = {"OMP_NUM_THREADS": "1"}
    # Another run holds the machine: the new one waits in the queue, visibly.
    queue = TrainingQueue(settings.paths.runtime)
    holder = queue.join(settings.paths.runs / "other")
    process = runs.launch(runs.train_command(settings, run, data=dataset, config=config_file), run, env=env)
    try:
        wait_for(lambda: runs.judge(run).state == "queued", 60, "the queued state")
        assert runs.judge(run).queue_position == 1
        queue.leave(holder)
        # Re-attach: everything below is judged from the folder, as a restarted studio does.
        wait_for(lambda: runs.judge(run).state == "running" and runs.judge(run).step >= 2, 90, "training steps")
        runs.save_now(run)
        wait_for(lambda: checkpoints.find_latest(run), 30, "the Save now checkpoint")
        saved = checkpoints.find_latest(run).step
        os.kill(process.pid, signal.SIGKILL)
        info = wait_for(lambda: runs.judge(run) if runs.judge(run).state == "crashed" else None, 30, "crashed")
        assert info.step >= saved and "ended unexpectedly" in info.describe()
        assert not [r for r in runs.list_runs(settings.paths.runs) if r.active]

        # Resume from the newest checkpoint, then a graceful stop.
        process = runs.launch(runs.train_command(settings, run, resume=True), run, env=env)
        wait_for(lambda: runs.judge(run).state == "running" and runs.judge(run).step > saved + 1, 90,
                 "the resumed run's steps")
        runs.stop(run)
        wait_for(lambda: runs.judge(run).state == "stopped", 60, "the stopped state")
        stopped = runs.judge(run)
        assert stopped.newest_checkpoint == f"step-{stopped.step:06d}" and stopped.step > saved
        config, weights, _ = checkpoints.load_for_inference(run)
        assert weights and config.train.epochs == 1000
        wait_for(lambda: not process.alive(), 30, "the process to end")
        assert f"resumed from step-{saved:06d}" in (run / "logs" / "main.log").read_text()
    finally:
        if process.alive():
            os.kill(process.pid, signal.SIGKILL)


def test_a_run_killed_before_its_first_checkpoint_starts_over_on_resume(workdir, dataset, settings, capsys):
    run = settings.paths.runs / "early"
    config_file = workdir / "early.json"
    small_config(batch_size=2, epochs=1000, checkpoint_every_epochs=10**6, milestones=(), sample_every_steps=0,
                 validate_every_steps=0, safety_checkpoint_minutes=0).save(config_file)
    process = runs.launch(runs.train_command(settings, run, data=dataset, config=config_file), run,
                          env={"OMP_NUM_THREADS": "1"})
    try:
        wait_for(lambda: runs.judge(run).step >= 2, 90, "training steps")
    finally:
        os.kill(process.pid, signal.SIGKILL)
    wait_for(lambda: runs.judge(run).state == "crashed", 30, "crashed")
    assert checkpoints.find_latest(run) is None
    assert run_cli("--run", str(run), "--resume", "--max-steps", "2", data_dir=settings.data_dir) == 0
    out = capsys.readouterr().out
    assert "early has no checkpoint yet, so it starts over from step 0 with its recorded dataset" in out
    assert checkpoints.find_latest(run).step == 2 and runs.judge(run).state == "finished"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[0] == 1  # the killed session's lines went


def test_resume_of_an_unknown_run_is_one_sentence(settings, capsys):
    assert run_cli("--run", "never-made", "--resume", data_dir=settings.data_dir) == 2
    assert "no checkpoint and no record of its dataset" in capsys.readouterr().err



def test_dashboard_and_chart_from_the_terminal(workdir, settings, capsys):
    run = workdir / "steered"  # stopped by test_flags_save_sample_and_stop_a_run_and_its_status_says_so
    if not (run / "metrics.jsonl").is_file():
        pytest.skip("needs the steered run of this module")
    out = workdir / "chart.png"
    assert run_cli("--chart", str(run), "--output", str(out), data_dir=settings.data_dir) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The run is not active: the dashboard draws once and returns, never touching the run.
    assert run_cli("--dashboard", str(run), data_dir=settings.data_dir) == 0
    shown = capsys.readouterr().out
    assert "steered" in shown and "step 4" in shown
    assert run_cli("--dashboard", "no-such-run", data_dir=settings.data_dir) == 2
    assert "There is no run folder" in capsys.readouterr().err
    assert run_cli(data_dir=settings.data_dir) == 2
    assert "Give the run folder with --run DIR" in capsys.readouterr().err


def test_the_last_error_line_comes_from_the_tail_of_a_long_log(tmp_path):
    from engines.files import tail_lines

    logs = tmp_path / "logs"
    logs.mkdir()
    filler = "".join(f"2026-01-01 INFO step {i} went fine\n" for i in range(5000))  # ~150 KB
    (logs / "error.log").write_text("2026-01-01 ERROR old failure\n" + filler + "2026-01-01 ERROR CUDA out of memory\n"
                                    + "2026-01-01 INFO recovered\n")
    assert runs.last_error_line(tmp_path) == "CUDA out of memory"
    lines = tail_lines(logs / "error.log", max_bytes=100)
    assert lines[-1] == "2026-01-01 INFO recovered" and all(line.startswith("2026") for line in lines)
    assert tail_lines(tmp_path / "missing.log") == []
