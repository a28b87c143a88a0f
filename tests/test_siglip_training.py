"""Training with the sigmoid loss: which loss a run builds, SigLIP's start (t = 10, b = -10), sigmoid + IMSep
against its references, `--recipe posttrain` on a SigLIP checkpoint, and the same under two gloo processes with
DDP's unused-parameter detection off (open_clip #1076)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import alignclip
from alignclip.losses import AlignCLIPLoss, ClipLoss, CompositeLoss, SigLipIMSepLoss, SigLipLoss
from alignclip.training import load_config, train
from alignclip.training.resolve import resolve_config
from alignclip.training.objective import create_loss
from alignclip.training.init_model import create_initial_model
from alignclip.training.metrics import read_metrics
from conftest import MICRO, spawn_train_ranks
from test_losses import ref_separation
from test_sigmoid_loss import open_clip_formula


def _overrides(preset: str, tmp_path, cache, steps: int = 4) -> list[str]:
    return [f"model.preset={preset}", "runtime.device=cpu", "runtime.threads=1", "data.workers=0",
            "data.num_samples=64", "optim.batch_size=16", f"optim.steps={steps}", "optim.warmup_steps=1",
            "logging.progress=false", "logging.tensorboard=false", "logging.log_every=1",
            "logging.checkpoint_every=0", f"loss.semantic_cache_dir={cache}", f"logging.out={tmp_path}"]


def test_the_loss_a_run_builds(micro_preset: str) -> None:
    plain = alignclip.create_model(MICRO, "clip")
    siglip = alignclip.create_model({**MICRO, "logit_bias": -10.0}, "clip")
    cases = [("clip", "auto", plain, ClipLoss), ("clip", "auto", siglip, SigLipLoss),
             ("clip", "sigmoid", plain, SigLipLoss), ("clip", "infonce", siglip, ClipLoss),
             ("alignclip", "auto", plain, AlignCLIPLoss), ("alignclip", "auto", siglip, SigLipIMSepLoss),
             ("alignclip", "sigmoid", plain, SigLipIMSepLoss), ("sharedclip", "sigmoid", None, SigLipLoss)]
    for method, contrastive, model, expected in cases:
        config = load_config(overrides=[f"method={method}", f"loss.contrastive={contrastive}"])
        assert type(create_loss(config, model=model)) is expected, (method, contrastive)
    # Beside distillation / RaFA / a weighted term, the sigmoid loss is the composite's base.
    for method, base in (("clip", SigLipLoss), ("alignclip", SigLipIMSepLoss)):
        config = load_config(overrides=[f"method={method}", "loss.contrastive=sigmoid", "loss.rafa_weight=1.0"])
        composite = create_loss(config, embed_dim=32, model=siglip)
        assert type(composite) is CompositeLoss and type(composite.base) is base
    with pytest.raises(ValueError, match="loss.contrastive"):
        load_config(overrides=["loss.contrastive=softmax"])


def test_a_fresh_sigmoid_model_starts_where_siglip_does(micro_preset: str) -> None:
    model = create_initial_model(load_config(overrides=["method=clip", "loss.contrastive=sigmoid",
                                               f"model.preset={micro_preset}"]))
    assert model.logit_bias is not None and model.logit_bias.item() == -10.0
    assert model.logit_scale.exp().item() == pytest.approx(10.0)
    plain = create_initial_model(load_config(overrides=["method=clip", f"model.preset={micro_preset}"]))
    assert plain.logit_bias is None and plain.logit_scale.exp().item() == pytest.approx(1 / 0.07)


def test_sigmoid_plus_imsep_is_the_two_references_summed() -> None:
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t, b, alpha, beta = 9.0, -4.0, 0.7, 0.4
    loss = SigLipIMSepLoss(AlignCLIPLoss(alpha=0.0, beta=beta, weighting="negatives"), alpha=alpha)
    out = loss(x, y, torch.tensor(t, dtype=torch.float64), logit_bias=torch.tensor(b, dtype=torch.float64),
               semantic_features=s)
    sigmoid = open_clip_formula(x, y, t, b)
    separation = beta * (ref_separation(y, x, y, s, t, "negatives") + ref_separation(x, x, y, s, t, "negatives"))
    assert out["contrastive_loss"].item() == pytest.approx(sigmoid, abs=1e-6)
    assert out["separation_loss"].item() == pytest.approx(separation, abs=1e-6)
    assert out["loss"].item() == pytest.approx(alpha * sigmoid + separation, abs=1e-6)
    assert loss(x, y, torch.tensor(t), semantic_features=s, beta=0.0)["separation_loss"].item() == 0.0
    with pytest.raises(ValueError, match="alpha=0"):
        SigLipIMSepLoss(AlignCLIPLoss())


def test_posttrain_on_a_siglip_trains_sigmoid_and_imsep_and_moves_the_bias(micro_preset, tmp_path) -> None:
    cache = tmp_path / "cache"
    siglip = train(load_config(overrides=_overrides(micro_preset, tmp_path, cache) +
                               ["method=clip", "loss.contrastive=sigmoid", "logging.name=siglip"]))
    first = read_metrics(siglip.run_dir)
    assert "separation_loss" not in first[-1] and first[-1]["logit_bias"] != -10.0
    saved = alignclip.load_checkpoint(siglip.checkpoint)
    assert saved.logit_bias is not None  # the checkpoint records it: auto picks the sigmoid loss from here on

    config = resolve_config(recipe="posttrain", overrides=_overrides(micro_preset, tmp_path, cache)[1:] + [
        f"model.init_from={siglip.run_dir}", "logging.name=post"])
    post = train(config)
    records = read_metrics(post.run_dir)
    assert {"contrastive_loss", "separation_loss", "logit_bias"} <= set(records[-1])
    assert records[-1]["loss"] == pytest.approx(records[-1]["contrastive_loss"] + records[-1]["separation_loss"])
    after = alignclip.load_checkpoint(post.checkpoint).logit_bias.item()
    assert after != pytest.approx(saved.logit_bias.item(), abs=1e-7)  # the bias received gradients


def test_sigmoid_post_training_of_a_clip_adds_a_bias(micro_preset, tmp_path) -> None:
    clip = tmp_path / "clip"
    alignclip.save_checkpoint(alignclip.create_model(MICRO, "clip", seed=0), clip)
    model = create_initial_model(load_config(overrides=["method=clip", "loss.contrastive=sigmoid", f"model.init_from={clip}"]))
    assert model.logit_bias.item() == -10.0 and model.config.logit_bias == -10.0
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07)  # the trained temperature is kept
    assert "logit_bias" in dict(model.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("contrastive", ["auto", "infonce"])
def test_ddp_posttrain_of_a_siglip_has_no_unused_parameter(micro_preset, tmp_path, contrastive) -> None:
    """Two gloo ranks (DDP with find_unused_parameters off, as the trainer wraps it) post-train a SigLIP with
    sigmoid + IMSep (auto) and with CLIP's loss + IMSep, and follow one process holding the whole batch."""
    cache = tmp_path / "cache"
    siglip = alignclip.create_model({**MICRO, "logit_bias": -10.0, "logit_scale": math.log(10)}, "clip", seed=0)
    alignclip.save_checkpoint(siglip, tmp_path / "siglip")
    overrides = _overrides(micro_preset, tmp_path, cache, steps=3)[1:] + [
        f"model.init_from={tmp_path / 'siglip'}", f"loss.contrastive={contrastive}"]
    single = train(resolve_config(recipe="posttrain", overrides=overrides + ["logging.name=single"]))
    ranks = spawn_train_ranks(["--recipe", "posttrain", "--name", "ddp"], overrides)
    outputs = [p.communicate(timeout=300)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], "\n".join(outputs)
    one, two = read_metrics(single.run_dir), read_metrics(tmp_path / "ddp")
    for key in ("loss", "contrastive_loss", "separation_loss", "logit_bias"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-4), key
    if contrastive == "auto":
        assert two[-1]["logit_bias"] != -10.0
    config = json.loads((tmp_path / "ddp" / "checkpoints" / "step_000003" / "config.json").read_text())
    assert config["model"]["logit_bias"] is not None


