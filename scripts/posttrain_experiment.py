"""Post-training methods compared from the same base models, on held-out data (docs/posttraining.md, "Results").

Per regime and seed: a tiny two-tower CLIP trained from scratch (the base), then the same number of steps from it
with each method: more CLIP (the control), `--recipe posttrain` (IMSep-NW), `posttrain-keep` (IMSep-NW + HyCD
distillation), `clip-refine` (RaFA + HyCD), IMSep with LoRA adapters and IMSep with the image tower locked; plus
two training-free transforms of the control (evaluation/transform.py, fitted on the training pairs): I0T
mean-centring and Liang's shift at the λ that is best on the training pairs. Every model is evaluated on the
regime's held-out set; paired differences against the control of the same seed, and the WiSE-FT curve (base ->
the `--wise` method) come last. Regimes: synthetic shapes; the clip-art benchmark (`alignclip demo --benchmark
clipart` builds the split); clip-art with its training set cut to 1,500 pairs (same held-out set).

Training runs in this process through alignclip.training (the same code as `alignclip train`), one thread, so
two regimes can run side by side. Finished runs, evaluations and sweeps are reused, so a killed run continues.

    nice -n 10 python scripts/posttrain_experiment.py --regime synthetic --seeds 0 1 2 --out runs/posttrain
    nice -n 10 python scripts/posttrain_experiment.py --regime clipart clipart-small --seeds 0 1 --out runs/posttrain
    python scripts/posttrain_experiment.py --regime synthetic clipart clipart-small --tables --out runs/posttrain
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from posttrain_tables import regime_tables  # noqa: E402

# name -> (recipe, overrides); every run starts from the same base checkpoint with the same steps and batch.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "clip": ("posttrain", {"method": "clip"}),  # the control: the recipe's schedule, the CLIP loss
    "posttrain": ("posttrain", {}),
    "posttrain-keep": ("posttrain-keep", {}),
    "clip-refine": ("clip-refine", {}),
    # LoRA trains far fewer weights; 5x the recipe's lr (LoRA's usual 10x would be more than the base's own)
    "lora": ("posttrain", {"adapt.lora_rank": 8, "optim.lr": 1e-3}),
    "lock-image": ("posttrain", {"adapt.lock_image": True}),
}
TRANSFORMS = ("i0t", "shift")  # applied to the control's checkpoint
SHIFT_LAMBDAS = [round(0.1 * i, 1) for i in range(11)]
WISE_ALPHAS = (0.25, 0.5, 0.75)
CLIPART = "{out}/clipart-data"  # the split `alignclip demo --benchmark clipart` builds


def regime_settings(regime: str, a: argparse.Namespace) -> dict[str, Any]:
    out = Path(a.out)
    if regime == "synthetic":
        return {"train": "synthetic", "eval": "synthetic", "num_samples": 20_480, "base_steps": a.base_steps,
                "post_steps": a.post_steps, "eval_samples": a.eval_samples}
    split = Path(CLIPART.format(out=out))
    if not (split / "train.tsv").is_file():
        from alignclip.demo.clipart import build_clipart

        build_clipart(split)
    train = split / "train.tsv"
    if regime == "clipart-small":
        train = small_split(split / "train.tsv", split / "train1500.tsv", 1500)  # beside it: relative image paths
    return {"train": f"tsv:{train}", "eval": f"tsv:{split / 'heldout.tsv'}", "num_samples": None,
            "base_steps": a.base_steps, "post_steps": a.post_steps, "eval_samples": 10_000}


def small_split(train: Path, target: Path, n: int) -> Path:
    """A fixed random `n` of the training rows (seed 0: the same cut for every seed), header kept."""
    if not target.is_file():
        with train.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        kept = sorted(random.Random(0).sample(range(1, len(rows)), n))
        with target.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows([rows[0]] + [rows[i] for i in kept])
    return target


def train_run(run: Path, steps: int, s: dict[str, Any], seed: int, recipe: str | None, overrides: dict[str, Any],
              init_from: Path | None, batch: int, timings: dict[str, float]) -> Path | None:
    """Train (or reuse) runs/<name>; the final checkpoint, or None when this build lacks the method's settings."""
    from alignclip.training import train
    from alignclip.training.recipes import RECIPES
    from alignclip.training.resolve import resolve_config

    final = run / "checkpoints" / f"step_{steps:06d}"
    if final.is_dir():
        return final
    if recipe is not None and recipe not in RECIPES:
        return None
    flags = {"data.train": s["train"], "optim.steps": steps, "optim.batch_size": batch, "runtime.seed": seed,
             "runtime.threads": 1, "runtime.device": "cpu", "data.workers": 0, "data.synthetic_seed": seed,
             "data.num_samples": s["num_samples"], "logging.out": str(run.parent), "logging.name": run.name,
             "logging.checkpoint_every": 0, "logging.keep_last": 1, "logging.tensorboard": False,
             "logging.progress": False}
    if init_from is None:
        flags.update({"method": "clip", "optim.lr": 1e-3, "optim.warmup_steps": 20})
    else:
        flags["model.init_from"] = str(init_from)
    try:
        config = resolve_config(None, recipe, {**flags, **overrides})
    except ValueError as e:  # a setting this build does not have (yet)
        print(f"skip {run.name}: {e}", flush=True)
        return None
    if run.exists():  # a run killed before its final checkpoint: start it again
        import shutil

        shutil.rmtree(run)
    t0 = time.perf_counter()
    train(config)
    timings[run.name] = time.perf_counter() - t0
    return final


