"""Reproduce README "Close the gap of the CLIP you already have": post-training a trained two-tower CLIP, through
the product (`alignclip train --init-from`, then `alignclip eval`), over several seeds.

Per seed: a tiny CLIP trained 360 steps of 128 (the demo's settings at batch 128), then 120 more steps from it as
plain CLIP, as IMSep with the negatives weighting (`--recipe posttrain`) and with the paper's weighting; every model
evaluated on the same held-out synthetic samples. Prints the mean ± sd table and the paired differences from the
plain-CLIP control. About 5 minutes per seed on 2 CPU cores; finished runs and evaluations are reused.

    python scripts/posttrain_experiment.py --seeds 0 1 2 3 4 --out runs/posttrain
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS = {"base": "base: CLIP, {base} steps", "post-clip": "+{post} CLIP steps",
            "post-nw": "+{post} IMSep steps, negatives (recipe)", "post-logits": "+{post} IMSep steps, logits (paper)"}
POST_FLAGS = {"post-clip": ["--method", "clip"], "post-nw": [], "post-logits": ["--set", "loss.weighting=logits"]}
COLUMNS = [("l2m", "synthetic", "modality_gap", "l2m"), ("separability", "synthetic", "modality_gap", "separability"),
           ("paired cos", "synthetic", "modality_gap", "paired_cosine"),
           ("img-img cos", "synthetic", "modality_gap", "image_cosine"),
           ("txt-txt cos", "synthetic", "modality_gap", "text_cosine"),
           ("I→T R@1", "synthetic", "retrieval", "i2t_recall@1"),
           ("T→I R@1", "synthetic", "retrieval", "t2i_recall@1"),
           ("ZS shape", "synthetic/shape", "zeroshot_classification", "top1"),
           ("ZS color", "synthetic/color", "zeroshot_classification", "top1"),
           ("ZS size", "synthetic/size", "zeroshot_classification", "top1"),
           ("ZS position", "synthetic/position", "zeroshot_classification", "top1"),
           ("STS ρ", "synthetic-sts", "sts", "spearman")]


def alignclip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "alignclip.cli.main", *args], check=True)


def run_seed(seed: int, a: argparse.Namespace) -> None:
    runs, evals = Path(a.out) / "runs", Path(a.out) / "evals"
    common = ["--batch-size", "128", "--seed", str(seed), "--out", str(runs), "--set", f"data.synthetic_seed={seed}",
              "--set", f"data.num_samples={a.num_samples}", "--set", "data.workers=1", "--set",
              f"runtime.threads={a.threads}", "--set", "logging.checkpoint_every=0", "--set", "logging.keep_last=1",
              "--set", "logging.tensorboard=false"]
    for name in VARIANTS:
        run = runs / f"{name}-s{seed}"
        steps = a.base_steps if name == "base" else a.post_steps
        if not (run / "checkpoints" / f"step_{steps:06d}").is_dir():
            if name == "base":
                alignclip("train", "--method", "clip", "--steps", str(steps), "--lr", "1e-3", "--set",
                          "optim.warmup_steps=20", "--name", run.name, *common)
            else:
                alignclip("train", "--recipe", "posttrain", "--init-from", str(runs / f"base-s{seed}"), "--steps",
                          str(steps), "--name", run.name, *common, *POST_FLAGS[name])
        if not (evals / run.name / "metrics.json").is_file():
            alignclip("eval", str(run / "checkpoints" / f"step_{steps:06d}"), "--out", str(evals / run.name),
                      "--num-samples", str(a.eval_samples))


def value(document: dict, dataset: str, task: str, key: str) -> float:
    return next(r["metrics"][key] for r in document["results"] if r["dataset"] == dataset and r["task"] == task)


def tables(evals: Path, seeds: list[int], base: int = 360, post: int = 120) -> str:
    docs = {(n, s): json.loads((evals / f"{n}-s{s}" / "metrics.json").read_text()) for n in VARIANTS for s in seeds}
    header = " | ".join(c[0] for c in COLUMNS)

    def cell(values: list[float], sign: str = "") -> str:
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):{sign}.3f} ± {sd:.3f}"

    lines = [f"| model (seeds) | {header} |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, label in VARIANTS.items():
        lines.append(f"| {label.format(base=base, post=post)} ({len(seeds)}) | " + " | ".join(
            cell([value(docs[name, s], *c[1:]) for s in seeds]) for c in COLUMNS) + " |")
    lines += ["", f"| difference (seeds) | {header} |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, label in (("post-nw", "IMSep negatives − CLIP"), ("post-logits", "IMSep logits − CLIP")):
        lines.append(f"| {label} ({len(seeds)}) | " + " | ".join(cell(
            [value(docs[name, s], *c[1:]) - value(docs["post-clip", s], *c[1:]) for s in seeds], "+")
            for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/posttrain")
    p.add_argument("--base-steps", type=int, default=360)
    p.add_argument("--post-steps", type=int, default=120)
    p.add_argument("--num-samples", type=int, default=20_480, help="distinct synthetic training samples")
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1 is fastest on a busy machine)")
    a = p.parse_args()
    for seed in a.seeds:
        run_seed(seed, a)
    print(tables(Path(a.out) / "evals", a.seeds, a.base_steps, a.post_steps))


if __name__ == "__main__":
    main()
