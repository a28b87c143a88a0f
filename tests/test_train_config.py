"""Training config (YAML/TOML/--set, one-line errors), optimizer groups and schedule, checkpoint bookkeeping, CLI."""
from __future__ import annotations

import argparse
import math

import pytest
import torch

import alignclip
from alignclip.cli import train as cli_train
from alignclip.training.checkpoint import (list_checkpoints, load_trainer_state, load_weights, resolve_resume,
                                          save_training_checkpoint)
from alignclip.training.config import TrainConfig
from alignclip.training.overrides import read_config_file
from alignclip.training.resolve import load_config, save_config
from alignclip.training.rng import rng_state, set_rng_state
from alignclip.training.data import EpochBatchSampler
from alignclip.training.optim import CosineSchedule, create_optimizer, exclude_from_weight_decay, lr_at


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("batch_size=8", "unknown config key 'batch_size' (did you mean 'optim.batch_size'?)"),
    ("method=simclr", "bad value for 'method': 'simclr' (expected one of clip, sharedclip, alignclip)"),
    ("optim.lr=fast", "bad value for 'optim.lr': 'fast' (expected float)"),
    ("optim.batch_size=3.5", "bad value for 'optim.batch_size': 3.5 (expected int)"),
    ("runtime.compile=2", "bad value for 'runtime.compile': 2 (expected bool)"),
    ("loss.weighting=soft", "bad value for 'loss.weighting': 'soft' (expected one of logits, negatives)"),
    ("optim.betas=[0.9]", "bad value for 'optim.betas': [0.9] (expected a list of float, float)"),
    ("optim", "bad override 'optim': expected KEY=VALUE"),
    ("optim=1", "config key 'optim' is a section"),
])
def test_config_errors_are_one_line_and_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cross_field_checks() -> None:
    with pytest.raises(ValueError, match="'optim.batch_size': 10 .*divisible by optim.accum_freq=4"):
        load_config(overrides=["optim.batch_size=10", "optim.accum_freq=4"])
    with pytest.raises(ValueError, match="'model.architecture'"):
        load_config(overrides=["method=sharedclip", "model.architecture=clip"])


def test_set_values_are_parsed_and_typed() -> None:
    config = load_config(overrides=["optim.lr=1e-3", "optim.steps=1e4", "optim.betas=[0.9, 0.95]",
                                    "logging.name=2024", "loss.semantic_model=null", "runtime.compile=yes",
                                    "optim.grad_clip=1"])
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.optim.steps == 10000 and isinstance(config.optim.steps, int)
    assert config.optim.betas == (0.9, 0.95)
    assert config.logging.name == "2024"  # str fields keep the text verbatim
    assert config.loss.semantic_model is None and config.runtime.compile is True
    assert config.optim.grad_clip == 1.0 and isinstance(config.optim.grad_clip, float)


def test_architecture_follows_method_unless_set() -> None:
    assert load_config(overrides=["method=clip"]).architecture == "clip"
    assert load_config(overrides=["method=sharedclip"]).architecture == "shared"
    assert load_config(overrides=["method=alignclip"]).architecture == "shared"


