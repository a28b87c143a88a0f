"""Crash safety, through the real CLI in subprocesses: a run killed with SIGKILL after a checkpoint and then resumed
ends bit-identical to an uninterrupted run; SIGTERM/SIGINT save a checkpoint at the next step and exit cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignclip.rundir import latest_checkpoint
from alignclip.training.checkpoint import load_trainer_state
from alignclip.training.metrics import read_metrics
from conftest import MICRO

STEPS = 100  # 256 samples / batch 16 = 16 steps per epoch: the runs cross several epoch boundaries


@pytest.fixture(scope="module")
def common(tmp_path_factory) -> list[str]:
    preset = tmp_path_factory.mktemp("model") / "micro.json"
    preset.write_text(json.dumps(MICRO))
    cache = tmp_path_factory.getbasetemp() / "semantic-cache"
    return ["--preset", str(preset), "--device", "cpu", "--workers", "0", "--batch-size", "16",
            "--steps", str(STEPS), "--lr", "2e-3", "--set", "data.num_samples=256", "--set", "optim.warmup_steps=5",
            "--set", "loss.separation_warmup_steps=30", "--set", "runtime.threads=1",
            "--set", "logging.progress=false", "--set", "logging.tensorboard=false", "--set", "logging.log_every=1",
            "--set", "logging.checkpoint_every=5", "--set", "logging.keep_last=0",
            "--set", f"loss.semantic_cache_dir={cache}"]


def launch(*args: str, new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "alignclip.cli.train", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=new_session)


def finish(process: subprocess.Popen, timeout: float = 120) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out


def wait_for(predicate, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before the awaited moment:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the training run")
        time.sleep(0.005)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"step_{STEPS:06d}" / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, common) -> None:
    reference = launch(*common, "--out", str(tmp_path), "--name", "reference")
    out = finish(reference)
    assert reference.returncode == 0, out

    victim = launch(*common, "--out", str(tmp_path), "--name", "victim")
    checkpoints = tmp_path / "victim" / "checkpoints"
    wait_for(lambda: (checkpoints / "step_000010" / "trainer_state.pt").is_file(), victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = latest_checkpoint(checkpoints)
    assert killed_at is not None and int(killed_at.name.split("_")[1]) < STEPS, "killed too late to test resume"

    resumed = launch("--resume", str(tmp_path / "victim"))  # the run's saved config.yaml is the starting point
    out = finish(resumed)
    assert resumed.returncode == 0, out
    assert f"resumed at step {load_trainer_state(killed_at)['step']}" in out

    expected, got = final_weights(tmp_path / "reference"), final_weights(tmp_path / "victim")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    ref_log, res_log = read_metrics(tmp_path / "reference"), read_metrics(tmp_path / "victim")
    assert [r["step"] for r in res_log] == list(range(1, STEPS + 1))  # lines logged after the checkpoint: dropped
    for key in ("loss", "contrastive_loss", "separation_loss", "beta", "lr", "logit_scale"):
        assert [r[key] for r in res_log] == [r[key] for r in ref_log], key


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, common, sig, code) -> None:
    # One DataLoader worker, and the signal goes to the whole process group (as Ctrl-C or SLURM deliver it).
    run = launch(*common, "--workers", "1", "--set", "logging.checkpoint_every=0", "--out", str(tmp_path),
                 "--name", "run", new_session=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 3, run)
    os.killpg(run.pid, sig)
    out = finish(run)
    assert run.returncode == code, out
    assert f"stopped by {sig.name}" in out and "resume with: alignclip train --resume" in out
    saved = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert saved is not None and str(saved) in out
    step = load_trainer_state(saved)["step"]
    assert 3 <= step < STEPS and saved.name == f"step_{step:06d}"
    assert read_metrics(tmp_path / "run")[-1]["step"] <= step
