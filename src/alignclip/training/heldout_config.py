"""The `eval` config section: held-out data evaluated during a run (training/heldout.py runs it).

Its own file so that the schema in config.py stays one screen per section and importing it stays torch-free (the
CLI's --help). The metric names `eval.keep_best` accepts are checked by training/heldout.py, where the evaluation
code that produces them lives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .overrides import setting


@dataclass
class EvalSection:
    # open_clip's --val-data / --val-frequency, counted in optimizer steps instead of epochs.
    data: str | None = setting(
        None, "held-out data evaluated during the run: anything `alignclip eval --dataset` takes (synthetic, "
              "csv:PATH, classes:DIR, ...); null: none")
    every: int = setting(0, "optimizer steps between held-out evaluations; 0: only before the first and after the "
                            "last step")
    num_samples: int = setting(500, "held-out images per evaluation (`alignclip eval --num-samples`)")
    keep_best: str | None = setting(
        None, "keep the checkpoint with the best value of this held-out metric as checkpoints/best, e.g. "
              "heldout/l2m (lower is better) or heldout/zeroshot/top1")


def eval_checks(e: EvalSection) -> list[tuple[bool, str, Any, str]]:
    """(ok, key, value, why) rows for TrainConfig.validate: what needs held-out data without having any."""
    needs = "needs eval.data (--eval-data): the held-out data to evaluate"
    return [
        (e.every >= 0, "eval.every", e.every, "must be >= 0"),
        (e.every == 0 or e.data is not None, "eval.every", e.every, needs),
        (e.keep_best is None or e.data is not None, "eval.keep_best", e.keep_best, needs),
        (e.data is None or bool(e.data.strip()), "eval.data", e.data, "must not be empty (null: no evaluation)"),
        (e.num_samples >= 2, "eval.num_samples", e.num_samples, "must be >= 2"),
    ]
