"""Training curves of the demo runs, read back from each run's metrics.jsonl: the figures where a reader sees collapse,
escape and the separation warm-up, and the per-run collapse diagnosis that the table counts."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from alignclip.training.metrics import read_metrics

# (logged key, figure file, axis label).
QUANTITIES = (
    ("contrastive_loss", "curve_contrastive_loss.png", "contrastive loss, mean of the two directions"),
    ("separation_loss", "curve_separation_loss.png", "separation loss β·IMSep as logged (β ramps in)"),
    ("paired_cosine", "curve_paired_cosine.png", "paired cosine (in-batch)"),
    ("l2m", "curve_l2m.png", "l2m: centroid distance (in-batch)"),
    ("image_cosine", "curve_image_cosine.png", "image-image cosine (in-batch)"),
    ("text_cosine", "curve_text_cosine.png", "text-text cosine (in-batch)"),
)


def read_curves(run_dir: str | Path, step_offset: int = 0) -> dict[str, np.ndarray]:
    """{"step": [...], quantity: [...]} from one run (NaN where a quantity was not logged); `step_offset` places a
    post-training run after its start. Both losses log contrastive_loss as the mean of the two directions, so the
    curves of every method compare as logged."""
    records = [r for r in read_metrics(run_dir) if "step" in r]
    curves = {"step": np.array([r["step"] + step_offset for r in records], dtype=float)}
    for key, _, _ in QUANTITIES:
        values = [r.get(key) for r in records]
        curves[key] = np.array([np.nan if v is None or isinstance(v, str) else float(v) for v in values])
    return curves


def collapse_diagnosis(run_dir: str | Path, threshold: float) -> dict[str, float]:
    """A run is collapsed when its mean intra-modal cosine (max of image-image and text-text, in-batch, as logged)
    is above `threshold` at the end of training. steps_collapsed: how many steps the logged windows spent above it
    (an untrained tower is collapsed too, so every method spends its first steps there)."""
    records = [r for r in read_metrics(run_dir) if "image_cosine" in r and "text_cosine" in r]
    if not records:
        return {}
    over = [max(r["image_cosine"], r["text_cosine"]) > threshold for r in records]
    steps = [r["step"] for r in records]
    widths = np.diff([0] + steps)  # each logged value is the mean of the window of steps since the previous one
    steps_collapsed = float(sum(width for width, above in zip(widths, over) if above))
    return {"train/collapsed": float(over[-1]), "train/steps_collapsed": steps_collapsed}


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, np.ndarray]]], out_dir: Path) -> list[Path]:
    """One figure per quantity, every method on shared axes: the mean over seeds, a band from the lowest to the
    highest seed. Post-training rows ("a+b") are dashed and start where their initial model stopped."""
    from matplotlib.figure import Figure

    paths = []
    colors = {name: f"C{i % 10}" for i, name in enumerate(curves)}
    for key, file, label in QUANTITIES:
        if not any(np.isfinite(run[key]).any() for runs in curves.values() for run in runs):
            continue
        fig = Figure(figsize=(8, 5), dpi=100)
        ax = fig.add_subplot()
        for name, runs in curves.items():
            length = min(len(run["step"]) for run in runs)
            if length == 0 or not all(np.isfinite(run[key][:length]).any() for run in runs):
                continue
            steps = runs[0]["step"][:length]
            values = np.stack([run[key][:length] for run in runs])
            style = "--" if "+" in name else "-"
            ax.plot(steps, values.mean(0), style, color=colors[name], label=f"{name} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), color=colors[name], alpha=0.2, linewidth=0)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label, fontsize=8)
        ax.set_title(f"{label.split(',')[0].split(' (')[0]}: mean over seeds, band = min-max", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / file
        fig.savefig(path, dpi=100, facecolor="white")
        paths.append(path)
    return paths
