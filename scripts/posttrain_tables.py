"""The tables of scripts/posttrain_experiment.py: mean ± sd per method, paired differences against the control with
the targets checked, the WiSE-FT curve, and what each run cost. Reads only the evaluations' metrics.json files."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

# (label, task, dataset or None for any, metric, kind): "gap" columns are the gap measures, "acc" the scores the
# target says must not fall (zero-shot, retrieval, STS, linear probe).
_ATTRS = ("shape", "color", "size", "position")
COLUMNS: dict[str, list[tuple[str, str, str | None, str, str]]] = {
    "synthetic": [("l2m", "modality_gap", None, "l2m", "gap"),
                  ("separability", "modality_gap", None, "separability", "gap")]
    + [(f"ZS {a}", "zeroshot_classification", f"synthetic/{a}", "top1", "acc") for a in _ATTRS]
    + [("I→T R@1", "retrieval", None, "i2t_recall@1", "acc"),
       ("T→I R@1", "retrieval", None, "t2i_recall@1", "acc"), ("STS ρ", "sts", None, "spearman", "acc")]
    + [(f"LP {a}", "linear_probe", f"synthetic/{a}", "top1", "acc") for a in _ATTRS],
    "clipart": [("l2m", "modality_gap", None, "l2m", "gap"),
                ("separability", "modality_gap", None, "separability", "gap"),
                ("I→T R@1", "retrieval", None, "i2t_recall@1", "acc"),
                ("T→I R@1", "retrieval", None, "t2i_recall@1", "acc"),
                ("I→T R@5", "retrieval", None, "i2t_recall@5", "acc"),
                ("T→I R@5", "retrieval", None, "t2i_recall@5", "acc")],
}
COLUMNS["clipart-small"] = COLUMNS["clipart"]
LABELS = {"base": "base (CLIP from scratch)", "clip": "+CLIP (control)", "posttrain": "posttrain (IMSep-NW)",
          "posttrain-keep": "posttrain-keep (IMSep-NW + HyCD)", "clip-refine": "clip-refine (RaFA + HyCD)",
          "lora": "IMSep + LoRA r8", "lock-image": "IMSep, image tower locked",
          "i0t": "control + I0T centring", "shift": "control + Liang shift"}
CONTROL = "clip"


def value(document: dict[str, Any], task: str, dataset: str | None, key: str) -> float:
    return next(r["metrics"][key] for r in document["results"]
                if r["task"] == task and (dataset is None or r["dataset"] == dataset) and key in r["metrics"])


def load(evals: Path, names: list[str]) -> tuple[dict[tuple[str, int], dict], list[int]]:
    """{(name, seed): metrics.json} and the seeds whose control is evaluated."""
    docs = {}
    for path in sorted(evals.glob("*-s*/metrics.json")):
        name, _, seed = path.parent.name.rpartition("-s")
        docs[name, int(seed)] = json.loads(path.read_text())
    return docs, sorted(s for n, s in docs if n == CONTROL)


def cell(values: list[float], sign: str = "") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):{sign}.3f} ± {sd:.3f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def accuracy(document: dict[str, Any]) -> float:
    from alignclip.evaluation.result import EvalResult
    from alignclip.evaluation.tradeoff import accuracy as tradeoff_accuracy

    return tradeoff_accuracy([EvalResult.from_dict(r) for r in document["results"]])[0]  # type: ignore[index]


def regime_tables(root: Path, regime: str, names: list[str], wise_method: str) -> str:
    docs, seeds = load(root / "evals", names)
    columns = COLUMNS[regime]
    if not seeds:
        return f"## {regime}: nothing evaluated yet under {root}"
    got = lambda n: [s for s in seeds if (n, s) in docs]  # noqa: E731
    col = lambda n, c, s: value(docs[n, s], *c[1:4])  # noqa: E731
    lines = [f"## {regime} (held-out; seeds {', '.join(map(str, seeds))})", ""]
    rows = [[f"{LABELS[n]} ({len(got(n))})"] + [cell([col(n, c, s) for s in got(n)]) for c in columns]
            for n in ["base"] + names if got(n)]
    lines += table(["model (seeds)"] + [c[0] for c in columns], rows) + [""]
    acc = [c for c in columns if c[4] == "acc"]
    rows = []
    for n in names:
        paired = [s for s in got(n) if s in seeds]
        if n == CONTROL or not paired:
            continue
        diffs = [[col(n, c, s) - col(CONTROL, c, s) for s in paired] for c in columns]
        ratio = [col(n, columns[0], s) / col(CONTROL, columns[0], s) for s in paired]
        worst = min(statistics.mean(d) for c, d in zip(columns, diffs) if c[4] == "acc")
        met = "yes" if statistics.mean(ratio) <= 1 / 3 and worst >= -0.005 else "no"
        rows.append([f"{LABELS[n]} − control ({len(paired)})"] + [cell(d, "+") for d in diffs]
                    + [cell(ratio), f"{worst:+.3f}", met])
    lines += table(["difference (seeds)"] + [c[0] for c in columns]
                   + ["l2m / control", f"worst mean acc Δ (of {len(acc)})", "target met"], rows) + [""]
    lines += lora_line(docs, got, col, columns, root) + wise_table(docs, seeds, wise_method, columns)
    lines += shift_line(docs, got) + timing_line(root)
    return "\n".join(lines)


def lora_line(docs: dict, got: Callable, col: Callable, columns: list, root: Path) -> list[str]:
    """LoRA's share of the full model's held-out l2m reduction, seed by seed, and its trainable fraction."""
    paired = [s for s in got("lora") if s in got("posttrain")]
    if not paired:
        return []
    share = [(col(CONTROL, columns[0], s) - col("lora", columns[0], s))
             / (col(CONTROL, columns[0], s) - col("posttrain", columns[0], s)) for s in paired]
    fraction = trainable_fraction(root / "runs" / f"lora-s{paired[0]}")
    return [f"LoRA: {cell(share)} of posttrain's held-out l2m reduction over the control ({len(paired)} seeds); "
            f"trainable parameters {fraction}", ""]


def trainable_fraction(run: Path) -> str:
    """Counted as the run counted them: its base model with the run's adapt settings applied."""
    import yaml

    import alignclip
    from alignclip.models.adapt import adapt_model, parameter_counts
    from alignclip.training.resolve import from_dict

    config = from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    model = alignclip.load_checkpoint(config.model.init_from)
    adapt_model(model, config.adapt)
    trainable, total = parameter_counts(model)
    return f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"


