"""Evaluation reports: metrics.json, gap figures and a self-contained index.html (compare.py puts runs side by side).

A page reads at a glance: the method and architecture on top, bookkeeping (seed, counts, the probe's C) in a "run
info" block apart from the scores, one small table per task with short column names (a measure's noise as "± std"
in its cell), and the shift sweep as its own table. The HTML pieces are in pages.py.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from alignclip.evaluation.gap import GAP_KEYS, ArrayLike
from alignclip.evaluation.pages import figure_grid, figure_html, html_page, html_table
from alignclip.evaluation.result import STD_SUFFIX, EvalResult, as_result, metric_label, with_direction

FIGURES = {"projection": "projection.png", "sphere": "sphere.png", "cosines": "cosines.png",
           "shift_sweep": "shift_sweep.png"}
CAPTIONS = {"projection": "Both modalities in 2-D (equal axes); thin lines join each image to its {text}.",
            "sphere": "Top-3 PCA directions, re-normalised onto the unit sphere.",
            "cosines": "Paired vs unpaired vs image-image vs text-text cosines; legend means are metrics.json's.",
            "shift_sweep": "Gap measures under the post-hoc shift x - λ·delta, y + λ·delta."}
POINTS = "projection_points.npz"  # the projection's 2-D points, so `compare` can draw every run on shared axes
RUN_KEYS = ("model", "method", "family", "architecture", "model_size", "dataset", "num_samples", "max_samples",
            "seed")
GAP_TASKS = ("modality_gap", "class_prompt_gap")
SWEEP_KEYS = ("l2m", "rmg", "paired_cosine", "unpaired_cosine", "separability")
def json_safe(value: Any) -> Any:
    """JSON-safe copy: results -> dicts, tensors/numpy scalars -> float, non-finite -> None."""
    if isinstance(value, EvalResult):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def split_document(document: Mapping[str, Any]) -> tuple[list[EvalResult], dict[str, Any], list[dict] | None]:
    """A metrics.json document -> (results, run info with nested keys as 'a/b', shift sweep rows or None)."""
    results = [as_result(r) for r in document.get("results", [])]
    info: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{prefix}{key}/")
        elif not isinstance(value, (list, tuple)) and value is not None:
            info[prefix.rstrip("/")] = value

    walk({k: v for k, v in document.items() if k not in ("results", "shift_sweep")}, "")
    return results, info, document.get("shift_sweep")


def flatten_metrics(results: Sequence[EvalResult | Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, float]:
    """'dataset/task/metric' -> score, for results or a metrics.json document (its "results"); no bookkeeping."""
    if isinstance(results, Mapping):
        results = results.get("results", [])
    flat: dict[str, float] = {}
    for result in map(as_result, results):
        for key, value in result.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{result.dataset}/{result.task}/{key}"] = float(value)
    return flat


def format_value(key: str, value: Any) -> str:
    """Integers (counts, seeds) as integers, other numbers with 4 decimals, anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (key.rsplit("/", 1)[-1].startswith("num_") and float(value).is_integer()):
        return str(int(value))
    return f"{value:.4f}"


def format_table(rows: Mapping[str, Any], headers: Sequence[str] = ("metric", "value")) -> str:
    """Aligned plain-text table for the terminal."""
    names = {key: with_direction(key) for key in rows}
    width = max([len(headers[0])] + [len(n) for n in names.values()])
    lines = [f"{headers[0]:<{width}}  {headers[1]}", f"{'-' * width}  {'-' * max(8, len(headers[1]))}"]
    lines += [f"{names[key]:<{width}}  {format_value(key, value)}" for key, value in rows.items()]
    return "\n".join(lines)


def info_line(info: Mapping[str, Any]) -> str:
    """'best_C=10, num_train=143': bookkeeping on one line (numbers to 4 significant digits, lists left out)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
                     if not isinstance(v, (list, dict)))


def run_label(info: Mapping[str, Any], fallback: str = "") -> str:
    """'alignclip (IMSep, logits weighting) · shared architecture', from what metrics.json recorded."""
    method, architecture, family = info.get("method"), info.get("architecture"), info.get("family")
    parts = [str(method)] if method else []
    if family == "siglip":  # a sigmoid-trained (SigLIP) model: its gap is read beside CLIP's, so say which it is
        parts.append("SigLIP family")
    if architecture:
        parts.append(f"{architecture} architecture")
    return " · ".join(parts) or fallback


def _info_table(info: Mapping[str, Any], results: Sequence[EvalResult]) -> str:
    run = html_table(["run", "value"], [[k, format_value(k, v)] for k, v in info.items()]) if info else ""
    rows = [[f"{r.dataset} · {r.task}", info_line(r.info)] for r in results if r.info]
    return run + (html_table(["task", "bookkeeping (not scores)"], rows) if rows else "")


def task_groups(results: Sequence[EvalResult]) -> dict[str, list[EvalResult]]:
    """task -> its results (datasets), in first-seen order; results without metrics (data read) are run info."""
    groups: dict[str, list[EvalResult]] = {}
    for result in results:
        if result.metrics:
            groups.setdefault(result.task, []).append(result)
    return groups


def shown_keys(metrics: Sequence[str]) -> list[str]:
    """The metric columns of a table: a `<metric>_std` is shown inside its metric's cell, not as a column."""
    present = set(metrics)
    return [k for k in dict.fromkeys(metrics) if not (k.endswith(STD_SUFFIX) and k[:-len(STD_SUFFIX)] in present)]


