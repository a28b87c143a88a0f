"""Run health: a warm-up fitted to the run, a warning for runs too short to learn, a collapse warning on a trend
after warm-up with advice that fits, l2m in the logs, and the small shared helpers (unwrap, the metrics window,
resume resolved once)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from alignclip.models.base import unwrap
from alignclip.training import NonFiniteLossError, load_config, train
from alignclip.training.checkpoint import resolve_resume
from alignclip.training.health import (COLLAPSE_WINDOW, CollapseWatch, collapse_trend, fitted_warmup,
                                       run_length_notes)
from alignclip.training.metrics import MetricsWindow, read_metrics
from alignclip.training.optim import CosineSchedule, lr_at


def test_warmup_is_fitted_to_a_fifth_of_the_run() -> None:
    assert fitted_warmup(50, 48) == 9  # 2 epochs = 48 steps would never leave a 50-step warm-up
    assert fitted_warmup(50, 250) == 50 and fitted_warmup(50, 1000) == 50  # long enough: unchanged
    assert fitted_warmup(20, 200) == 20  # the demo's runs (it caps at steps // 5 itself) are unchanged
    assert fitted_warmup(10, 67) == 10  # the posttrain recipe at the demo's 67 steps too
    assert fitted_warmup(2, 3) == 1 and fitted_warmup(0, 3) == 0


def test_run_length_notes() -> None:
    notes = run_length_notes(50, 48, 128, from_scratch=True)
    assert len(notes) == 2
    assert "warmup_steps=50" in notes[0] and "over 9 steps" in notes[0]
    assert "only 48 optimizer steps" in notes[1] and "optim.epochs" in notes[1] and "optim.batch_size" in notes[1]
    assert run_length_notes(10, 67, 128, from_scratch=False) == []  # post-training starts from a trained model
    assert run_length_notes(50, 500, 128, from_scratch=True) == []


HEALTHY = [0.99, 0.97, 0.94, 0.92, 0.91, 0.85, 0.6, 0.3, 0.1, 0.05, 0.018]  # a healthy run: 0.94 early, 0.018 at the end


def test_collapse_trend_on_sequences() -> None:
    assert not any(collapse_trend(HEALTHY[:k], 0.9) for k in range(1, len(HEALTHY) + 1))
    assert collapse_trend([0.95, 0.96, 0.95, 0.96, 0.95], 0.9)  # flat and high
    assert collapse_trend([0.91, 0.93, 0.95, 0.97, 0.99], 0.9)  # rising
    assert collapse_trend([0.999, 0.998, 0.997, 0.996, 0.995], 0.9)  # falls 0.004 in 5 logs: not escaping
    assert not collapse_trend([0.99, 0.98, 0.97, 0.96, 0.95], 0.9)  # falls 0.04: on its way out
    assert not collapse_trend([0.95, 0.96, 0.89, 0.96, 0.95], 0.9)  # one log below the threshold
    assert not collapse_trend([0.95] * (COLLAPSE_WINDOW - 1), 0.9)  # too few logs to call a trend


def _records(cosines, losses, start=10, every=10):
    return [{"step": start + every * i, "image_cosine": c, "text_cosine": 0.1, "contrastive_loss": l}
            for i, (c, l) in enumerate(zip(cosines, losses))]


def test_collapse_watch_ignores_warmup_and_healthy_runs_and_warns_once() -> None:
    watch = CollapseWatch(0.9, after_step=50, method="clip", weighting="logits")
    assert [watch.update(r) for r in _records(HEALTHY, [4.0 - 0.3 * i for i in range(11)])] == [None] * 11
    # High during warm-up only (steps 10..50), then falling: no warning either.
    watch = CollapseWatch(0.9, after_step=50, method="clip", weighting="logits")
    assert all(watch.update(r) is None for r in _records([0.99] * 5 + [0.5, 0.3, 0.2], [4.0] * 8))
    # Flat and high after warm-up, the loss flat too: stuck; one warning only, advising a lower lr.
    watch = CollapseWatch(0.9, after_step=0, method="clip", weighting="logits")
    out = [watch.update(r) for r in _records([0.97] * 8, [4.85] * 8)]
    assert [o is not None for o in out] == [False] * 4 + [True] + [False] * 3
    assert "not falling either" in out[4] and "lower optim.lr" in out[4] and "IMSep" not in out[4]


def test_collapse_advice_fits_the_cause() -> None:
    watch = CollapseWatch(0.9, after_step=0, method="alignclip", weighting="logits")
    message = [watch.update(r) for r in _records([0.97] * 5, [4.8, 4.5, 4.2, 3.9, 3.6])][-1]
    assert "still falling" in message and "train longer" in message and "lower optim.lr" not in message
    assert "loss.weighting=negatives" in message and "loss.beta" in message
    watch = CollapseWatch(0.9, after_step=0, method="alignclip", weighting="negatives")
    message = [watch.update(r) for r in _records([0.97] * 5, [4.8] * 5)][-1]
    assert "loss.weighting=negatives does not" not in message and "separation_warmup_steps" in message


def test_a_short_run_says_so_and_fits_its_warmup(tmp_path, micro_preset, capsys) -> None:
    config = load_config(overrides=[
        f"model.preset={micro_preset}", "method=clip", "data.num_samples=64", "data.workers=0", "optim.batch_size=16",
        "optim.epochs=2", "optim.warmup_steps=50", "runtime.threads=1", "runtime.device=cpu", f"logging.out={tmp_path}",
        "logging.log_every=2", "logging.progress=false", "logging.tensorboard=false", "logging.checkpoint_every=0"])
    result = train(config)
    assert result.total_steps == 8 and result.warmup_steps == 1
    out = capsys.readouterr().out
    assert "warming up over 1 steps instead" in out and "only 8 optimizer steps" in out
    assert any("too short to learn" in w for w in result.warnings)
    records = read_metrics(result.run_dir)
    assert [r["lr"] for r in records] == [lr_at(r["step"] - 1, config.optim.lr, 1, 8) for r in records]
    assert "l2m" in records[-1] and "centroid_distance" not in records[-1]  # one name in the logs


def test_unwrap_nested_wrappers() -> None:
    class Wrapper(nn.Module):  # DDP's shape: the model under `.module`
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model = nn.Linear(2, 2)
    assert unwrap(model) is model
    assert unwrap(Wrapper(model)) is model
    assert unwrap(torch.compile(Wrapper(model))) is model
    assert unwrap(Wrapper(torch.compile(model))) is model


def test_metrics_window_means_and_nonfinite_flag() -> None:
    window = MetricsWindow(torch.device("cpu"))
    window.add(4, {"loss": torch.tensor(1.0)}, torch.tensor(False))
    window.add(5, {"loss": torch.tensor(3.0)}, torch.tensor(True))
    assert window.nonfinite_seen()
    assert window.reduce() == ({"loss": 2.0}, True)
    assert (window.first_step, window.last_step) == (4, 5)
    window.add(6, {"loss": torch.tensor(5.0)})
    assert window.reduce() == ({"loss": 5.0}, False)


def test_schedule_has_no_state_and_old_states_load() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = CosineSchedule(optimizer, 1.0, 2, 10)
    assert schedule.state_dict() == {}
    schedule.load_state_dict({"step_num": 7})  # whatever a trainer state holds for it is ignored
    assert schedule.step(0) == 0.5 == schedule.lr_at(0)


def test_a_resolved_resume_path_resolves_to_itself(tmp_path, micro_preset) -> None:
    config = load_config(overrides=[
        f"model.preset={micro_preset}", "method=clip", "data.num_samples=32", "data.workers=0", "optim.batch_size=16",
        "optim.steps=2", "runtime.threads=1", "runtime.device=cpu", f"logging.out={tmp_path}", "logging.name=r",
        "logging.progress=false", "logging.tensorboard=false"])
    checkpoint = Path(train(config).checkpoint)
    assert resolve_resume("latest", tmp_path, "r") == checkpoint
    assert resolve_resume(str(checkpoint), tmp_path, None) == checkpoint  # the CLI's resolved path: a no-op
    assert resolve_resume(str(tmp_path / "r"), tmp_path, None) == checkpoint


def test_non_finite_error_carries_the_step() -> None:
    assert NonFiniteLossError("x", 5).step == 5 and NonFiniteLossError("x").step is None


@pytest.mark.parametrize("ramp, beta, warns", [(20, 0.5, False), (0, 2.0, True)])
def test_collapse_warning_in_real_runs(tmp_path, micro_preset, ramp, beta, warns) -> None:
    """Both runs start collapsed (intra-modal cosine 0.99); with beta ramped in over 20 steps it escapes right after
    the ramp (no warning), at a constant beta of 2 it stays at 0.999 with the loss at chance (a warning)."""
    config = load_config(overrides=[
        f"model.preset={micro_preset}", "method=alignclip", "data.num_samples=32", "data.workers=0",
        "optim.batch_size=32", "optim.steps=60", "optim.warmup_steps=5", "optim.lr=3e-3", "runtime.threads=1",
        "runtime.device=cpu", f"logging.out={tmp_path}", "logging.log_every=2", "logging.progress=false",
        "logging.tensorboard=false", "logging.checkpoint_every=0", f"loss.separation_warmup_steps={ramp}",
        f"loss.beta={beta}"])
    result = train(config)
    collapse = [w for w in result.warnings if "collapsed" in w]
    assert len(collapse) == int(warns), collapse
    if warns:
        assert "not falling either" in collapse[0] and "loss.weighting=negatives" in collapse[0]