def evaluate(checkpoint: Path, dataset: str, out: Path, num_samples: int, offsets: Any = None,
             extra: dict[str, Any] | None = None) -> None:
    """What `alignclip eval CHECKPOINT [--offsets FILE] --out OUT` writes as metrics.json (without its figures)."""
    if (out / "metrics.json").is_file():
        return
    import alignclip
    from alignclip.cli.evaluate import model_info
    from alignclip.evaluation.report import json_safe
    from alignclip.evaluation.suite import evaluate_model
    from alignclip.evaluation.transform import OffsetModel

    model = alignclip.load_checkpoint(checkpoint)
    if offsets is not None:
        model = OffsetModel(model, *offsets)
    results, image_features, _ = evaluate_model(model, dataset, None, num_samples)
    document = {"model": str(checkpoint), **model_info(checkpoint, model), **(extra or {}), "dataset": dataset,
                "num_samples": int(image_features.shape[0]), "results": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(json_safe(document), indent=2) + "\n")


def transforms(control: Path, s: dict[str, Any], seed: int, evals: Path) -> None:
    """I0T centring and Liang's shift of the control, both fitted on (up to 4,000) training pairs."""
    if all((evals / f"{t}-s{seed}" / "metrics.json").is_file() for t in TRANSFORMS):
        return
    import alignclip
    from alignclip.evaluation.transform import best_shift, centring_offsets, means, shift_offsets, training_features

    model = alignclip.load_checkpoint(control)
    images, texts = training_features(model, s["train"], 4000, seed)
    lam, scores = best_shift(images, texts, SHIFT_LAMBDAS)
    offsets = {"i0t": centring_offsets(*means(images, texts)), "shift": shift_offsets(*means(images, texts), lam)}
    for name in TRANSFORMS:
        info = {"transform": name, **({"shift_lambda": lam, "shift_train_r1": dict(zip(SHIFT_LAMBDAS, scores))}
                                      if name == "shift" else {})}
        evaluate(control, s["eval"], evals / f"{name}-s{seed}", s["eval_samples"], offsets[name], info)


def wise(base: Path, tuned: Path, s: dict[str, Any], seed: int, method: str, root: Path, evals: Path) -> None:
    """The WiSE-FT sweep base -> tuned (`alignclip interpolate`), each point evaluated."""
    import alignclip
    from alignclip.models.checkpoint import save_checkpoint
    from alignclip.models.interpolate import interpolate_state_dicts

    todo = [a for a in WISE_ALPHAS if not (evals / f"wise-{method}-{a:g}-s{seed}" / "metrics.json").is_file()]
    if not todo:
        return
    model, tuned_state = alignclip.load_checkpoint(base), alignclip.load_checkpoint(tuned).state_dict()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    for alpha in todo:
        model.load_state_dict(interpolate_state_dicts(base_state, tuned_state, alpha))
        path = save_checkpoint(model, root / "wise" / f"{method}-s{seed}" / f"alpha_{alpha:g}", metadata={
            "interpolation": {"base": str(base), "tuned": str(tuned), "alpha": alpha}})
        evaluate(path, s["eval"], evals / f"wise-{method}-{alpha:g}-s{seed}", s["eval_samples"])


