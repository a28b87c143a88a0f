"""docs/siglip.md "Evidence": tiny SigLIP against tiny CLIP from scratch on the clip-art benchmark, then IMSep
post-training of the SigLIP against a sigmoid-only control, all through the product (`alignclip train`, then
`alignclip eval` on the held-out pairs), over several seeds.

Per seed, from scratch with the same data, schedule and budget (STEPS x 64):
  clip            the `tiny` preset, InfoNCE
  siglip          the `tiny-siglip` preset (SigLIP's towers: MAP pooling, bidirectional text, ...), sigmoid loss
  clip-sigmoid    the `tiny` preset with the sigmoid loss: separates the loss from the architecture
Then, from that seed's siglip, STEPS/3 more steps with the `posttrain` recipe's optimizer:
  siglip+sigmoid  the sigmoid loss alone (the control)
  siglip+imsep    `--recipe posttrain`: sigmoid + IMSep, negatives weighting, beta 0.5
Prints the mean ± sd tables and the paired per-seed differences. Finished runs and evaluations are reused.

    python scripts/siglip_experiment.py --seeds 0 1 2 --steps 400 --jobs 2 --out runs/siglip-evidence
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from posttrain_tables import cell, value  # noqa: E402  (the same mean ± std cells and metric look-up)

SCRATCH = {"clip": ["--preset", "tiny"], "siglip": ["--preset", "tiny-siglip"],
           "clip-sigmoid": ["--preset", "tiny", "--loss", "sigmoid"]}
POST = {"siglip+sigmoid": ["--method", "clip"], "siglip+imsep": []}  # both on top of --recipe posttrain
COLUMNS = [("l2m", "modality_gap", "l2m"), ("separability", "modality_gap", "separability"),
           ("paired cos", "modality_gap", "paired_cosine"), ("RMG", "modality_gap", "rmg"),
           ("img-img cos", "modality_gap", "image_cosine"), ("txt-txt cos", "modality_gap", "text_cosine"),
           ("I→T R@1", "retrieval", "i2t_recall@1"), ("I→T R@5", "retrieval", "i2t_recall@5"),
           ("T→I R@1", "retrieval", "t2i_recall@1"),
           ("T→I R@10", "retrieval", "t2i_recall@10")]
DIFFERENCES = [("siglip − clip", "siglip", "clip"), ("clip-sigmoid − clip", "clip-sigmoid", "clip"),
               ("siglip+imsep − siglip+sigmoid", "siglip+imsep", "siglip+sigmoid")]


def alignclip(*args: str, log: Path) -> None:
    with open(log, "a") as f:
        subprocess.run([sys.executable, "-m", "alignclip.cli.main", *args], check=True, stdout=f,
                       stderr=subprocess.STDOUT)


def common_flags(a: argparse.Namespace, runs: Path, train: str, seed: int) -> list[str]:
    return ["--data", f"tsv:{train}", "--batch-size", "64", "--seed", str(seed), "--out", str(runs), "--workers", "1",
            "--device", "cpu", "--set", f"runtime.threads={a.threads}", "--set", "logging.checkpoint_every=0",
            "--set", "logging.keep_last=1", "--set", "logging.tensorboard=false", "--set", "logging.progress=false"]


def run_one(name: str, seed: int, a: argparse.Namespace, split) -> None:  # split: alignclip.demo.clipart.ClipartSplit
    out = Path(a.out)
    runs, evals, log = out / "runs", out / "evals", out / "logs" / f"{name}-s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    run = runs / f"{name}-s{seed}"
    steps = a.steps if name in SCRATCH else max(1, round(a.steps / 3))
    checkpoint = run / "checkpoints" / f"step_{steps:06d}"
    if not checkpoint.is_dir():
        flags = common_flags(a, runs, str(split.train), seed) + ["--steps", str(steps), "--name", run.name]
        if name in SCRATCH:
            alignclip("train", "--method", "clip", "--lr", "1e-3", "--set", "optim.warmup_steps=50", *flags,
                      *SCRATCH[name], log=log)
        else:
            alignclip("train", "--recipe", "posttrain", "--init-from", str(runs / f"siglip-s{seed}"), *flags,
                      *POST[name], log=log)
    if not (evals / run.name / "metrics.json").is_file():
        alignclip("eval", str(checkpoint), "--dataset", f"tsv:{split.heldout}", "--tasks", "retrieval,gap",
                  "--num-samples", str(a.eval_samples), "--out", str(evals / run.name), log=log)
    print(f"done: {run.name}", flush=True)


def tables(evals: Path, seeds: list[int]) -> str:
    names = [*SCRATCH, *POST]
    docs = {(n, s): json.loads((evals / f"{n}-s{s}" / "metrics.json").read_text()) for n in names for s in seeds}
    header = " | ".join(c[0] for c in COLUMNS)
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    lines = [f"| model ({len(seeds)} seeds) | {header} |", rule]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell([value(docs[name, s], c[1], None, c[2]) for s in seeds])
                                                  for c in COLUMNS) + " |")
    lines += ["", f"| paired difference ({len(seeds)} seeds) | {header} |", rule]
    for label, a, b in DIFFERENCES:
        lines.append(f"| {label} | " + " | ".join(
            cell([value(docs[a, s], c[1], None, c[2]) - value(docs[b, s], c[1], None, c[2]) for s in seeds], "+")
            for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400, help="from-scratch steps of 64; post-training: a third")
    p.add_argument("--out", default="runs/siglip-evidence")
    p.add_argument("--clipart-dir", default="runs/clipart-data", help="where the benchmark's split is (or is built)")
    p.add_argument("--eval-samples", type=int, default=10_000, help="held-out pairs evaluated (all of them)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each with --threads torch threads)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    from alignclip.demo.clipart import build_clipart

    split = build_clipart(a.clipart_dir)
    with ThreadPoolExecutor(a.jobs) as pool:  # from scratch first: the post-training rows start from siglip
        list(pool.map(lambda job: run_one(*job, a, split), [(n, s) for s in a.seeds for n in SCRATCH]))
        list(pool.map(lambda job: run_one(*job, a, split), [(n, s) for s in a.seeds for n in POST]))
    print(tables(Path(a.out) / "evals", a.seeds))


if __name__ == "__main__":
    main()
