"""resolve_config: one call, one documented order; the generic override engine; the README table's source."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from alignclip.cli import train as cli_train
from alignclip.training import resolve as config_module
from alignclip.training.config import TrainConfig, reference_table
from alignclip.training.recipes import RECIPES
from alignclip.training.resolve import load_config, resolve_config
from alignclip.training.overrides import all_keys, parse_override, set_value, update, walk


def _fake_run(root, settings: dict, step: int = 2):
    """A run folder as the trainer leaves it (config.yaml + a complete checkpoint) without training one."""
    checkpoint = root / "checkpoints" / f"step_{step:06d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.pt").write_bytes(b"")
    (root / "config.yaml").write_text(yaml.safe_dump(settings))
    return checkpoint


def test_layers_in_the_documented_order(tmp_path) -> None:
    """defaults < recipe < file < flags < --set, worked key by key: each layer wins exactly where it sets a key."""
    (tmp_path / "c.yaml").write_text("optim: {lr: 0.002, warmup_steps: 7, epochs: 3}\nloss: {beta: 0.25}\n")
    config = resolve_config(tmp_path / "c.yaml", "posttrain", {"optim.warmup_steps": 5, "optim.epochs": 4},
                            ["optim.epochs=6"])
    assert config.loss.weighting == RECIPES["posttrain"]["loss.weighting"] == "negatives"  # recipe over default
    assert config.loss.beta == 0.25  # file over recipe (0.5)
    assert config.optim.lr == 0.002  # file over recipe (2e-4)
    assert config.optim.warmup_steps == 5  # flag over file (7) over recipe (10)
    assert config.optim.epochs == 6  # --set over flag over file
    assert config.optim.batch_size == TrainConfig().optim.batch_size and config.resume is None
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        resolve_config(recipe="nope")


def test_resume_starts_from_the_saved_run_and_returns_the_checkpoint(tmp_path) -> None:
    run = tmp_path / "runs" / "r"
    checkpoint = _fake_run(run, {"method": "clip", "optim": {"lr": 0.01, "steps": 20}, "loss": {"beta": 0.1},
                                 "resume_allow_changes": True})
    config = resolve_config(flags={"optim.steps": 40, "logging.out": str(tmp_path / "runs")},
                            overrides=["loss.beta=0.2"], resume="latest")
    assert config.resume == str(checkpoint)  # concrete: resolve_resume(checkpoint) is then the path itself
    assert (config.method, config.optim.lr) == ("clip", 0.01)  # the saved run's settings...
    assert (config.optim.steps, config.loss.beta) == (40, 0.2)  # ...below what is given now
    assert config.resume_allow_changes is False  # a permission for one resume only
    assert resolve_config(resume=str(run)).resume == str(checkpoint)  # a run folder
    assert resolve_config(overrides=[f"resume={run}"]).optim.lr == 0.01  # `resume` set by a layer: same path


def test_bad_saved_config_is_named(tmp_path) -> None:
    run = tmp_path / "r"
    _fake_run(run, {"optim": {"lr": -1.0}})
    with pytest.raises(ValueError, match=rf"^{run / 'config.yaml'}: bad value for 'optim.lr': -1.0"):
        resolve_config(resume=str(run))
    (run / "config.yaml").write_text("")
    with pytest.raises(ValueError, match="empty config of the resumed run"):
        resolve_config(resume=str(run))


def test_the_cli_resolves_once(tmp_path, monkeypatch) -> None:
    run = tmp_path / "r"
    _fake_run(run, {"method": "clip"})
    calls = []
    resolve = config_module.resolve_config
    monkeypatch.setattr(config_module, "resolve_config", lambda *a, **k: calls.append(a) or resolve(*a, **k))
    monkeypatch.setattr(config_module, "load_config", lambda *a, **k: pytest.fail("the CLI calls load_config"))
    config = cli_train.build_config(_parse(["--resume", str(run), "--steps", "3"]))
    assert len(calls) == 1 and config.method == "clip" and config.optim.steps == 3


def _parse(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


# ------------------------------------------------------------------------------------------------ overrides


@dataclass
class _Inner:
    size: int = 1
    mode: Literal["a", "b"] = "a"


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    rate: float | None = None


def test_override_engine_is_generic_over_dataclasses() -> None:
    """No TrainConfig knowledge: the same typing and errors on any dataclass tree."""
    obj = _Outer()
    update(obj, {"inner": {"size": "1e3"}, "rate": 2})
    set_value(obj, *parse_override("inner.mode=b"), from_text=True)
    assert (obj.inner.size, obj.inner.mode, obj.rate) == (1000, "b", 2.0) and isinstance(obj.rate, float)
    assert all_keys(_Outer) == ["inner.size", "inner.mode", "rate"]
    with pytest.raises(ValueError, match=r"unknown config key 'inner.sise' \(did you mean 'inner.size'\?\)"):
        set_value(obj, "inner.sise", 2)
    with pytest.raises(ValueError, match=r"bad value for 'inner.mode': 'c' \(expected one of a, b\)"):
        set_value(obj, "inner.mode", "c")


def test_every_key_has_help_and_the_table_reads_it() -> None:
    leaves = walk(TrainConfig)
    assert [key for key, f in leaves if not f.metadata.get("help")] == []
    fields, recipes = reference_table().split("\n\n")
    rows = fields.splitlines()[2:]
    assert len(rows) == len(leaves)
    # every recipe's settings, each one a real key
    assert [line.split("`")[1] for line in recipes.splitlines()[2:]] == list(RECIPES)
    for line in recipes.splitlines()[2:]:
        for setting in line.split("|")[2].split(", "):
            key, _, value = setting.strip(" `").partition("=")
            assert key in dict(leaves) and str(RECIPES[line.split("`")[1]][key]) == value
    lr = dict(walk(TrainConfig))["optim.lr"]
    assert f"| `optim.lr` | `0.0005` | {lr.metadata['help']} |" in rows
    assert dataclasses.fields(TrainConfig)[0].metadata["help"] == "clip | sharedclip | alignclip"
    assert "| `method` | `alignclip` | clip \\| sharedclip \\| alignclip |" in rows  # Markdown-escaped pipes


def test_a_bad_value_names_the_file_or_recipe_it_came_from(tmp_path) -> None:
    (tmp_path / "run.yaml").write_text("optim:\n  lr: fast\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'run.yaml'}: bad value for 'optim.lr'"):
        resolve_config(file=tmp_path / "run.yaml")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'run.yaml'}: bad value for 'optim.lr'"):
        load_config(tmp_path / "run.yaml")
    with pytest.raises(ValueError, match=r"^bad value for 'optim.lr'"):  # a flag: the message alone
        resolve_config(flags={"optim.lr": "fast"})
