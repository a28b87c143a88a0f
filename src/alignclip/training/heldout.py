"""The held-out guard: evaluate held-out data during a run, keep the best checkpoint, and say when the gap closed
only on the training pairs.

The in-batch l2m of the progress bar is measured on training pairs; a model that memorises them closes that gap
while the held-out gap barely moves. So a run with eval.data evaluates the held-out set before its first step,
every eval.every steps and after its last step, with evaluation/ as `alignclip eval` runs it (gap measures,
retrieval where the data has captions, zero-shot where it has classes; not the linear probe or STS, which cost
more and do not move with the gap), logged under heldout/... (open_clip's val/... convention).
"""
from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import torch

from alignclip.evaluation.gap import GAP_KEYS
from alignclip.evaluation.result import EvalResult, better

from .rng import rng_state, set_rng_state
from .config import TrainConfig

PREFIX = "heldout/"
BEST_DIR = "best"
RETRIEVAL_KS = (1, 5, 10)  # RetrievalEvaluator's defaults
ZEROSHOT_KEYS = ("top1", "top5", "mean_per_class_recall")
GAP_TASK_PREFIX = {"modality_gap": "", "class_prompt_gap": "class_prompt/"}
# "Much less": the held-out l2m fell by less than this fraction of the relative drop of the in-batch l2m (e.g.
# in-batch 0.085 -> 0.050 is -41%; held-out 0.138 -> 0.129 is -7%, under half of it: warn). Only runs whose
# in-batch l2m fell by at least MIN_BATCH_DROP are judged: otherwise there is no closing to compare.
MUCH_LESS, MIN_BATCH_DROP = 0.5, 0.1


def heldout_tasks(dataset: str) -> list[str]:
    from alignclip.evaluation.suite import supported_tasks

    return [t for t in supported_tasks(dataset) if t in ("gap", "retrieval", "zeroshot")]


def known_metrics(dataset: str) -> list[str]:
    """Every name a held-out evaluation of `dataset` logs (what eval.keep_best may name)."""
    from alignclip.data.synthetic import zeroshot_tasks
    from alignclip.evaluation.suite import dataset_name

    tasks, names = heldout_tasks(dataset), []
    gap = "" if dataset == "synthetic" or "retrieval" in tasks else "class_prompt/"
    names += [f"{PREFIX}{gap}{k}" for k in GAP_KEYS]
    if "retrieval" in tasks:
        names += [f"{PREFIX}{d}_recall@{k}" for d in ("i2t", "t2i") for k in RETRIEVAL_KS]
    if "zeroshot" in tasks:
        sets = [f"synthetic/{a}" for a in zeroshot_tasks()] if dataset == "synthetic" else [dataset_name(dataset)]
        names += [f"{PREFIX}zeroshot/{k}" for k in ZEROSHOT_KEYS]
        names += [f"{PREFIX}zeroshot/{s}/{k}" for s in sets for k in ZEROSHOT_KEYS]
    return names


def heldout_record(results: list[EvalResult]) -> dict[str, float]:
    """heldout/<gap measure>, heldout/<retrieval recall>, heldout/zeroshot/<dataset>/<metric> and the zero-shot
    means over the datasets, heldout/zeroshot/<metric>."""
    record: dict[str, float] = {}
    zeroshot: dict[str, list[float]] = {}
    for r in results:
        if r.task in GAP_TASK_PREFIX:
            record.update({f"{PREFIX}{GAP_TASK_PREFIX[r.task]}{k}": v for k, v in r.metrics.items()})
        elif r.task == "retrieval":
            record.update({f"{PREFIX}{k}": v for k, v in r.metrics.items()})
        elif r.task == "zeroshot_classification":
            record.update({f"{PREFIX}zeroshot/{r.dataset}/{k}": v for k, v in r.metrics.items()})
            for k, v in r.metrics.items():
                zeroshot.setdefault(k, []).append(v)
    record.update({f"{PREFIX}zeroshot/{k}": statistics.mean(v) for k, v in zeroshot.items()})
    return record


