"""The held-out guard: evaluations at the start, every N steps and at the end under heldout/..., checkpoints/best
by a metric whose direction is known, a best value that survives a resume, training untouched by the evaluations,
the in-batch-vs-held-out warning on the issue's own numbers, and one-line errors for settings without held-out data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignclip.evaluation.result import EvalResult
from alignclip.training import train
from alignclip.training.resolve import from_dict, resolve_config
from alignclip.training.heldout import HeldoutGuard, heldout_record, known_metrics
from alignclip.training.metrics import read_metrics


def settings(micro_preset: str, out: Path, name: str, steps: int, **eval_section) -> dict:
    return {"method": "clip", "model": {"preset": micro_preset},
            "data": {"num_samples": 64, "workers": 0},
            "optim": {"steps": steps, "batch_size": 16, "lr": 2e-3, "warmup_steps": 1},
            "runtime": {"device": "cpu", "threads": 1},
            "logging": {"out": str(out), "name": name, "progress": False, "tensorboard": False,
                        "checkpoint_every": 2, "keep_last": 0, "log_every": 1},
            "eval": eval_section}


def heldout_lines(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "heldout/l2m" in r]


@pytest.mark.slow  # about 10 s: two runs and three evaluations
def test_evaluates_keeps_best_and_leaves_training_untouched(micro_preset, tmp_path, capsys):
    guarded = train(settings(micro_preset, tmp_path, "guarded", 4, data="synthetic", every=2, num_samples=24,
                             keep_best="heldout/l2m"))
    plain = train(settings(micro_preset, tmp_path, "plain", 4))
    run = Path(guarded.run_dir)
    records = heldout_lines(run)
    assert [r["step"] for r in records] == [0, 2, 4]
    assert set(records[0]) - {"step"} <= set(known_metrics("synthetic"))
    assert "heldout/zeroshot/top1" in records[0] and "heldout/i2t_recall@1" in records[0]
    best = json.loads((run / "checkpoints" / "best" / "config.json").read_text())["best"]
    values = {r["step"]: r["heldout/l2m"] for r in records}
    assert best["value"] == min(values.values()) and values[best["step"]] == best["value"]
    # The evaluations restore every RNG: the weights end bit-identical to a run without them.
    a = load_file(str(run / "checkpoints" / "step_000004" / "model.safetensors"))
    b = load_file(str(Path(plain.run_dir) / "checkpoints" / "step_000004" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = capsys.readouterr().out
    assert f"l2m: held-out {values[0]:.4f} -> {values[4]:.4f}, in-batch " in out


def test_best_so_far_survives_resume(micro_preset, tmp_path):
    # a best-so-far lost in the resume would be overwritten by the first evaluation after it, better or not
    first = train(settings(micro_preset, tmp_path, "r", 2, data="synthetic", every=1, num_samples=24,
                           keep_best="heldout/paired_cosine"))
    run = Path(first.run_dir)
    before = json.loads((run / "checkpoints" / "best" / "config.json").read_text())["best"]
    config = resolve_config(flags={"optim.steps": 4}, resume=str(run))
    train(config)
    records = heldout_lines(run)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]  # one run's log: nothing evaluated twice
    best = json.loads((run / "checkpoints" / "best" / "config.json").read_text())["best"]
    assert best["value"] == max(r["heldout/paired_cosine"] for r in records)
    assert best["value"] >= before["value"]


def guard_with(first_heldout: float, last_heldout: float, first_batch: float) -> HeldoutGuard:
    guard = HeldoutGuard(from_dict({"eval": {"data": "synthetic"}}), main=True)
    guard.first, guard.last = {"heldout/l2m": first_heldout}, {"heldout/l2m": last_heldout}
    guard.first_batch_l2m = first_batch
    return guard


def test_gap_warning_on_the_measured_cases():
    # A small set memorised: in-batch 0.085 -> 0.050 (-41%), held-out 0.138 -> 0.129 (-7%, under half of -41%).
    warning = guard_with(0.138, 0.129, 0.085).gap_warning({"l2m": 0.050})
    assert warning is not None and "\n" not in warning
    assert all(number in warning for number in ("0.0850 -> 0.0500", "0.1380 -> 0.1290"))
    # Clip-art: the held-out gap fell threefold (0.196 -> 0.067, -66%): no warning.
    assert guard_with(0.196, 0.067, 0.085).gap_warning({"l2m": 0.050}) is None
    # Exactly half the relative drop is not "much less" (the boundary, by hand: -20% vs -40%).
    assert guard_with(0.100, 0.080, 0.100).gap_warning({"l2m": 0.060}) is None
    # An in-batch gap that did not close is nothing to compare with.
    assert guard_with(0.100, 0.100, 0.100).gap_warning({"l2m": 0.095}) is None


def test_record_names_and_zeroshot_mean():
    results = [EvalResult("synthetic", "modality_gap", {"l2m": 0.5}),
               EvalResult("synthetic", "retrieval", {"i2t_recall@1": 0.25}),
               EvalResult("synthetic/shape", "zeroshot_classification", {"top1": 0.5}),
               EvalResult("synthetic/color", "zeroshot_classification", {"top1": 0.25})]
    assert heldout_record(results) == {
        "heldout/l2m": 0.5, "heldout/i2t_recall@1": 0.25, "heldout/zeroshot/synthetic/shape/top1": 0.5,
        "heldout/zeroshot/synthetic/color/top1": 0.25, "heldout/zeroshot/top1": 0.375}
    assert "heldout/class_prompt/l2m" in known_metrics("fashion-mnist")
    assert "heldout/i2t_recall@1" not in known_metrics("fashion-mnist")
    assert "heldout/zeroshot/top1" not in known_metrics("csv:val.csv")


@pytest.mark.parametrize("flags, message", [
    ({"eval.every": 5}, "bad value for 'eval.every': 5 (needs eval.data (--eval-data)"),
    ({"eval.keep_best": "heldout/l2m"}, "bad value for 'eval.keep_best': 'heldout/l2m' (needs eval.data"),
])
def test_settings_without_heldout_data_are_one_line_errors(flags, message):
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(flags=flags)


@pytest.mark.parametrize("metric, why", [("heldout/l2", "is not a held-out metric of 'synthetic'"),
                                         ("heldout/image_cosine", "has no better direction")])
def test_keep_best_needs_a_known_metric_with_a_direction(metric, why):
    config = from_dict({"eval": {"data": "synthetic", "keep_best": metric}})
    with pytest.raises(ValueError, match=why) as error:
        HeldoutGuard(config, main=True)
    assert "\n" not in str(error.value) and "--keep-best" in str(error.value)


def test_data_that_is_all_unreadable_stops_instead_of_looping(micro_preset, tmp_path):
    # Every image path is missing (relative paths from a CSV moved away from its images): no batch ever has two
    # readable samples, so no step is taken and no log line judges the unreadable share; the skip check must run.
    (tmp_path / "train.tsv").write_text("filepath\ttitle\n" + "".join(f"gone/{i}.png\ta red circle\n"
                                                                     for i in range(300)))
    config = settings(micro_preset, tmp_path, "unreadable", 4)
    config["data"] = {"train": f"tsv:{tmp_path / 'train.tsv'}", "workers": 0}
    with pytest.raises(ValueError, match=r"samples \(100.0%\) were unreadable, above data.max_skip_fraction"):
        train(config)
