"""The trainer's reliability: exact resume with DataLoader workers, no non-finite config values or checkpoints,
one-line errors for bad files and full disks, no debris, guarded resumes, a DDP timeout, distinct exit codes.
One test per defect; each failed before its fix. (Longer than most test files: one fixture set, many small tests.)"""
from __future__ import annotations

import errno
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from alignclip import load_checkpoint
from alignclip.cli.train import main
from alignclip.training import NonFiniteLossError, load_config
from alignclip.training import checkpoint as ckpt
from alignclip.rundir import latest_checkpoint, list_checkpoints
from alignclip.training.checkpoint import clean_debris, save_training_checkpoint
from alignclip.training.distributed import DistInfo
from alignclip.training.trainer import Trainer
from conftest import spawn_train_ranks



@pytest.fixture(scope="module")
def preset(micro_preset) -> str:
    return micro_preset


def micro_args(preset: str, out: Path, *extra: str) -> list[str]:
    """A 2-step CLIP run on 32 synthetic samples: seconds, no sentence encoder."""
    return ["--method", "clip", "--preset", preset, "--device", "cpu", "--workers", "0", "--batch-size", "8",
            "--steps", "2", "--out", str(out), "--set", "data.num_samples=32", "--set", "optim.warmup_steps=1",
            "--set", "runtime.threads=1", "--set", "logging.progress=false", "--set", "logging.tensorboard=false",
            "--set", "logging.checkpoint_every=1", "--set", "logging.keep_last=0", *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, preset) -> Path:
    out = tmp_path_factory.mktemp("finished")
    assert main(micro_args(preset, out, "--name", "run")) == 0
    return out / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run, for tests that damage or extend it."""
    return Path(shutil.copytree(finished_run, tmp_path / "runs" / "run"))


ERROR_PREFIXES = ("alignclip: error: ", "error: ")  # cli/errors.py's prefix; the bare one until cli/train.py uses it


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR_PREFIXES), err  # one line, no traceback
    return err[0].removeprefix("alignclip: ")


# ---------------------------------------------------------------------------------------- 1: resume with workers

def launch(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "alignclip.cli.train", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(predicate, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"the run ended before the awaited moment:\n{process.stdout.read()}"
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the training run")
        time.sleep(0.01)


def _noise_pictures(folder: Path, count: int = 96) -> Path:
    """24x20 noise pictures + a TSV: every random crop changes the pixels the model sees."""
    rng = np.random.default_rng(0)
    rows = ["filepath\ttitle"]
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png\tpicture number {i}")
    (folder / "data.tsv").write_text("\n".join(rows) + "\n")
    return folder / "data.tsv"


def _interrupted_equals_uninterrupted(tmp_path: Path, preset: str, data: str, extra_workers: tuple[str, ...]) -> None:
    """SIGTERM mid-run + --resume, with 2 workers, ends bit-identical to the uninterrupted 2-worker run (and to
    runs with `extra_workers`)."""
    steps = 30  # 12 steps per epoch: the runs cross epoch boundaries
    args = [*micro_args(preset, tmp_path / "runs", "--data", data, "--steps", str(steps),
                        "--set", "logging.checkpoint_every=0", "--set", "logging.log_every=1")]

    def final(name: str) -> dict[str, torch.Tensor]:
        return load_file(str(tmp_path / "runs" / name / "checkpoints" / f"step_{steps:06d}" / "model.safetensors"))

    for name, workers in (("reference", "2"), *((f"workers-{w}", w) for w in extra_workers)):
        run = launch(*args, "--workers", workers, "--name", name)
        assert run.wait(timeout=180) == 0, run.stdout.read()
    victim = launch(*args, "--workers", "2", "--name", "victim")
    metrics = tmp_path / "runs" / "victim" / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 5, victim)
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(timeout=60) == 143, victim.stdout.read()
    stopped = latest_checkpoint(tmp_path / "runs" / "victim" / "checkpoints")
    assert stopped is not None and 5 <= int(stopped.name[5:]) < steps
    resumed = launch("--resume", str(tmp_path / "runs" / "victim"))
    assert resumed.wait(timeout=180) == 0, resumed.stdout.read()
    reference = final("reference")
    for name in ("victim", *(f"workers-{w}" for w in extra_workers)):
        got = final(name)
        assert all(torch.equal(reference[k], got[k]) for k in reference), name


@pytest.mark.slow
def test_resume_with_workers_on_csv_data_is_exact(tmp_path, preset) -> None:
    _interrupted_equals_uninterrupted(tmp_path, preset, f"tsv:{_noise_pictures(tmp_path)}", extra_workers=("0",))


@pytest.mark.slow
def test_resume_with_workers_on_shards_is_exact(tmp_path, preset) -> None:
    """Shards: crops are a function of (seed, epoch, shard#key) and each worker's shard order and shuffle buffer of
    (seed, epoch, rank, worker), so a resume with the same worker count sees the same batches (another worker count
    splits the shards differently, as in webdataset and open_clip)."""
    from alignclip.cli.main import main as cli
    assert cli(["data", "pack", f"tsv:{_noise_pictures(tmp_path)}", "--out", str(tmp_path / "shards"),
                "--samples-per-shard", "24"]) == 0
    _interrupted_equals_uninterrupted(tmp_path, preset, f"wds:{tmp_path / 'shards'}/shard-{{000000..000003}}.tar",
                                      extra_workers=())


def test_sample_seed_is_stable_and_drives_the_crop() -> None:
    from alignclip.data.transforms import TrainTransform, sample_seed
    # Pinned: the value must not change between runs or versions (a resume depends on it), nor between processes
    # whose str hashing is salted differently (DataLoader workers, a resumed run).
    assert sample_seed(0, 1, 2) == 6144801338459264829
    other = subprocess.run([sys.executable, "-c", "from alignclip.data.transforms import sample_seed; "
                            "print(sample_seed(0, 1, 2), sample_seed('a', 3))"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"}, check=True).stdout.split()
    assert other == [str(sample_seed(0, 1, 2)), str(sample_seed("a", 3))]
    assert len({sample_seed(0, 0, i) for i in range(1000)}) == 1000 and sample_seed("0") != sample_seed(0)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    transform = TrainTransform(16)
    assert torch.equal(transform(image, seed=7), transform(image, seed=7))
    assert not torch.equal(transform(image, seed=7), transform(image, seed=8))


# ---------------------------------------------------------------------------------------- 2: non-finite values

@pytest.mark.parametrize("args, key", [(["--lr", "inf"], "optim.lr"), (["--set", "optim.lr=nan"], "optim.lr"),
                                       (["--set", "optim.betas=[0.9, .nan]"], "optim.betas"),
                                       (["--set", "loss.beta=-.inf"], "loss.beta")])
def test_non_finite_config_values_are_rejected(capsys, args, key) -> None:
    assert main([*args, "--print-config"]) == 2
    line = error_line(capsys)
    assert f"'{key}'" in line and "finite" in line


def test_non_finite_weights_are_never_checkpointed(tmp_path, preset) -> None:
    config = load_config(overrides=[f"model.preset={preset}", "method=clip", "data.num_samples=32", "data.workers=0",
                                    "optim.batch_size=8", "optim.steps=2", "runtime.device=cpu",
                                    f"logging.out={tmp_path}", "logging.progress=false", "logging.tensorboard=false"])
    trainer = Trainer(config, DistInfo(), torch.device("cpu"))
    good = trainer.save()
    trainer.step = 1
    with torch.no_grad():
        next(trainer.model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=f"not finite.*last good one is {good}"):
        trainer.save()
    assert list_checkpoints(trainer.run_dir / "checkpoints") == [good]


def test_a_checkpoint_with_non_finite_weights_is_not_resumed(run_copy, capsys) -> None:
    from safetensors.torch import save_file
    weights = latest_checkpoint(run_copy / "checkpoints") / "model.safetensors"
    tensors = load_file(str(weights))
    next(iter(tensors.values())).view(-1)[0] = float("inf")
    save_file(tensors, str(weights))  # as a version without the check could have written it
    assert main(["--resume", str(run_copy), "--steps", "3"]) == 2
    assert "weights are not finite" in error_line(capsys)


# ---------------------------------------------------------------------------------------- 4: one-line errors

def test_unwritable_run_folder(tmp_path, preset, capsys, monkeypatch) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root ignores the mode: refuse the way the kernel would for anyone else
        real_mkdir = pathlib.Path.mkdir

        def mkdir(self, *a, **k):
            if self.is_relative_to(out):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_mkdir(self, *a, **k)
        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    assert main(micro_args(preset, out)) == 2
    assert "cannot create a run folder under" in error_line(capsys) and not any(out.iterdir())


def test_corrupt_checkpoint_files_on_resume(run_copy, capsys) -> None:
    step = latest_checkpoint(run_copy / "checkpoints")
    weights = step / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["--resume", str(run_copy)]) == 2
    assert "model.safetensors: unreadable safetensors file" in error_line(capsys)

    marker = run_copy / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    torch.save({"step": 2, "evil": Payload()}, step / "trainer_state.pt")
    assert main(["--resume", str(run_copy)]) == 2
    assert "holds pickled objects, which are never loaded" in error_line(capsys) and not marker.exists()
    (step / "trainer_state.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main(["--resume", str(run_copy)]) == 2
    assert "trainer_state.pt: unreadable trainer state" in error_line(capsys)


@pytest.mark.parametrize("text", ["[1, 2]\n", "null\n", "model: null\n"])
def test_bad_config_yaml_of_a_resumed_run(run_copy, capsys, text) -> None:
    (run_copy / "config.yaml").write_text(text)
    assert main(["--resume", str(run_copy)]) == 2
    assert error_line(capsys).startswith(f"error: {run_copy / 'config.yaml'}: ")


def test_full_disk_is_named_and_leaves_no_temporaries(tmp_path, preset, capsys, monkeypatch) -> None:
    def full(model, directory):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ckpt, "_write_weights", full)
    assert main(micro_args(preset, tmp_path, "--name", "run")) == 1
    line = error_line(capsys)
    assert f"no space left on device writing {tmp_path / 'run' / 'checkpoints' / 'step_000001'}" in line
    assert not any((tmp_path / "run").glob("checkpoints/.tmp-*"))


@pytest.mark.skipif(not shutil.which("mount") or os.geteuid() != 0, reason="needs root to mount a tiny tmpfs")
@pytest.mark.parametrize("room", [0, 1], ids=["weights", "trainer-state"])
def test_full_disk_on_a_real_tiny_filesystem(tmp_path, preset, finished_run, capsys, room) -> None:
    """A real ENOSPC: the weights do not fit, or they do and torch.save of the trainer state hits it."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    weights = latest_checkpoint(finished_run / "checkpoints") / "model.safetensors"
    size_kb = 64 + room * (weights.stat().st_size // 1024 + 512)  # room for the weights, not the optimizer state
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        assert main(micro_args(preset, mount, "--name", "run")) == 1
        line = error_line(capsys)
        assert f"no space left on device writing {mount / 'run' / 'checkpoints' / 'step_000001'}" in line
        assert not any(mount.glob("run/checkpoints/.tmp-*"))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ---------------------------------------------------------------------------------------- 5: debris

def test_stale_temporaries_and_half_deleted_checkpoints_are_cleaned(run_copy) -> None:
    root = run_copy / "checkpoints"
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        for name in (f".tmp-step_000007-{dead.pid}", f".old-step_000001-{dead.pid}", f".tmp-step_000008-{live.pid}"):
            (root / name).mkdir()
            (root / name / "model.safetensors").write_bytes(b"x" * 1000)
        (root / "step_000000").mkdir()  # what an interrupted rmtree of the old code left: a config and no state
        (root / "step_000000" / "config.json").write_text("{}")
        assert main(["--resume", str(run_copy), "--steps", "3"]) == 0
        assert sorted(p.name for p in root.iterdir()) == [f".tmp-step_000008-{live.pid}", "step_000001",
                                                          "step_000002", "step_000003"]
    finally:
        live.kill()
        live.wait()


def test_pruning_never_leaves_a_half_deleted_checkpoint(run_copy, monkeypatch) -> None:
    root = run_copy / "checkpoints"

    def killed_midway(path, ignore_errors=False):  # the process dies after deleting one file
        next(Path(path).iterdir()).unlink()
        raise KeyboardInterrupt
    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_midway)
    state = ckpt.load_trainer_state(root / "step_000002")
    with pytest.raises(KeyboardInterrupt):
        save_training_checkpoint(run_copy, 3, load_checkpoint(root / "step_000002"), state, keep_last=1)
    monkeypatch.undo()
    complete = {"model.safetensors", "config.json", "trainer_state.pt"}
    assert all({f.name for f in p.iterdir()} == complete for p in root.glob("step_*"))
    clean_debris(root)
    assert sorted(p.name for p in root.iterdir()) == ["step_000002", "step_000003"]


def test_a_failed_start_leaves_no_run_folder(tmp_path, preset, capsys) -> None:
    assert main(micro_args(preset, tmp_path, "--data", f"csv:{tmp_path / 'missing.csv'}")) == 2
    error_line(capsys)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------- 6: guarded resume

def test_resume_with_other_settings_is_an_error_unless_allowed(run_copy, capsys) -> None:
    before = (run_copy / "config.yaml").read_text()
    assert main(["--resume", str(run_copy), "--method", "alignclip"]) == 2
    line = error_line(capsys)
    assert "method: 'clip' -> 'alignclip'" in line and "model.architecture: 'clip' -> 'shared'" in line
    assert "resume_allow_changes=true" in line and (run_copy / "config.yaml").read_text() == before
    assert main(["--resume", str(run_copy), "--steps", "3", "--set", "data.num_samples=40"]) == 2
    assert "data.num_samples: 32 -> 40" in error_line(capsys)
    assert main(["--resume", str(run_copy), "--steps", "3", "--set", "data.num_samples=40",
                 "--set", "resume_allow_changes=true"]) == 0
    assert main(["--resume", str(run_copy), "--steps", "4"]) == 0  # the permission was for that resume only...
    assert main(["--resume", str(run_copy), "--steps", "5", "--set", "data.num_samples=48"]) == 2  # ...not this
    assert "data.num_samples: 40 -> 48" in error_line(capsys)


# ---------------------------------------------------------------------------------------- 7: DDP timeout

@pytest.mark.slow
@pytest.mark.parametrize("when", ["joining", "training"])
def test_a_stalled_rank_times_out_with_a_clear_message(tmp_path, preset, when) -> None:
    ranks = spawn_train_ranks(micro_args(preset, tmp_path, "--name", "ddp", "--steps", "100000", "--set",
                                         "runtime.dist_timeout_s=3", "--set", "logging.checkpoint_every=0", "--set",
                                         "logging.log_every=1"))
    try:
        if when == "training":
            metrics = tmp_path / "ddp" / "metrics.jsonl"
            wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, ranks[0])
        ranks[1].send_signal(signal.SIGSTOP)
        start = time.monotonic()
        out, _ = ranks[0].communicate(timeout=60)
        assert ranks[0].returncode == 1, out
        assert time.monotonic() - start < 30
        expected = "did not all join within" if when == "joining" else "did not answer within"
        assert f"{expected} runtime.dist_timeout_s=3s" in out and "Traceback" not in out, out
    finally:
        for p in ranks:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------------------- 8: smaller ones

def test_checkpoint_files_get_the_usual_mode(finished_run, tmp_path) -> None:
    reference = tmp_path / "plain"
    reference.write_text("x")  # what open() gives under this umask
    files = [p for p in (finished_run / "checkpoints" / "step_000002").iterdir()]
    assert {p.name for p in files} >= {"model.safetensors", "config.json", "trainer_state.pt"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(reference.stat().st_mode & 0o777)}


def test_huge_seed_is_named(capsys) -> None:
    assert main(["--seed", str(2**70), "--print-config"]) == 2
    assert "'runtime.seed'" in error_line(capsys)