def test_yaml_and_toml_files_then_overrides(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("method: sharedclip\noptim:\n  lr: 1.0e-3\n  batch_size: 32\n"
                                     "loss: {beta: 0.25}\n")
    (tmp_path / "a.toml").write_text('method = "sharedclip"\n[optim]\nlr = 1e-3\nbatch_size = 32\n'
                                     "[loss]\nbeta = 0.25\n")
    for name in ("a.yaml", "a.toml"):
        config = load_config(tmp_path / name, overrides=["optim.batch_size=16"])
        assert (config.method, config.optim.lr, config.optim.batch_size, config.loss.beta) == \
            ("sharedclip", 1e-3, 16, 0.25)
    (tmp_path / "bad.yaml").write_text("optim:\n  lrr: 1\n")
    with pytest.raises(ValueError, match="unknown config key 'optim.lrr'"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path) -> None:
    config = load_config(overrides=["method=clip", "optim.betas=[0.8, 0.9]", "loss.semantic_cache_dir=/x"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(base=read_config_file(tmp_path / "config.yaml"))
    assert again == config


# ------------------------------------------------------------------------------------------------ optimizer


def test_weight_decay_split_follows_open_clip() -> None:
    model = alignclip.create_model("tiny", architecture="clip")
    excluded = {n for n, p in model.named_parameters() if exclude_from_weight_decay(n, p)}
    for name in ("logit_scale", "positional_embedding", "token_embedding.weight", "visual.class_embedding",
                 "visual.positional_embedding", "visual.ln_pre.weight", "ln_final.bias",
                 "transformer.resblocks.0.attn.in_proj_bias"):
        assert name in excluded, name
    for name in ("text_projection", "visual.proj", "visual.conv1.weight",
                 "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.mlp.c_fc.weight"):
        assert name not in excluded, name
    optimizer = create_optimizer(model, 1e-3, 0.2, (0.9, 0.98), 1e-6)
    decays = sorted(g["weight_decay"] for g in optimizer.param_groups)
    assert decays == [0.0, 0.2]


def test_cosine_schedule_with_linear_warmup() -> None:
    lrs = [lr_at(s, 1.0, warmup_steps=4, total_steps=12) for s in range(12)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[8] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lr_at(100, 1.0, 4, 12) == 0.0 and lr_at(100, 1.0, 4, 12, "constant") == 1.0
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=9.0)
    schedule = CosineSchedule(optimizer, 1.0, 4, 12)
    assert schedule.step(1) == 0.5 and optimizer.param_groups[0]["lr"] == 0.5


# ------------------------------------------------------------------------------------------------ data order


def test_batch_sampler_shards_the_global_batch_and_resumes_mid_epoch() -> None:
    whole = list(EpochBatchSampler(40, 8, rank=0, world_size=1, seed=3, epoch=1))
    ranks = [list(EpochBatchSampler(40, 8, rank=r, world_size=2, seed=3, epoch=1)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == whole  # rank 0 then rank 1 == the one-process batch
    assert list(EpochBatchSampler(40, 8, 0, 1, seed=3, epoch=1, start_batch=2)) == whole[2:]
    assert list(EpochBatchSampler(40, 8, 0, 1, seed=3, epoch=2)) != whole
    assert len(whole) == 5 and sorted(i for b in whole for i in b) == list(range(40))


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoints_are_complete_pruned_and_resolvable(tmp_path) -> None:
    model = alignclip.create_model("tiny", architecture="shared")
    run = tmp_path / "runs" / "r1"
    torch.manual_seed(5)
    state = {"step": 0, "rng": rng_state(), "note": "x"}
    for step in (1, 2, 3):
        save_training_checkpoint(run, step, model, {**state, "step": step}, keep_last=2)
    (run / "checkpoints" / ".tmp-step_000004-1").mkdir()  # a write that was interrupted: never "latest"
    names = [p.name for p in list_checkpoints(run / "checkpoints")]
    assert names == ["step_000002", "step_000003"]
    assert resolve_resume("latest", tmp_path / "runs", "r1").name == "step_000003"
    assert resolve_resume("latest", tmp_path / "runs", None).name == "step_000003"
    assert resolve_resume(str(run), tmp_path / "runs", None).name == "step_000003"
    assert resolve_resume(str(run / "checkpoints" / "step_000002"), "unused", None).name == "step_000002"
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        resolve_resume("latest", tmp_path / "runs", "nope")

    loaded = load_trainer_state(run / "checkpoints" / "step_000003")  # weights_only=True
    assert loaded["step"] == 3
    expected = torch.rand(3)
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected)
    other = alignclip.create_model("tiny", architecture="shared", seed=123)
    load_weights(other, run / "checkpoints" / "step_000003")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert alignclip.load_checkpoint(run / "checkpoints" / "step_000003").architecture == "shared"


# ------------------------------------------------------------------------------------------------ CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_train.register(sub)
    return parser.parse_args(["train", *argv])


def test_cli_flags_and_set_build_the_config(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("optim: {lr: 0.002, steps: 7}\n")
    args = _parse(["--config", str(tmp_path / "c.yaml"), "--method", "clip", "--batch-size", "16",
                   "--set", "optim.steps=9", "--out", str(tmp_path)])
    config = cli_train.build_config(args)
    assert (config.method, config.optim.lr, config.optim.batch_size, config.optim.steps) == ("clip", 0.002, 16, 9)
    assert config.logging.out == str(tmp_path) and args.func is cli_train.run


def test_cli_reports_config_errors_in_one_line(capsys) -> None:
    assert cli_train.run(_parse(["--set", "optim.lrr=1"])) == 2
    err = capsys.readouterr().err.strip()
    assert err == "alignclip: error: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"


def test_default_config_is_cpu_friendly() -> None:
    config = TrainConfig()
    assert (config.method, config.model.preset, config.data.train) == ("alignclip", "tiny", "synthetic")
    assert config.runtime.precision == "auto" and config.runtime.device == "auto"
