"""The demo's comparison table: one row per method, one column per measure, each cell the mean over seeds ± the
sample standard deviation across seeds (a bare value when there was one seed), the best mean of a column marked."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Column:
    label: str
    key: str  # a flattened metrics key (see alignclip.evaluation.report.flatten_metrics)
    better: str  # "higher", "lower" or "" (informative only: no best is marked)
    count: bool = False  # a 0/1 per seed, shown as "k/N" (how many seeds)


COLUMNS = (
    Column("l2m", "synthetic/modality_gap/l2m", "lower"),
    Column("paired cos", "synthetic/modality_gap/paired_cosine", "higher"),
    Column("RMG", "synthetic/modality_gap/rmg", "lower"),
    Column("img-img cos", "synthetic/modality_gap/image_cosine", ""),
    Column("txt-txt cos", "synthetic/modality_gap/text_cosine", ""),
    Column("separability", "synthetic/modality_gap/separability", "lower"),
    Column("ZS shape", "synthetic/shape/zeroshot_classification/top1", "higher"),
    Column("ZS color", "synthetic/color/zeroshot_classification/top1", "higher"),
    Column("ZS size", "synthetic/size/zeroshot_classification/top1", "higher"),
    Column("ZS position", "synthetic/position/zeroshot_classification/top1", "higher"),
    Column("I→T R@1", "synthetic/retrieval/i2t_recall@1", "higher"),
    Column("I→T R@5", "synthetic/retrieval/i2t_recall@5", "higher"),
    Column("T→I R@1", "synthetic/retrieval/t2i_recall@1", "higher"),
    Column("T→I R@10", "synthetic/retrieval/t2i_recall@10", "higher"),
    Column("STS ρ", "synthetic-sts/sts/spearman", "higher"),
    Column("LP shape", "synthetic/shape/linear_probe/top1", "higher"),
    Column("LP color", "synthetic/color/linear_probe/top1", "higher"),
    Column("collapsed", "train/collapsed", "", count=True),  # demo/curves.py: collapse_diagnosis
    Column("steps collapsed", "train/steps_collapsed", ""),
)
Rows = Mapping[str, Sequence[Mapping[str, float]]]  # method -> one flattened metrics dict per seed


REFERENCE_ROWS = {"untrained"}  # shown for context, never marked best


def summary(runs: Sequence[Mapping[str, float]], key: str) -> dict[str, float] | None:
    """mean, std (sample, ddof=1; 0 for one seed), min, max and n of `key` over the seeds that have it."""
    values = np.array([m[key] for m in runs if key in m and math.isfinite(m[key])], dtype=float)
    if not len(values):
        return None
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "min": float(values.min()), "max": float(values.max()),
            "n": float(len(values))}


def best_rows(rows: Rows, column: Column) -> set[str]:
    """Methods with the best mean (ties at the printed precision); reference rows are never marked."""
    from alignclip.evaluation.result import best_of

    means = {name: s["mean"] for name, runs in rows.items()
             if name not in REFERENCE_ROWS and (s := summary(runs, column.key)) is not None}
    return best_of(means, column.better)


def cell(runs: Sequence[Mapping[str, float]], column: Column) -> str:
    s = summary(runs, column.key)
    if s is None:
        return "-"
    if column.count:
        return f"{round(s['mean'] * s['n'])}/{int(s['n'])}"
    precision = 0 if column.key == "train/steps_collapsed" else 3
    return f"{s['mean']:.{precision}f}" + (f" ± {s['std']:.{precision}f}" if s["n"] > 1 else "")


def _columns(rows: Rows, columns: Sequence[Column] = COLUMNS) -> list[Column]:
    return [c for c in columns if any(c.key in m for runs in rows.values() for m in runs)]


def _cells(rows: Rows, mark: str, columns: Sequence[Column] = COLUMNS) -> list[list[str]]:
    columns = _columns(rows, columns)
    best = {c.key: best_rows(rows, c) for c in columns}
    table = [["method"] + [c.label for c in columns]]
    for name, runs in rows.items():
        table.append([name] + [cell(runs, c) + (mark if name in best[c.key] else "") for c in columns])
    return table


def format_console(rows: Rows, columns: Sequence[Column] = COLUMNS) -> str:
    table = _cells(rows, "*", columns)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + ("\n(mean ± std over seeds; * best trained method in its column; img-img/txt-txt "
                               "cosines near 1 = collapse; collapsed: seeds whose training ended collapsed)")


def write_tables(rows: Rows, out_dir: Path, seeds: Mapping[str, Sequence[int]],
                 columns: Sequence[Column] = COLUMNS) -> dict[str, Path]:
    """table.md (mean ± std, best in bold) and table.csv (one row per method and seed, raw values, full precision)."""
    md_rows = _cells(rows, "**", columns)
    md_rows = [[f"**{c[:-2]}**" if c.endswith("**") else c for c in row] for row in md_rows]
    lines = ["| " + " | ".join(md_rows[0]) + " |", "|" + "---|" * len(md_rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in md_rows[1:]]
    (out_dir / "table.md").write_text("\n".join(lines) + "\n")
    columns = _columns(rows, columns)
    with (out_dir / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "seed"] + [c.key for c in columns])
        for name, runs in rows.items():
            for seed, metrics in zip(seeds[name], runs):
                writer.writerow([name, seed] + [repr(metrics[c.key]) if c.key in metrics else "" for c in columns])
    return {"markdown": out_dir / "table.md", "csv": out_dir / "table.csv"}


def html_table(rows: Rows, columns: Sequence[Column] = COLUMNS) -> str:
    """The table for index.html through the reports' one table helper: best cells bold, metric keys as tooltips."""
    from alignclip.evaluation.pages import html_table as report_table

    table = _cells(rows, "\0", columns)
    best = {(r, i) for r, row in enumerate(table[1:]) for i, c in enumerate(row) if c.endswith("\0")}
    body = [[c.rstrip("\0") for c in row] for row in table[1:]]
    return report_table(table[0], body, best, [""] + [c.key for c in _columns(rows, columns)])