class HeldoutGuard:
    """Owns what the held-out evaluations decide: when they run, the best value so far (kept across a resume in
    the trainer state), checkpoints/best and the end-of-run comparison with the in-batch gap."""

    def __init__(self, config: TrainConfig, main: bool) -> None:
        e, d = config.eval, config.data
        self.dataset, self.every, self.num_samples, self.metric = e.data, e.every, e.num_samples, e.keep_best
        self.csv_keys, self.main = (d.csv_image_key, d.csv_caption_key), main
        if self.metric is not None:
            known = known_metrics(self.dataset)  # type: ignore[arg-type]
            if self.metric not in known:
                raise ValueError(f"bad value for 'eval.keep_best' (--keep-best): {self.metric!r} is not a held-out "
                                 f"metric of {self.dataset!r} (known: {', '.join(known)})")
            if not better(self.metric):
                raise ValueError(f"bad value for 'eval.keep_best' (--keep-best): {self.metric!r} has no better "
                                 "direction (descriptive only); name a gap measure, a recall or an accuracy")
        self.best: float | None = None
        self.best_step: int | None = None
        self.first: dict[str, float] = {}  # the evaluation before the first step
        self.last: dict[str, float] = {}
        self.first_batch_l2m: float | None = None  # the in-batch l2m of the first step (before its update)

    @classmethod
    def for_config(cls, config: TrainConfig, main: bool) -> "HeldoutGuard | None":
        return cls(config, main) if config.eval.data is not None else None

    def due(self, step: int, total_steps: int) -> bool:
        return step == total_steps or (self.every > 0 and step % self.every == 0)

    def note_first_step(self, values: dict[str, torch.Tensor]) -> None:
        if self.first_batch_l2m is None and "l2m" in values:
            self.first_batch_l2m = float(values["l2m"])

    # ------------------------------------------------------------------------------------------------ evaluate

    def evaluate(self, model: torch.nn.Module, step: int, device: torch.device, run_dir: Path,
                 log: Any) -> dict[str, float]:
        """Rank 0 evaluates, logs {step, heldout/...} with `log` and keeps the best checkpoint; every RNG is
        restored afterwards, so a run with the guard trains exactly as one without it (and resumes exactly)."""
        if not self.main:
            return {}
        from alignclip.evaluation.suite import evaluate_model

        saved = rng_state()
        try:
            results, _, _ = evaluate_model(model, self.dataset, heldout_tasks(self.dataset), self.num_samples,
                                           device=device, csv_keys=self.csv_keys)  # type: ignore[arg-type]
        finally:
            set_rng_state(saved)
        record = heldout_record(results)
        self.first = self.first or record
        self.last = record
        log({"step": step, **record})
        if self.metric is not None and self.metric in record and self._improves(record[self.metric]):
            self.best, self.best_step = record[self.metric], step
            save_best(model, run_dir, {"metric": self.metric, "value": self.best, "step": step})
        return record

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if better(self.metric) == "lower" else value > self.best  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "first": dict(self.first), "last": dict(self.last),
                "first_batch_l2m": self.first_batch_l2m}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.first, self.last = dict(state.get("first") or {}), dict(state.get("last") or {})
        self.first_batch_l2m = state.get("first_batch_l2m")

    # ------------------------------------------------------------------------------------------------ summary

    def report(self, last_batch: dict[str, Any], write: Any) -> list[str]:
        """Write the end-of-run lines; return the warning (as a list: none or one) for the run's result."""
        lines, warning = self.summary_lines(last_batch), self.gap_warning(last_batch)
        for line in lines + ([warning] if warning else []):
            write(line)
        return [warning] if warning else []

    def summary_lines(self, last_batch: dict[str, Any]) -> list[str]:
        """The held-out l2m beside the in-batch one (start -> end), and where the best checkpoint is."""
        key = f"{PREFIX}l2m" if f"{PREFIX}l2m" in self.last else f"{PREFIX}class_prompt/l2m"
        lines = []
        if key in self.last:
            batch = "" if "l2m" not in last_batch else f"in-batch {_from(self.first_batch_l2m)}{last_batch['l2m']:.4f}"
            lines.append(f"  l2m: held-out {_from(self.first.get(key))}{self.last[key]:.4f}" +
                         (f", {batch}" if batch else ""))
        if self.best is not None:
            lines.append(f"  best {self.metric} {self.best:.4f} at step {self.best_step}: checkpoints/{BEST_DIR}")
        return lines

    def gap_warning(self, last_batch: dict[str, Any]) -> str | None:
        """One line when the held-out l2m closed much less than the in-batch l2m (MUCH_LESS), else None."""
        start_h, end_h = self.first.get(f"{PREFIX}l2m"), self.last.get(f"{PREFIX}l2m")
        start_b, end_b = self.first_batch_l2m, last_batch.get("l2m")
        if None in (start_h, end_h, start_b, end_b) or start_b <= 0 or start_h <= 0:  # type: ignore[operator]
            return None
        drop_b, drop_h = 1 - end_b / start_b, 1 - end_h / start_h  # type: ignore[operator]
        if drop_b < MIN_BATCH_DROP or drop_h >= MUCH_LESS * drop_b:
            return None
        return (f"warning: the gap closed on the training pairs, not on the held-out ones: in-batch l2m "
                f"{start_b:.4f} -> {end_b:.4f} ({-drop_b:+.0%}), held-out l2m {start_h:.4f} -> {end_h:.4f} "
                f"({-drop_h:+.0%}); the model may be memorising its training set (more data, fewer steps, or "
                f"--keep-best {PREFIX}l2m)")


def _from(value: float | None) -> str:
    return f"{value:.4f} -> " if value is not None else ""


def save_best(model: torch.nn.Module, run_dir: Path, best: dict[str, Any]) -> Path:
    """<run>/checkpoints/best (weights + config.json naming the metric, value and step), replaced atomically: a
    kill at any instant leaves the previous best or the new one, never half of either."""
    from alignclip.models.checkpoint import save_checkpoint

    root = Path(run_dir) / "checkpoints"
    final, tmp, old = root / BEST_DIR, root / f".tmp-{BEST_DIR}-{os.getpid()}", root / f".old-{BEST_DIR}-{os.getpid()}"
    for leftover in root.glob(f".*-{BEST_DIR}-*") if root.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)
    save_checkpoint(model, tmp, metadata={"best": best})
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final
