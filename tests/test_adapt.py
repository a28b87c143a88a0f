"""Locked towers and LoRA (models/adapt.py): merged LoRA equals the unmerged forward, locked weights stay bit for
bit, checkpoints hold plain weights, one-line errors; and exact resume with a teacher, LoRA and locks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alignclip
from alignclip.models.adapt import adapt_model, merged, parameter_counts
from alignclip.training import load_config, train
from alignclip.training.adapt_config import AdaptSection
from conftest import MICRO


def _inputs(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(1, 49407, (n, 16), generator=g)


def _lora_model(rank: int = 4, **kwargs) -> torch.nn.Module:
    model = alignclip.create_model(MICRO, "clip", seed=1)
    adapt_model(model, AdaptSection(lora_rank=rank, **kwargs))
    with torch.no_grad():  # B starts at zero (the adapter is a no-op): give it a value so the merge is tested
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    return model.eval()


def test_merged_lora_equals_the_unmerged_forward(tmp_path) -> None:
    model = _lora_model()
    images, tokens = _inputs()
    plain = merged(model)
    with torch.no_grad():
        a, b = model(images, tokens), plain(images, tokens)
    assert set(plain.state_dict()) == set(alignclip.create_model(MICRO, "clip").state_dict())
    for key in ("image_features", "text_features"):
        assert (a[key] - b[key]).abs().max().item() < 1e-6, key
    # a saved checkpoint holds the merged weights under the plain names: load_checkpoint reads it as any other
    reloaded = alignclip.load_checkpoint(alignclip.save_checkpoint(model, tmp_path / "lora"))
    with torch.no_grad():
        c = reloaded.eval()(images, tokens)
    assert (a["image_features"] - c["image_features"]).abs().max().item() < 1e-6
    # the adapters moved the model: the test would pass vacuously otherwise
    base = alignclip.create_model(MICRO, "clip", seed=1).eval()
    with torch.no_grad():
        assert (base(images, tokens)["image_features"] - a["image_features"]).abs().max().item() > 1e-3


def test_lora_trains_adapters_and_the_temperature_only() -> None:
    model = _lora_model()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "logit_scale" in trainable and all("lora_" in n for n in trainable if n != "logit_scale")
    assert any("attn.lora_A" in n for n in trainable)  # the packed q/k/v weight (a raw parameter) is adapted too
    got, total = parameter_counts(model)
    # rank 4 on a 32-wide block: in_proj (32->96), out_proj (32->32), c_fc (32->128), c_proj (128->32)
    per_block = 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    assert got == 2 * per_block + 1 and total > got


@pytest.mark.parametrize("targets, message", [
    ("mlp.c_fc,nope", "adapt.lora_targets: 'nope' matches no module or parameter of the model"),
    ("attn", "'attn' selects visual.transformer.resblocks.0.attn, a Attention, not a Linear layer"),
])
def test_lora_targets_that_match_nothing_are_one_line_errors(targets: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        adapt_model(alignclip.create_model(MICRO, "clip"), AdaptSection(lora_rank=2, lora_targets=targets))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_lora_dropout_needs_linear_targets() -> None:
    with pytest.raises(ValueError, match="peft's LoRA on a raw weight .*in_proj_weight.* has no dropout"):
        adapt_model(alignclip.create_model(MICRO, "clip"), AdaptSection(lora_rank=2, lora_dropout=0.1))
    model = alignclip.create_model(MICRO, "clip")
    adapt_model(model, AdaptSection(lora_rank=2, lora_dropout=0.1, lora_targets="mlp.c_fc,attn.out_proj"))
    assert any("c_fc.lora_A" in n for n, _ in model.named_parameters())


def test_locking_a_shared_model_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError) as info:
        adapt_model(alignclip.create_model(MICRO, "shared"), AdaptSection(lock_image=True))
    assert "adapt.lock_image: a shared model has one transformer" in str(info.value) and "\n" not in str(info.value)


def test_lock_groups_follow_open_clip() -> None:
    model = alignclip.create_model(MICRO, "clip")
    adapt_model(model, AdaptSection(lock_image=True, lock_image_unlocked_groups=2, lock_image_freeze_norm=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("visual.")}
    # MICRO's one image block: groups are [stem], [block 0 + ln_post], [proj]; the last two unlocked, norms frozen
    assert "visual.proj" in trainable and "visual.transformer.resblocks.0.attn.in_proj_weight" in trainable
    assert not any(".ln_" in n for n in trainable) and "visual.conv1.weight" not in trainable
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("visual."))


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    return alignclip.save_checkpoint(alignclip.create_model(MICRO, "clip", seed=3),
                                     tmp_path_factory.mktemp("init") / "base")


def config(tmp_path: Path, init: Path, *overrides: str):
    cache = tmp_path.parent / "semantic-cache"
    return load_config(overrides=[
        "data.num_samples=32", "data.workers=0", "optim.batch_size=8", "optim.steps=4", "optim.warmup_steps=1",
        "optim.lr=1e-3", "runtime.threads=1", "runtime.device=cpu", f"logging.out={tmp_path}", "logging.log_every=1",
        "logging.progress=false", "logging.tensorboard=false", "logging.checkpoint_every=2", "logging.keep_last=0",
        f"loss.semantic_cache_dir={cache}", f"model.init_from={init}", "logging.name=run", *overrides])


def test_a_locked_tower_is_bit_identical_after_training(tmp_path, init) -> None:
    result = train(config(tmp_path, init, "method=clip", "adapt.lock_image=true"))
    before, after = load_file(str(init / "model.safetensors")), load_file(str(Path(result.checkpoint) /
                                                                            "model.safetensors"))
    image = [k for k in before if k.startswith("visual.")]
    assert image and all(torch.equal(before[k], after[k]) for k in image)
    assert not torch.equal(before["text_projection"], after["text_projection"])  # the text tower did train


RESUMED = {
    "distill+lora": ("method=alignclip", "loss.distill_weight=1", "loss.separation_warmup_steps=0",
                     "adapt.lora_rank=4"),
    "rafa+distill+lock": ("method=clip", "loss.alpha=0", "loss.distill_weight=1", "loss.rafa_weight=1",
                          "adapt.lock_image=true", "adapt.lock_image_unlocked_groups=1"),
}


@pytest.mark.parametrize("name", sorted(RESUMED))
def test_resume_with_teacher_lora_and_locks_is_exact(tmp_path, init, name) -> None:
    settings = RESUMED[name]
    result = train(config(tmp_path, init, *settings))
    checkpoints = Path(result.run_dir) / "checkpoints"
    assert json.loads((checkpoints / "step_000004" / "config.json").read_text())["architecture"] == "clip"
    expected = load_file(str(checkpoints / "step_000004" / "model.safetensors"))
    assert set(expected) == set(load_file(str(init / "model.safetensors")))  # plain merged weights
    shutil.rmtree(checkpoints / "step_000004")
    resumed = train(config(tmp_path, init, *settings, f"resume={checkpoints / 'step_000002'}"))
    assert resumed.steps == 4
    got = load_file(str(checkpoints / "step_000004" / "model.safetensors"))
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_a_changed_or_different_teacher_is_refused(tmp_path) -> None:
    init = alignclip.save_checkpoint(alignclip.create_model(MICRO, "clip", seed=3), tmp_path / "teacher")
    first = train(config(tmp_path, init, "method=clip", "loss.distill_weight=1", "optim.steps=2"))
    step = Path(first.run_dir) / "checkpoints" / "step_000002"
    alignclip.save_checkpoint(alignclip.create_model(MICRO, "clip", seed=4), init)  # same shapes, new weights
    with pytest.raises(ValueError) as info:
        train(config(tmp_path, init, "method=clip", "loss.distill_weight=1", "optim.steps=3", f"resume={step}"))
    assert "cannot resume: the teacher model.init_from" in str(info.value) and "changed since the run started" in \
        str(info.value) and "\n" not in str(info.value)
    wider = {**MICRO, "embed_dim": 16}
    alignclip.save_checkpoint(alignclip.create_model(wider, "clip", seed=4), init)
    with pytest.raises(ValueError) as info:
        train(config(tmp_path, init, "method=clip", "loss.distill_weight=1", "optim.steps=3", f"resume={step}",
                     "resume_allow_changes=true"))
    message = str(info.value)
    assert "loss.distill_weight: the teacher" in message and "embed 16" in message and "embed 32" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="distillation needs model.init_from"):
        load_config(overrides=["loss.distill_weight=1"])


def test_cli_flags_and_recipes() -> None:
    import argparse

    from alignclip.cli import train as cli_train
    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())

    def build(*argv: str):
        return cli_train.build_config(parser.parse_args(["train", *argv]))
    c = build("--recipe", "posttrain-keep", "--init-from", "x.pt", "--lora-rank", "4", "--lock-image")
    assert (c.method, c.loss.weighting, c.loss.distill_weight) == ("alignclip", "negatives", 1.0)
    assert (c.adapt.lora_rank, c.adapt.lock_image, c.adapt.lock_text) == (4, True, False)
    c = build("--lock-text", "--lock-text-unlocked-layers", "2", "--lock-text-freeze-layer-norm",
              "--lock-image", "--lock-image-unlocked-groups", "1", "--lock-image-freeze-norm")
    a = c.adapt
    assert (a.lock_text_unlocked_layers, a.lock_text_freeze_layer_norm) == (2, True)
    assert (a.lock_image_unlocked_groups, a.lock_image_freeze_norm) == (1, True)
    c = build("--recipe", "clip-refine", "--init-from", "x.pt")
    assert (c.method, c.loss.alpha, c.loss.rafa_weight, c.loss.distill_temperature) == ("clip", 0.0, 1.0, 1.0)


def test_a_run_saved_before_the_adapt_section_still_resumes() -> None:
    from alignclip.training.config import TrainConfig, changed_settings
    saved = TrainConfig().to_dict()
    del saved["adapt"]  # what an older version wrote
    assert changed_settings(saved, TrainConfig()) == []
    assert changed_settings(saved, load_config(overrides=["adapt.lora_rank=2"])) == ["adapt.lora_rank: 0 -> 2"]