def wise_table(docs: dict, seeds: list[int], method: str, columns: list) -> list[str]:
    points = [("0 (base)", "base")] + [(f"{a:g}", f"wise-{method}-{a:g}") for a in (0.25, 0.5, 0.75)] \
        + [(f"1 ({method})", method)]
    paired = [s for s in seeds if all((n, s) in docs for _, n in points)]
    if not paired:
        return []
    rows = []
    for alpha, name in points:
        l2m = [value(docs[name, s], *columns[0][1:4]) for s in paired]
        acc = [accuracy(docs[name, s]) for s in paired]
        rows.append([alpha, cell(l2m), cell(acc), cell([a - accuracy(docs[CONTROL, s]) for a, s in zip(acc, paired)],
                                                      "+")])
    kind = "mean zero-shot top-1" if "ZS shape" in [c[0] for c in columns] else "mean retrieval R@1"
    return [f"WiSE-FT, base -> {method} ({len(paired)} seeds; accuracy = {kind}):", ""] + table(
        ["alpha", "l2m", "accuracy", "accuracy − control"], rows) + [""]


def shift_line(docs: dict, got: Callable) -> list[str]:
    lams = [docs["shift", s].get("shift_lambda") for s in got("shift")]
    return [f"Liang shift: λ chosen on the training pairs, per seed: {lams}", ""] if lams else []


def timing_line(root: Path) -> list[str]:
    path = root / "timings.json"
    if not path.is_file():
        return []
    times: dict[str, list[float]] = {}
    for run, seconds in json.loads(path.read_text()).items():
        times.setdefault(run.rpartition("-s")[0], []).append(seconds)
    return ["Wall seconds per run (mean, shared 2-core machine): " + ", ".join(
        f"{n} {statistics.mean(v):.0f}" for n, v in times.items()), ""]