def metric_cell(metrics: Mapping[str, Any], key: str) -> str:
    """'0.2917 ± 0.0038' when the metric's noise is known, else the value alone ('' when absent)."""
    if key not in metrics:
        return ""
    std = metrics.get(key + STD_SUFFIX)
    return format_value(key, metrics[key]) + (f" ± {std:.4f}" if isinstance(std, float) else "")


def _task_table(results: Sequence[EvalResult]) -> str:
    keys = shown_keys([k for r in results for k in r.metrics])
    rows = [[r.dataset] + [metric_cell(r.metrics, k) for k in keys] for r in results]
    note = "".join(f"<p class=\"note\">pairs: {html.escape(str(p))}</p>"
                   for p in dict.fromkeys(r.info.get("pairs") for r in results) if p)
    return html_table(["dataset"] + [metric_label(k) for k in keys], rows, tooltips=[""] + keys) + note


def sweep_table(sweep: Sequence[Mapping[str, float]]) -> str:
    """λ rows x the main gap measures, plus any downstream scores the sweep's callback added."""
    keys = [k for k in SWEEP_KEYS if k in sweep[0]] + [k for k in sweep[0] if k not in GAP_KEYS and k != "lambda"]
    rows = [[f"{row['lambda']:g}"] + [format_value(k, row[k]) for k in keys] for row in sweep]
    return html_table(["λ"] + [metric_label(k) for k in keys], rows, tooltips=[""] + keys)


def write_report(out_dir: str | Path, document: Mapping[str, Any], image_features: ArrayLike | None = None,
                 text_features: ArrayLike | None = None, title: str = "alignclip evaluation",
                 projection: str = "pca", sweep: Sequence[dict[str, float]] | None = None,
                 max_pairs: int = 200, seed: int = 0) -> dict[str, Path]:
    """Write metrics.json (document; its "results" are EvalResults or their dicts), the gap figures (when features
    are given) and index.html; return the paths."""
    from alignclip.evaluation import plots

    if (image_features is None) != (text_features is None):
        raise ValueError("write_report needs both image_features and text_features, or neither")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stored = dict(document, **({"shift_sweep": list(sweep)} if sweep else {}))
    paths = {"metrics": out / "metrics.json"}
    paths["metrics"].write_text(json.dumps(json_safe(stored), indent=2) + "\n")
    results, info, sweep = split_document(stored)
    gap = next((r for r in results if r.task in GAP_TASKS), None)
    text = "class prompt" if gap is not None and gap.task == "class_prompt_gap" else "caption"
    if image_features is not None:
        points = plots.project_pairs(image_features, text_features, projection, max_pairs, seed)
        np.savez(out / POINTS, image=points[0], text=points[1])
        paths["projection"] = plots.plot_projection(image_features, text_features, out / FIGURES["projection"],
                                                    method=projection, max_pairs=max_pairs, seed=seed, text_label=text)
        paths["sphere"] = plots.plot_sphere(image_features, text_features, out / FIGURES["sphere"],
                                            max_pairs=max_pairs, seed=seed, text_label=text)
        paths["cosines"] = plots.plot_cosine_histograms(image_features, text_features, out / FIGURES["cosines"],
                                                        seed=seed, gap=gap.metrics if gap is not None else None)
    if sweep:
        paths["shift_sweep"] = plots.plot_shift_sweep(sweep, out / FIGURES["shift_sweep"])
    label = run_label(info)
    summary = ", ".join(f"{k} {format_value(k, info[k])}" for k in ("dataset", "num_samples", "seed") if k in info)
    body = [f"<p class=\"label\"><b>{html.escape(label)}</b></p>" if label else "",
            f"<p>{html.escape(summary)} (details under <a href=\"#run-info\">Run info</a>)</p>" if summary else ""]
    body.append("<h2>Results</h2>")
    body += [f"<h3>{html.escape(group[0].label)}</h3>{_task_table(group)}" for group in task_groups(results).values()]
    if sweep:
        body.append(f"<h3>post-hoc shift sweep</h3>{sweep_table(sweep)}")
    body.append(f"<h2 id=\"run-info\">Run info</h2>{_info_table(info, results)}")
    figures = [figure_html(FIGURES[k], CAPTIONS[k].format(text=text)) for k in FIGURES if k in paths]
    if figures:
        body.append(f"<h2>Figures</h2>{figure_grid(figures)}")
    paths["index"] = out / "index.html"
    paths["index"].write_text(html_page(title, "\n".join(body)))
    return paths
