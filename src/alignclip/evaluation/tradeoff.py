"""The gap/accuracy trade-off of a comparison: l2m on x, an accuracy on y, one line per method.

A WiSE-FT sweep (`alignclip interpolate`, then `alignclip eval` of each checkpoint) is one line per tuned model,
its points in alpha order; every other run is a point of its own. What "accuracy" is depends on the data: the mean
zero-shot top-1 where the evaluation has classes, else the mean retrieval R@1 of both directions.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from alignclip.evaluation.result import EvalResult

FIGURE = "tradeoff.png"
SIZE = (900, 640)
ZEROSHOT, RETRIEVAL = "mean zero-shot top-1", "mean retrieval R@1 (I→T, T→I)"


def accuracy(results: Sequence[EvalResult]) -> tuple[float, str] | None:
    """(value, what it is) of one evaluation, or None when it has neither zero-shot nor retrieval."""
    zeroshot = [r.metrics["top1"] for r in results if r.task == "zeroshot_classification" and "top1" in r.metrics]
    if zeroshot:
        return statistics.mean(zeroshot), ZEROSHOT
    recalls = [r.metrics[k] for r in results if r.task == "retrieval"
               for k in ("i2t_recall@1", "t2i_recall@1") if k in r.metrics]
    return (statistics.mean(recalls), RETRIEVAL) if recalls else None


def model_name(path: str) -> str:
    """'runs/keep-s0/checkpoints/step_000100' -> 'keep-s0' (the run), any other path -> its last part."""
    p = Path(path)
    return p.parent.parent.name if p.parent.name == "checkpoints" and p.parent.parent.name else p.name


def tradeoff_lines(runs: Sequence[tuple[str, Sequence[EvalResult], Mapping[str, Any]]],
                   ) -> tuple[dict[str, list[tuple[float, float, float | None]]], str]:
    """(label -> [(l2m, accuracy, alpha or None)] in alpha order, the accuracy's name) from (label, results, run
    info) triples; runs without a caption-pair gap or an accuracy are left out, and so is a kind of accuracy that
    not every run has (zero-shot beside retrieval-only runs: the y axis must be one quantity)."""
    scored = []
    for label, results, info in runs:
        gap = next((r.metrics["l2m"] for r in results if r.task == "modality_gap" and "l2m" in r.metrics), None)
        acc = accuracy(results)
        if gap is not None and acc is not None:
            alpha = info.get("interpolation/alpha")
            group = f"WiSE-FT of {model_name(str(info['interpolation/tuned']))}" if alpha is not None else label
            scored.append((group, gap, acc, alpha))
    kind = ZEROSHOT if scored and all(acc[1] == ZEROSHOT for _, _, acc, _ in scored) else RETRIEVAL
    if kind == RETRIEVAL:
        scored = [s for s in scored if s[2][1] == RETRIEVAL]
    lines: dict[str, list[tuple[float, float, float | None]]] = {}
    for group, gap, acc, alpha in scored:
        lines.setdefault(group, []).append((gap, acc[0], alpha))
    for points in lines.values():
        points.sort(key=lambda p: -1.0 if p[2] is None else p[2])
    return lines, kind


def plot_tradeoff(lines: Mapping[str, Sequence[tuple[float, float, float | None]]], ylabel: str,
                  path: str | Path) -> Path:
    """One line (or point) per method; each WiSE-FT point labelled with its alpha."""
    from matplotlib import rc_context

    from alignclip.evaluation.plots import FONT, _figure, _save

    with rc_context(FONT):
        fig = _figure("tradeoff", SIZE)
        ax = fig.add_subplot()
        for label, points in lines.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
            for x, y, alpha in points:
                if alpha is not None:
                    ax.annotate(f"{alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=10)
        ax.set_xlabel("held-out l2m (modality gap, lower: closer)")
        ax.set_ylabel(ylabel)
        ax.set_title("gap against accuracy (numbers: WiSE-FT alpha)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        return _save(fig, path)


def tradeoff_figure(runs: Sequence[tuple[str, Sequence[EvalResult], Mapping[str, Any]]],
                    out: Path) -> list[tuple[str, str]]:
    """[(file name, caption)] of the trade-off figure written into `out`; none when fewer than two runs score."""
    lines, kind = tradeoff_lines(runs)
    if sum(len(points) for points in lines.values()) < 2:
        return []
    plot_tradeoff(lines, kind, out / FIGURE)
    return [(FIGURE, f"Held-out l2m against {kind}: one line per method (a WiSE-FT sweep in alpha order).")]
