"""One result type for every evaluator, and the names a reader sees for tasks and metrics.

Every evaluator returns an `EvalResult`: named scores in `metrics` (what runs are compared on) and bookkeeping in
`info` (seed, sample counts, the probe's chosen C, ...), kept apart so a report never ranks runs by a seed or a
sample count. metrics.json stores `to_dict()`, and `from_dict` reads it back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

TASK_LABELS = {
    "zeroshot_classification": "zero-shot classification",
    "linear_probe": "linear probe (logistic regression on frozen image features)",
    "retrieval": "retrieval (I→T: image finds one of its captions; T→I: caption finds its image)",
    "sts": "semantic textual similarity (text encoder only)",
    "modality_gap": "modality gap (image vs its own caption)",
    "class_prompt_gap": "image-to-class-prompt gap (not the pair gap: each image vs the prompt of its class)",
    "data": "data read",
}

# Short column labels; the full key is the cell's tooltip.
METRIC_LABELS = {
    "top1": "top-1", "top5": "top-5", "mean_per_class_recall": "mean per-class recall",
    "paired_cosine": "paired cos", "unpaired_cosine": "unpaired cos", "image_cosine": "img-img cos",
    "text_cosine": "txt-txt cos", "rmg": "RMG", "uniformity_image": "uniformity img",
    "uniformity_text": "uniformity txt",
    "spearman": "Spearman ρ", "pearson": "Pearson r", "separability": "separability (chance 0.5)",
}
STD_SUFFIX = "_std"  # "<metric>_std": the metric's sampling noise, shown as "value ± std" beside it
GAP_NOTE = ("separability: held-out accuracy of a linear image-vs-text classifier, chance 0.5 (overlap); "
            "*_std: bootstrap standard deviation over the evaluated pairs")
# Retrieval: i2t = an image finds one of its captions (I→T), t2i = a caption finds its image (T→I).
DIRECTIONS = {"i2t": "I→T", "t2i": "T→I"}
for _k in (1, 5, 10):
    METRIC_LABELS[f"i2t_recall@{_k}"] = f"I→T R@{_k}"
    METRIC_LABELS[f"t2i_recall@{_k}"] = f"T→I R@{_k}"

HIGHER_IS_BETTER = {"top1", "top5", "mean_per_class_recall", "spearman", "pearson", "paired_cosine"}
LOWER_IS_BETTER = {"l2m", "l2i", "rmg", "separability", "alignment"}


def better(metric: str) -> str:
    """'higher', 'lower' or '' (descriptive only, e.g. intra-modal cosines: no best is marked) for a metric name."""
    name = metric.rsplit("/", 1)[-1]
    if name in HIGHER_IS_BETTER or "recall@" in name:
        return "higher"
    return "lower" if name in LOWER_IS_BETTER else ""


def best_of(values: Mapping[Any, float], direction: str, tolerance: float = 5e-4) -> set[Any]:
    """Keys of the best value (ties within `tolerance`, the printed precision); none without a direction or with
    fewer than two values to compare."""
    if not direction or len(values) < 2:
        return set()
    target = (max if direction == "higher" else min)(values.values())
    return {key for key, value in values.items() if abs(value - target) < tolerance}


def with_direction(key: str) -> str:
    """'synthetic/retrieval/i2t_recall@1 (I→T)': a plain-text key with its retrieval direction spelled out."""
    way = key.rsplit("/", 1)[-1].split("_", 1)[0]
    return f"{key} ({DIRECTIONS[way]})" if way in DIRECTIONS and "_recall@" in key else key


def best_beyond_noise(values: Mapping[Any, float], direction: str, stds: Mapping[Any, float]) -> set[Any]:
    """best_of, where values within twice the largest known noise (`stds`) of the best tie with it; none when
    every value ties, so a difference inside the noise is never marked."""
    tolerance = max([5e-4] + [2 * s for s in stds.values() if s is not None])
    best = best_of(values, direction, tolerance)
    return set() if len(best) == len(values) else best


def metric_label(metric: str) -> str:
    """Column header: short name plus ↑/↓ when there is a better direction."""
    arrow = {"higher": " ↑", "lower": " ↓"}.get(better(metric), "")
    return METRIC_LABELS.get(metric, metric) + arrow


@dataclass
class EvalResult:
    """Scores of one task on one dataset: metrics are compared across runs, info is bookkeeping."""

    dataset: str
    task: str
    metrics: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return TASK_LABELS.get(self.task, self.task.replace("_", " "))

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "task": self.task, "metrics": dict(self.metrics), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "EvalResult":
        """A metrics.json record (`to_dict()`'s layout)."""
        try:
            dataset, task, metrics = str(record["dataset"]), str(record["task"]), dict(record["metrics"])
        except (KeyError, TypeError):
            raise ValueError(f"not an evaluation result (needs dataset, task, metrics): {str(record)[:80]}") from None
        info = dict(record.get("info") or {})
        return cls(dataset, task, {k: v for k, v in metrics.items() if v is not None}, info)


def as_result(record: EvalResult | Mapping[str, Any]) -> EvalResult:
    return record if isinstance(record, EvalResult) else EvalResult.from_dict(record)
