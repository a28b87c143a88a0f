"""The one CLI error policy (cli/errors.py): one line and exit 2 for bad input, 1 for a failed run, 130 for Ctrl-C,
a traceback for bugs and under ALIGNCLIP_DEBUG=1; `python -m alignclip.cli.train` (torchrun's) behaves the same."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

import alignclip.training
from alignclip.cli.errors import CommandFailed, run_command
from alignclip.cli.main import main
from alignclip.training import NonFiniteLossError


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alignclip: error: "), err
    return err[0]


def test_bad_flag_value_is_one_line_exit_2(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ALIGNCLIP_DEBUG", raising=False)
    assert main(["train", "--set", "optim.lr=fast", "--print-config"]) == 2
    assert _one_line(capsys) == "alignclip: error: bad value for 'optim.lr': 'fast' (expected float)"


def test_debug_shows_the_traceback(monkeypatch) -> None:
    monkeypatch.setenv("ALIGNCLIP_DEBUG", "1")
    with pytest.raises(ValueError, match="bad value for 'optim.lr'"):
        main(["train", "--set", "optim.lr=fast", "--print-config"])


def test_a_failed_run_exits_1(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ALIGNCLIP_DEBUG", raising=False)

    def diverges(config):
        raise NonFiniteLossError("loss is nan at step 3 (lower optim.lr)")

    monkeypatch.setattr(alignclip.training, "train", diverges)
    assert main(["train", "--steps", "3"]) == 1
    assert _one_line(capsys) == "alignclip: error: loss is nan at step 3 (lower optim.lr)"


@pytest.mark.parametrize("error, code, line", [
    (OSError(errno.ENOSPC, "No space left on device", "runs/x/step_000002"), 1,
     "No space left on device: runs/x/step_000002"),
    (CommandFailed("demo: training clip stopped early"), 1, "demo: training clip stopped early"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "pairs.csv"), 2,
     "No such file or directory: pairs.csv"),
    (ValueError("--seeds must be >= 1"), 2, "--seeds must be >= 1"),
])
def test_exit_classes(capsys, monkeypatch, error, code, line) -> None:
    monkeypatch.delenv("ALIGNCLIP_DEBUG", raising=False)

    def fails():
        raise error

    assert run_command(fails) == code
    assert _one_line(capsys) == f"alignclip: error: {line}"


def test_interrupt_is_130_and_bugs_keep_their_traceback(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ALIGNCLIP_DEBUG", raising=False)

    def interrupted():
        raise KeyboardInterrupt

    assert run_command(interrupted) == 130 and capsys.readouterr().err == "alignclip: interrupted\n"
    with pytest.raises(TypeError):
        run_command(lambda: None + 1)
    assert run_command(lambda: None) == 0 and run_command(lambda: 3) == 3


def test_torchrun_entry_point_has_the_same_policy(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ALIGNCLIP_DEBUG"}
    done = subprocess.run([sys.executable, "-m", "alignclip.cli.train", "--set", "optim.lrr=1"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "alignclip: error: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)\n"


def test_train_help_does_not_import_torch() -> None:
    """`alignclip train --help` imports only cli/train.py and the config: well under a second (torch is ~3 s)."""
    code = ("import sys\nfrom alignclip.cli.main import main\ntry:\n    main(['train', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().endswith("False"), done.stdout[-500:] + done.stderr


def test_train_data_help_names_every_source_kind(capsys) -> None:
    from alignclip.cli.main import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    data_help = " ".join(capsys.readouterr().out.split("--data SPEC ")[1].split("--steps")[0].split())
    for kind in ("synthetic", "csv:PATH", "tsv:PATH", "captions:DIR", "wds:PATTERN"):
        assert kind in data_help, data_help
