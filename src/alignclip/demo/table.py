"""The demo's comparison table: one row per method, one column per measure, the best of each column marked."""
from __future__ import annotations

import csv
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Column:
    label: str
    key: str  # a flattened metrics key (see alignclip.evaluation.report.flatten_metrics)
    better: str  # "higher", "lower" or "" (informative only: no best is marked)


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
    Column("I→T R@1", "synthetic/retrieval/text_retrieval_recall@1", "higher"),
    Column("I→T R@5", "synthetic/retrieval/text_retrieval_recall@5", "higher"),
    Column("T→I R@1", "synthetic/retrieval/image_retrieval_recall@1", "higher"),
    Column("T→I R@10", "synthetic/retrieval/image_retrieval_recall@10", "higher"),
    Column("STS ρ", "synthetic-sts/sts/spearman", "higher"),
    Column("LP shape", "synthetic/shape/linear_probe/top1", "higher"),
    Column("LP color", "synthetic/color/linear_probe/top1", "higher"),
)


REFERENCE_ROWS = {"untrained"}  # shown for context, never marked best


def best_rows(rows: Mapping[str, Mapping[str, float]], column: Column) -> set[str]:
    values = {name: m[column.key] for name, m in rows.items()
              if column.key in m and math.isfinite(m[column.key]) and name not in REFERENCE_ROWS}
    if not column.better or len(values) < 2:
        return set()
    target = (max if column.better == "higher" else min)(values.values())
    return {name for name, v in values.items() if abs(v - target) < 5e-4}  # ties at the printed precision


def _cells(rows: Mapping[str, Mapping[str, float]], mark: str) -> list[list[str]]:
    columns = [c for c in COLUMNS if any(c.key in m for m in rows.values())]
    best = {c.key: best_rows(rows, c) for c in columns}
    table = [["method"] + [c.label for c in columns]]
    for name, metrics in rows.items():
        table.append([name] + [(f"{metrics[c.key]:.3f}" + (mark if name in best[c.key] else ""))
                               if c.key in metrics else "-" for c in columns])
    return table


def format_console(rows: Mapping[str, Mapping[str, float]]) -> str:
    table = _cells(rows, "*")
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(* best trained method in its column; img-img/txt-txt cosines are informative: near 1 = collapse)"


def write_tables(rows: Mapping[str, Mapping[str, float]], out_dir: Path) -> dict[str, Path]:
    """table.md (best in bold) and table.csv (raw values, full precision)."""
    md_rows = _cells(rows, "**")
    md_rows = [[f"**{c[:-2]}**" if c.endswith("**") else c for c in row] for row in md_rows]
    lines = ["| " + " | ".join(md_rows[0]) + " |", "|" + "---|" * len(md_rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in md_rows[1:]]
    (out_dir / "table.md").write_text("\n".join(lines) + "\n")
    columns = [c for c in COLUMNS if any(c.key in m for m in rows.values())]
    with (out_dir / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method"] + [c.key for c in columns])
        for name, metrics in rows.items():
            writer.writerow([name] + [repr(metrics[c.key]) if c.key in metrics else "" for c in columns])
    return {"markdown": out_dir / "table.md", "csv": out_dir / "table.csv"}


def html_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    table = _cells(rows, "\0")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(
        f"<td><b>{html.escape(c[:-1])}</b></td>" if c.endswith("\0") else f"<td>{html.escape(c)}</td>" for c in row)
        + "</tr>" for row in table[1:])
    return f"<table><tr>{head}</tr>{body}</table>"
