"""`alignclip compare`: several runs' metrics.json side by side, as comparison.md / .csv and one index.html.

The run table has a column per run, so long values (paths, methods) wrap instead of widening the page; per task, a
row per run and a column per metric, the best run bold only where it beats every other by more than twice the
measure's noise (result.best_beyond_noise); every run's 2-D projection on shared axes.
"""
from __future__ import annotations

import csv
import html
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from alignclip.evaluation.pages import figure_grid, figure_html, html_page, html_table
from alignclip.evaluation.report import (FIGURES, POINTS, RUN_KEYS, flatten_metrics, format_value, metric_cell,
                                         shown_keys, split_document, task_groups)
from alignclip.evaluation.result import STD_SUFFIX, EvalResult, best_beyond_noise, better, metric_label, with_direction
from alignclip.evaluation.tradeoff import tradeoff_figure


def _find_metrics(run: Path) -> Path:
    candidates = [run] if run.is_file() else [run / "metrics.json", run / "eval" / "metrics.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no metrics.json for run {run} (looked at {', '.join(map(str, candidates))})")


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _head(text: str) -> str:
    """'clip' of 'clip, post-trained from X' and of 'clip (IMSep, ...)'; a post-training keeps its mark."""
    word = re.match(r"[\w+.-]*", text).group(0) or text.split(" ")[0]  # type: ignore[union-attr]
    return f"{word} post-trained" if "post-trained" in text else word


def _short_labels(runs: Sequence[str | Path], infos: Sequence[Mapping[str, Any]]) -> list[str]:
    """'clip-run · clip/clip': the run folder (with its parent when two share a name), method, architecture."""
    paths = [Path(run).resolve() for run in runs]
    names = [p.name for p in paths]
    names = [f"{p.parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]
    labels = []
    for name, info in zip(names, infos):
        what = "/".join(_head(str(info[k])) for k in ("method", "architecture") if info.get(k))
        labels.append(f"{name} · {what}" if what else name)
    return labels


def _comparison_tables(labels: list[str], runs: list[list[EvalResult]]) -> list[str]:
    """One table per task: per dataset a row per run, a column per metric; the best run of each dataset's column
    in bold (runs are compared on the same dataset only)."""
    sections = []
    for task, group in task_groups([r for results in runs for r in results]).items():
        metrics = shown_keys([k for r in group for k in r.metrics])
        rows, best = [], set()
        for dataset in dict.fromkeys(r.dataset for r in group):
            found = {label: next((r for r in results if (r.dataset, r.task) == (dataset, task)), None)
                     for label, results in zip(labels, runs)}
            found = {label: r for label, r in found.items() if r is not None}
            for column, key in enumerate(metrics, start=2):
                values = {label: r.metrics[key] for label, r in found.items() if r.metrics.get(key) is not None}
                stds = {label: r.metrics.get(key + STD_SUFFIX) for label, r in found.items()}
                best |= {(len(rows) + list(found).index(label), column)
                         for label in best_beyond_noise(values, better(key), stds)}
            rows += [[dataset, label] + [metric_cell(r.metrics, k) for k in metrics] for label, r in found.items()]
        sections.append(f"<h3>{html.escape(group[0].label)}</h3>" + html_table(
            ["dataset", "run"] + [metric_label(k) for k in metrics], rows, best, ["", ""] + metrics)
            + "".join(f"<p class=\"note\">pairs: {html.escape(str(p))}</p>"
                      for p in dict.fromkeys(r.info.get("pairs") for r in group) if p))
    return sections


def write_comparison(runs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """comparison.md + comparison.csv (a row per metric, a column per run) and index.html (a table per task with
    the best run marked, every run's projection on shared axes, the gap/accuracy trade-off (tradeoff.py), the
    other figures side by side)."""
    from alignclip.evaluation import plots

    if not runs:
        raise ValueError("compare needs at least one run directory")
    files = [_find_metrics(Path(run)) for run in runs]
    documents = [split_document(_read(path)) for path in files]
    names = [str(Path(run)) for run in runs]
    labels = _short_labels(runs, [info for _, info, _ in documents])
    tables = [flatten_metrics(results) for results, _, _ in documents]
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
    for key in keys:
        bold = best_beyond_noise({i: t[key] for i, t in enumerate(tables) if key in t}, better(key),
                                 {i: t.get(key + STD_SUFFIX) for i, t in enumerate(tables)})
        md.append(f"| {with_direction(key)} | " + " | ".join(f"**{cell(t, key)}**" if i in bold else cell(t, key)
                                             for i, t in enumerate(tables)) + " |")
    (out / "comparison.md").write_text("\n".join(md) + "\n")

    info_keys = list(dict.fromkeys([k for k in RUN_KEYS if any(k in info for _, info, _ in documents)]
                                   + [k for _, info, _ in documents for k in info]))
    # One row per setting, one column per run: a few runs' long values (paths, methods) wrap instead of
    # widening the page.
    run_rows = [[key] + [format_value(key, info[key]) if key in info else "" for _, info, _ in documents]
                for key in info_keys]
    body = [html_table(["run"] + labels, run_rows),
            "<p class=\"note\">Bold: the best run in its column (↑ higher is better, ↓ lower; no arrow: "
            "descriptive only), only where it beats every other run by more than twice the noise: ± is a bootstrap "
            "standard deviation over the evaluated pairs; a column without ± has no noise estimate, so read a small "
            "difference there as noise until several seeds say otherwise. Hover a column name for its metrics.json "
            "key.</p>"]
    body += _comparison_tables(labels, [results for results, _, _ in documents])
    figures = []
    panels = {label: (data["image"], data["text"]) for label, path in zip(labels, files)
              if (path.parent / POINTS).is_file() for data in [np.load(path.parent / POINTS)]}
    if panels:
        path = plots.plot_projection_panels(panels, out / FIGURES["projection"])
        from PIL import Image

        with Image.open(path) as image:
            width = image.size[0]
        figures.append(figure_html(FIGURES["projection"], "Every run's 2-D projection on shared axes.", width))
    for kind, name in FIGURES.items():
        if kind == "projection" and panels:
            continue
        figures += [figure_html(Path(os.path.relpath(path.parent / name, out)).as_posix(), f"{kind}: {label}")
                    for label, path in zip(labels, files) if (path.parent / name).is_file()]
    runs = [(label, results, info) for label, (results, info, _) in zip(labels, documents)]
    figures += [figure_html(name, caption) for name, caption in tradeoff_figure(runs, out)]
    if figures:
        body.append(f"<h2>Figures</h2>{figure_grid(figures)}")
    (out / "index.html").write_text(html_page("alignclip run comparison", "\n".join(body)))
    return {"csv": out / "comparison.csv", "markdown": out / "comparison.md", "index": out / "index.html"}
