"""Evaluation reports: metrics.json, gap figures and a self-contained index.html; side-by-side run comparison."""
from __future__ import annotations

import csv
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from alignclip.evaluation.gap import ArrayLike

FIGURES = {"projection": "projection.png", "sphere": "sphere.png", "cosines": "cosines.png",
           "shift_sweep": "shift_sweep.png"}
CAPTIONS = {"projection": "Both modalities in 2-D; thin lines join each image to its caption.",
            "sphere": "Top-3 PCA directions, re-normalised onto the unit sphere.",
            "cosines": "Paired vs unpaired vs image-image vs text-text cosine similarities.",
            "shift_sweep": "Gap measures under the post-hoc shift x - lambda*delta, y + lambda*delta."}


def _clean(value: Any) -> Any:
    """JSON-safe copy: tensors/numpy scalars -> float, non-finite -> None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def flatten_metrics(metrics: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves as 'a/b/c' keys; result lists ({dataset, task, metrics}) become 'dataset/task/metric'."""
    flat: dict[str, float] = {}
    if isinstance(metrics, dict):
        if {"dataset", "task", "metrics"} <= set(metrics):
            return flatten_metrics(metrics["metrics"], f"{prefix}{metrics['dataset']}/{metrics['task']}/")
        for key, value in metrics.items():
            flat.update(flatten_metrics(value, f"{prefix}{key}/"))
    elif isinstance(metrics, (list, tuple)):
        for i, value in enumerate(metrics):
            is_result = isinstance(value, dict) and {"dataset", "task", "metrics"} <= set(value)
            flat.update(flatten_metrics(value, prefix if is_result else f"{prefix}{i}/"))
    elif isinstance(metrics, (int, float)) and not isinstance(metrics, bool):
        flat[prefix.rstrip("/")] = float(metrics)
    return flat


def format_value(key: str, value: float) -> str:
    """Counts ('.../num_samples') as integers, everything else with 4 decimals."""
    return str(int(value)) if key.rsplit("/", 1)[-1].startswith("num_") and value.is_integer() else f"{value:.4f}"


def format_table(rows: dict[str, float], headers: Sequence[str] = ("metric", "value")) -> str:
    """Aligned plain-text table for the terminal."""
    width = max([len(headers[0])] + [len(k) for k in rows])
    lines = [f"{headers[0]:<{width}}  {headers[1]}", f"{'-' * width}  {'-' * max(8, len(headers[1]))}"]
    lines += [f"{key:<{width}}  {format_value(key, value)}" for key, value in rows.items()]
    return "\n".join(lines)


def html_page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child"
             "{text-align:left}figure{display:inline-block;margin:0 1em 1em 0}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _metrics_table(rows: dict[str, float]) -> str:
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{format_value(k, v)}</td></tr>" for k, v in rows.items())
    return f"<table><tr><th>metric</th><th>value</th></tr>{cells}</table>"


def write_report(out_dir: str | Path, metrics: dict[str, Any], image_features: ArrayLike | None = None,
                 text_features: ArrayLike | None = None, title: str = "alignclip evaluation",
                 projection: str = "pca", sweep: Sequence[dict[str, float]] | None = None,
                 max_pairs: int = 200, seed: int = 0) -> dict[str, Path]:
    """Write metrics.json, the gap figures (when features are given) and index.html; return the paths."""
    from alignclip.evaluation import plots

    if (image_features is None) != (text_features is None):
        raise ValueError("write_report needs both image_features and text_features, or neither")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json"}
    paths["metrics"].write_text(json.dumps(_clean(metrics), indent=2) + "\n")
    if image_features is not None:
        paths["projection"] = plots.plot_projection(image_features, text_features, out / FIGURES["projection"],
                                                    method=projection, max_pairs=max_pairs, seed=seed)
        paths["sphere"] = plots.plot_sphere(image_features, text_features, out / FIGURES["sphere"],
                                            max_pairs=max_pairs, seed=seed)
        paths["cosines"] = plots.plot_cosine_histograms(image_features, text_features, out / FIGURES["cosines"],
                                                        seed=seed)
    if sweep:
        paths["shift_sweep"] = plots.plot_shift_sweep(sweep, out / FIGURES["shift_sweep"])
    figures = "".join(f"<figure><img src=\"{FIGURES[k]}\" alt=\"{k}\"><figcaption>{html.escape(CAPTIONS[k])}"
                      f"</figcaption></figure>" for k in FIGURES if k in paths)
    body = f"<h2>Metrics</h2>\n{_metrics_table(flatten_metrics(metrics))}\n<h2>Figures</h2>\n{figures}"
    paths["index"] = out / "index.html"
    paths["index"].write_text(html_page(title, body))
    return paths


def _find_metrics(run: Path) -> Path:
    candidates = [run] if run.is_file() else [run / "metrics.json", run / "eval" / "metrics.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no metrics.json for run {run} (looked at {', '.join(map(str, candidates))})")


def write_comparison(runs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """comparison.md + comparison.csv (one column per run) and index.html with each run's figures side by side."""
    if not runs:
        raise ValueError("compare needs at least one run directory")
    files = [_find_metrics(Path(run)) for run in runs]
    tables = []
    for path in files:
        try:
            tables.append(flatten_metrics(json.loads(path.read_text())))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    names = [str(Path(run)) for run in runs]
    keys = list(dict.fromkeys(key for table in tables for key in table))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def cell(table: dict[str, float], key: str) -> str:
        return format_value(key, table[key]) if key in table else ""

    with (out / "comparison.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric"] + names)
        writer.writerows([key] + [cell(t, key) for t in tables] for key in keys)
    md = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    md += [f"| {key} | " + " | ".join(cell(t, key) for t in tables) + " |" for key in keys]
    (out / "comparison.md").write_text("\n".join(md) + "\n")

    header = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{cell(t, k)}</td>" for t in tables) + "</tr>"
                   for k in keys)
    figure_rows = []
    for kind, name in FIGURES.items():
        present = [(path.parent / name) for path in files]
        if not any(p.is_file() for p in present):
            continue
        cells = "".join(f"<td><img src=\"{html.escape(Path(os.path.relpath(p, out)).as_posix())}\" alt=\"{kind}\"></td>"
                        if p.is_file() else "<td></td>" for p in present)
        figure_rows.append(f"<tr><td>{kind}</td>{cells}</tr>")
    body = (f"<h2>Metrics</h2><table><tr><th>metric</th>{header}</tr>{rows}</table>\n"
            f"<h2>Figures</h2><table><tr><th></th>{header}</tr>{''.join(figure_rows)}</table>")
    (out / "index.html").write_text(html_page("alignclip run comparison", body))
    return {"csv": out / "comparison.csv", "markdown": out / "comparison.md", "index": out / "index.html"}
