"""Post-training (`model.init_from`): IMSep on a two-tower CLIP someone already has, from our checkpoints and from
open_clip-layout `.pt` files; weights only (fresh optimizer and schedule); the checkpoint fixes the architecture."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alignclip
from alignclip.cli import train as cli_train
from alignclip.training import load_config, train
from alignclip.training.checkpoint import load_trainer_state
from alignclip.training.recipes import RECIPES
from alignclip.training.init_model import create_initial_model
from alignclip.training.metrics import read_metrics
from alignclip.training.health import fitted_warmup
from alignclip.training.optim import lr_at
from conftest import MICRO



@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory) -> Path:
    """A two-tower CLIP in our format, standing in for the model a user already trained."""
    return alignclip.save_checkpoint(alignclip.create_model(MICRO, "clip", seed=3),
                                     tmp_path_factory.mktemp("init") / "my_clip")


@pytest.fixture(scope="module")
def open_clip_file(tmp_path_factory) -> Path:
    """Our `clip` state dict as open_clip (and DDP) save it: torch.save of `module.`-prefixed tensors."""
    model = alignclip.create_model("tiny", "clip", seed=4)
    path = tmp_path_factory.mktemp("open_clip") / "epoch_1.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.getbasetemp() / "semantic-cache")  # caption embeddings, shared by the session


def config(tmp_path: Path, cache: str, *overrides: str):
    return load_config(overrides=[
        "data.num_samples=32", "data.workers=0", "optim.batch_size=16", "optim.steps=3", "optim.warmup_steps=2",
        "optim.lr=1e-3", "runtime.threads=1", "runtime.device=cpu", f"logging.out={tmp_path}", "logging.log_every=1",
        "logging.progress=false", "logging.tensorboard=false", "logging.checkpoint_every=0",
        f"loss.semantic_cache_dir={cache}", *overrides])


def test_imsep_post_training_of_a_clip_checkpoint(tmp_path, cache, clip_checkpoint) -> None:
    result = train(config(tmp_path, cache, "method=alignclip", "loss.separation_warmup_steps=0",
                          f"model.init_from={clip_checkpoint}"))
    saved = json.loads((Path(result.checkpoint) / "config.json").read_text())
    imported = json.loads((clip_checkpoint / "config.json").read_text())
    assert saved["architecture"] == "clip" and saved["model"] == imported["model"]  # not the default `tiny` preset
    before, after = load_file(str(clip_checkpoint / "model.safetensors")), load_file(
        str(Path(result.checkpoint) / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "visual.proj" in changed and "text_projection" in changed and len(changed) > len(before) // 2
    # Weights only: the step counter, the warm-up and the optimizer all start from zero.
    records = read_metrics(result.run_dir)
    assert [r["step"] for r in records] == [1, 2, 3] and result.steps == 3 and result.samples == 3 * 16
    warmup = fitted_warmup(2, 3)  # the warm-up, fitted to this 3-step run (training/health.py)
    assert [r["lr"] for r in records] == pytest.approx([lr_at(s, 1e-3, warmup, 3) for s in range(3)])
    assert records[0]["separation_loss"] > 0
    state = load_trainer_state(Path(result.checkpoint))
    assert state["step"] == 3 and all(s["step"] == 3 for s in state["optimizer"]["state"].values())


def test_open_clip_layout_file_and_architecture_checks(tmp_path, cache, open_clip_file) -> None:
    original = torch.load(open_clip_file, weights_only=True)
    model = create_initial_model(config(tmp_path, cache, f"model.init_from={open_clip_file}"))
    assert model.architecture == "clip"  # method alignclip: the checkpoint, not the method, fixes the architecture
    assert all(torch.equal(v, original[f"module.{k}"]) for k, v in model.state_dict().items())

    with pytest.raises(ValueError) as info:  # an explicit contradicting architecture
        train(config(tmp_path / "a", cache, "model.architecture=shared", f"model.init_from={open_clip_file}"))
    message = str(info.value)
    assert "'model.architecture': 'shared' contradicts model.init_from" in message and "\n" not in message
    assert not (tmp_path / "a").exists()  # refused before a run folder was made
    with pytest.raises(ValueError, match="which method 'sharedclip' cannot train .*use method clip or alignclip"):
        create_initial_model(config(tmp_path, cache, "method=sharedclip", f"model.init_from={open_clip_file}"))

    result = train(config(tmp_path / "b", cache, "method=alignclip", "optim.steps=2", "optim.batch_size=8",
                          f"model.init_from={open_clip_file}"))
    assert json.loads((Path(result.checkpoint) / "config.json").read_text())["architecture"] == "clip"


def test_shared_checkpoint_cannot_be_trained_as_two_towers(tmp_path, cache) -> None:
    shared = alignclip.save_checkpoint(alignclip.create_model(MICRO, "shared"), tmp_path / "shared")
    assert create_initial_model(config(tmp_path, cache, "method=sharedclip", f"model.init_from={shared}")).architecture == "shared"
    with pytest.raises(ValueError, match="'shared', which method 'clip' cannot train .*use method sharedclip"):
        create_initial_model(config(tmp_path, cache, "method=clip", f"model.init_from={shared}"))


def test_resuming_a_post_training_run_needs_no_init_file(tmp_path, cache) -> None:
    init = alignclip.save_checkpoint(alignclip.create_model(MICRO, "clip"), tmp_path / "init.safetensors")
    first = train(config(tmp_path, cache, "method=clip", "optim.steps=4", "logging.checkpoint_every=2", "logging.name=r",
                         f"model.init_from={init}"))
    init.unlink()
    resumed = train(config(tmp_path, cache, "method=clip", "optim.steps=6", "logging.name=r", "resume=latest",
                           f"model.init_from={init}"))
    assert (first.steps, resumed.steps, resumed.run_dir) == (4, 6, first.run_dir)


def test_imsep_on_two_towers_from_scratch(tmp_path, cache) -> None:
    (tmp_path / "micro.json").write_text(json.dumps(MICRO))
    result = train(config(tmp_path, cache, "method=alignclip", "model.architecture=clip", "optim.steps=2",
                          f"model.preset={tmp_path / 'micro.json'}"))
    assert json.loads((Path(result.checkpoint) / "config.json").read_text())["architecture"] == "clip"
    assert read_metrics(result.run_dir)[-1]["separation_loss"] > 0


def _parse(argv: list[str]):
    import argparse
    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_cli_flags_and_recipe(tmp_path) -> None:
    config = cli_train.build_config(_parse(["--recipe", "posttrain", "--init-from", "x.pt", "--init-config",
                                            "ViT-B-16", "--set", "optim.lr=1e-4"]))
    assert (config.model.init_from, config.model.init_config) == ("x.pt", "ViT-B-16")
    assert (config.method, config.loss.weighting, config.loss.separation_warmup_steps) == ("alignclip", "negatives", 0)
    assert config.optim.lr == 1e-4 and config.optim.warmup_steps == RECIPES["posttrain"]["optim.warmup_steps"]
    # the recipe sits below --config and the flags: --method clip gives the plain-CLIP control with the same schedule
    config = cli_train.build_config(_parse(["--recipe", "posttrain", "--method", "clip"]))
    assert config.method == "clip" and config.optim.lr == RECIPES["posttrain"]["optim.lr"]
    assert cli_train.build_config(_parse(["--method", "alignclip", "--architecture", "clip"])).architecture == "clip"


@pytest.mark.parametrize("argv, message", [
    (["--init-config", "ViT-B-16"], "'model.init_config': 'ViT-B-16' (only used with model.init_from)"),
    (["--init-from", "x.pt", "--preset", "small"], "'model.preset': 'small' (with model.init_from the checkpoint"),
    (["--method", "sharedclip", "--architecture", "clip"], "'clip', which method 'sharedclip' cannot train"),
    (["--init-from", "no/such/model.pt", "--out", "{tmp}"], "model.init_from: no/such/model.pt not found"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message) -> None:
    assert cli_train.run(_parse([a.format(tmp=tmp_path) for a in argv])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignclip: error: ") and message in err and "\n" not in err