def tradeoff(root: Path, seed: int, method: str) -> Path | None:
    """`alignclip compare` of one seed: the WiSE-FT sweep as a line (its ends are the base and the tuned model bit
    for bit, so their evaluations are reused with the sweep's bookkeeping added), every other method a point."""
    from alignclip.evaluation.compare import write_comparison

    evals = root / "evals"
    ends = {0.0: evals / f"base-s{seed}", 1.0: evals / f"{method}-s{seed}"}
    middle = evals / f"wise-{method}-{WISE_ALPHAS[0]:g}-s{seed}" / "metrics.json"
    if not middle.is_file() or not all((d / "metrics.json").is_file() for d in ends.values()):
        return None
    for alpha, source in ends.items():
        document = json.loads((source / "metrics.json").read_text())
        document["interpolation"] = {**json.loads(middle.read_text())["interpolation"], "alpha": alpha}
        target = evals / f"wise-{method}-{alpha:g}-s{seed}"
        target.mkdir(parents=True, exist_ok=True)
        (target / "metrics.json").write_text(json.dumps(document, indent=2) + "\n")
    runs = sorted(evals.glob(f"*-s{seed}"))
    runs = [r for r in runs if not r.name.startswith("wise-") or r.name.startswith(f"wise-{method}-")]
    runs = [r for r in runs if r.name not in (f"base-s{seed}", f"{method}-s{seed}")]
    return write_comparison(runs, root / f"compare-s{seed}")["index"]


def run_seed(regime: str, seed: int, a: argparse.Namespace) -> None:
    s = regime_settings(regime, a)
    root = Path(a.out) / regime
    runs, evals = root / "runs", root / "evals"
    timings_file = root / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    base = train_run(runs / f"base-s{seed}", s["base_steps"], s, seed, None, {}, None, a.batch_size, timings)
    evaluate(base, s["eval"], evals / f"base-s{seed}", s["eval_samples"])
    done = {}
    for name, (recipe, overrides) in METHODS.items():
        final = train_run(runs / f"{name}-s{seed}", s["post_steps"], s, seed, recipe, overrides, base,
                          a.batch_size, timings)
        timings_file.write_text(json.dumps(timings, indent=2) + "\n")
        if final is not None:
            evaluate(final, s["eval"], evals / f"{name}-s{seed}", s["eval_samples"])
            done[name] = final
        if name == "clip" and final is not None:
            transforms(final, s, seed, evals)
    method = a.wise if a.wise in done else "posttrain"
    if method in done:
        wise(base, done[method], s, seed, method, root, evals)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--regime", nargs="+", choices=["synthetic", "clipart", "clipart-small"], default=["synthetic"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/posttrain")
    p.add_argument("--base-steps", type=int, default=400)
    p.add_argument("--post-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-samples", type=int, default=500, help="synthetic held-out images (clip-art: all)")
    p.add_argument("--wise", default="posttrain-keep", help="the method whose WiSE-FT curve is drawn")
    p.add_argument("--tables", action="store_true", help="only print the tables of what has finished")
    a = p.parse_args()
    if not a.tables:
        import torch

        torch.set_num_threads(1)
        for seed in a.seeds:  # seed-major: an early stop still leaves whole seeds of every regime
            for regime in a.regime:
                run_seed(regime, seed, a)
                print(f"finished {regime} seed {seed}", flush=True)
    for regime in a.regime:
        print(regime_tables(Path(a.out) / regime, regime, list(METHODS) + list(TRANSFORMS), a.wise))
        figure = tradeoff(Path(a.out) / regime, min(a.seeds), a.wise)
        print(f"trade-off figure: {figure.parent / 'tradeoff.png'}" if figure else "")


if __name__ == "__main__":
    main()