def test_evidence_script_imports_and_pairs_its_differences_by_seed(tmp_path) -> None:
    """scripts/siglip_experiment.py (docs/siglip.md "Evidence"): its tables are the seeds' mean ± sd and the
    per-seed paired differences, here on made-up metrics documents."""
    import importlib.util
    import statistics
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "siglip_experiment.py"
    spec = importlib.util.spec_from_file_location("siglip_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [*module.SCRATCH, *module.POST]
    l2m = {(n, s): 0.1 * i + 0.01 * s * s for i, n in enumerate(names) for s in range(3)}
    for (name, seed), v in l2m.items():
        folder = tmp_path / f"{name}-s{seed}"
        folder.mkdir()
        results = [{"task": task, "metrics": {key: v for _, t, key in module.COLUMNS if t == task}}
                   for task in ("modality_gap", "retrieval")]
        (folder / "metrics.json").write_text(json.dumps({"results": results}))
    table = module.tables(tmp_path, [0, 1, 2])
    clip = [l2m["clip", s] for s in range(3)]
    assert f"| clip | {statistics.mean(clip):.3f} ± {statistics.stdev(clip):.3f} |" in table
    diffs = [l2m["siglip+imsep", s] - l2m["siglip+sigmoid", s] for s in range(3)]  # a constant: sd 0
    assert f"| siglip+imsep − siglip+sigmoid | {statistics.mean(diffs):+.3f} ± 0.000 |" in table
