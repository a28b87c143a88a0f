"""Train every demo method with the same preset, data, schedule and sample budget, for several seeds, post-train the
trained CLIP with the same extra budget in several ways, evaluate everything on the same held-out samples, and
write one report folder (a new one per run, so nothing is overwritten): table with mean ± std over seeds, training
curves, figures."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from alignclip.demo.curves import collapse_diagnosis, plot_curves, read_curves
from alignclip.demo.page import write_index, write_overview
from alignclip.demo.table import format_console, write_tables

# Per-method training overrides on top of the shared settings. Both AlignCLIP rows ramp IMSep in over the same
# steps (without it the paper's loss collapses the tiny model: README), so they differ only in the weighting.
DEMO_METHODS: dict[str, Callable[["DemoSettings", int], dict[str, Any]]] = {
    "clip": lambda s, steps: {"method": "clip"},
    "sharedclip": lambda s, steps: {"method": "sharedclip"},
    "alignclip": lambda s, steps: {"method": "alignclip", "loss.weighting": "logits",
                                   "loss.separation_warmup_steps": int(s.separation_warmup * steps)},
    "alignclip-nw": lambda s, steps: {"method": "alignclip", "loss.weighting": "negatives",
                                      "loss.separation_warmup_steps": int(s.separation_warmup * steps)},
}


def _posttrain(method: str, weighting: str | None = None) -> dict[str, Any]:
    """The `posttrain` recipe's optimizer (lower lr, short warm-up, no beta ramp) with `method` and `weighting`."""
    from alignclip.training.recipes import RECIPES

    recipe = dict(RECIPES["posttrain"], method=method)
    if weighting is None:
        recipe = {k: v for k, v in recipe.items() if not k.startswith("loss.")}
    return {**recipe, **({"loss.weighting": weighting} if weighting else {})}


# Post-training rows: the trained `clip` of the same seed, then the same extra steps as more CLIP, or as
# IMSep on the same two-tower model. Every row uses the same post-training optimizer settings.
POSTTRAIN_METHODS: dict[str, Callable[[], dict[str, Any]]] = {
    "clip+clip": lambda: _posttrain("clip"),
    "clip+imsep-nw": lambda: _posttrain("alignclip", "negatives"),
    "clip+imsep": lambda: _posttrain("alignclip", "logits"),
}
HELDOUT = "heldout"  # real-data runs: the pair file's results are renamed to this, whatever the file's name
QUICK = {"budget": 384, "batch_size": 32, "dataset_size": 384, "eval_samples": 96, "seeds": 1,
         "posttrain": ("clip+imsep-nw",)}


@dataclass
class DemoSettings:
    methods: tuple[str, ...] = tuple(DEMO_METHODS)
    posttrain: tuple[str, ...] = tuple(POSTTRAIN_METHODS)  # needs "clip" in methods
    posttrain_fraction: float = 1 / 3  # post-training steps as a fraction of the main steps
    seeds: int = 2  # training seeds seed, seed+1, ...: weights and data order; data and held-out set stay fixed
    preset: str = "tiny"
    budget: int = 25_600  # training samples per method, the same for each (200 steps of 128)
    steps: int | None = None  # overrides budget: optimizer steps per method
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 20
    dataset_size: int = 10_240  # distinct synthetic training samples: their captions are sentence-encoded once
    beta: float = 0.5  # IMSep weight for both AlignCLIP variants
    separation_warmup: float = 0.3  # both AlignCLIP rows: fraction of the steps over which beta ramps up from 0
    eval_samples: int = 1000  # held-out synthetic samples for every measure
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    out: str = "runs"
    baseline: bool = True  # also evaluate an untrained model, to show the gap that exists before training
    extra: dict[str, Any] = field(default_factory=dict)  # further training overrides ("optim.grad_clip": 1.0, ...)
    train_data: str = "synthetic"  # or your pairs (csv:/tsv:/captions:/wds:), then eval_data is required
    eval_data: str | None = None  # held-out pairs for gap + retrieval (None: the synthetic held-out set)
    zeroshot: str | None = None  # with eval_data: also zero-shot on this labelled set (fashion-mnist, classes:DIR)

    @classmethod
    def quick(cls, **kw: Any) -> "DemoSettings":
        """Under two minutes on 2 CPU cores: checks the whole pipeline, not the science."""
        return cls(**{**QUICK, **kw})

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else max(1, self.budget // self.batch_size)

    @property
    def posttrain_steps(self) -> int:
        return max(1, round(self.num_steps * self.posttrain_fraction))

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]

    def validate(self) -> "DemoSettings":
        unknown = [m for m in self.methods if m not in DEMO_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown demo method {unknown[0] if unknown else '(none given)'!r}; "
                             f"choose from {', '.join(DEMO_METHODS)}")
        unknown = [m for m in self.posttrain if m not in POSTTRAIN_METHODS]
        if unknown:
            raise ValueError(f"unknown post-training row {unknown[0]!r}; choose from {', '.join(POSTTRAIN_METHODS)}")
        if self.posttrain and "clip" not in self.methods:
            raise ValueError("post-training rows start from the demo's trained clip: add clip to the methods "
                             "(or pass --posttrain none)")
        if self.seeds < 1 or self.posttrain_fraction <= 0:
            raise ValueError(f"demo seeds must be at least 1 and posttrain_fraction positive, got {self.seeds}, "
                             f"{self.posttrain_fraction}")
        for name in ("budget", "batch_size", "dataset_size", "eval_samples"):
            if getattr(self, name) < 2:
                raise ValueError(f"demo {name} must be at least 2, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"demo steps must be at least 1, got {self.steps}")
        from alignclip.evaluation.pairs import is_pair_dataset

        if self.train_data != "synthetic" and self.eval_data is None:
            raise ValueError(f"demo on {self.train_data!r} needs held-out pairs: set eval_data (--eval-data csv:...)")
        if self.eval_data is not None and not is_pair_dataset(self.eval_data):
            raise ValueError(f"demo eval_data must be image-caption pairs (csv:, tsv:, captions:, wds:), got "
                             f"{self.eval_data!r}")
        if self.zeroshot is not None and self.eval_data is None:
            raise ValueError("demo zeroshot is for real-data runs (with eval_data); the synthetic demo has its own")
        return self

    @property
    def eval_name(self) -> str:
        """The result prefix of the held-out measures: 'synthetic', or 'heldout' for any pair file."""
        return "synthetic" if self.eval_data is None else HELDOUT

    @property
    def data_label(self) -> str:
        return "the synthetic dataset" if self.train_data == "synthetic" else self.train_data


@dataclass
class DemoResult:
    out_dir: Path
    rows: dict[str, list[dict[str, float]]]  # method -> flattened metrics, one per seed (untrained: the first only)
    table: str  # the console table


def new_demo_dir(root: str | Path) -> Path:
    """runs/demo-YYYYmmdd-HHMMSS, with a numeric suffix when that exists: a rerun never clobbers a report."""
    from alignclip.fileio import timestamp, unique_dir

    return unique_dir(root, f"demo-{timestamp()}")


def training_overrides(settings: DemoSettings, name: str, out_dir: Path, seed: int,
                       init_from: str | None = None) -> dict[str, Any]:
    """One run: a demo method from scratch, or (init_from) a post-training row, its run in out_dir/NAME/seed-S."""
    steps = settings.posttrain_steps if init_from else settings.num_steps
    data = {"data.train": "synthetic", "data.num_samples": settings.dataset_size,
            "data.synthetic_seed": settings.seed} if settings.train_data == "synthetic" else \
        {"data.train": settings.train_data}
    shared = {
        **data, "data.workers": settings.workers, "runtime.seed": seed, "runtime.device": settings.device,
        "optim.steps": steps, "optim.batch_size": settings.batch_size, "loss.beta": settings.beta,
        "logging.out": str(out_dir / name), "logging.name": f"seed-{seed}", "logging.checkpoint_every": 0,
        "logging.keep_last": 1}
    if init_from:
        return {**shared, "model.init_from": init_from, **POSTTRAIN_METHODS[name](), **settings.extra}
    return {**shared, "model.preset": settings.preset, "optim.lr": settings.lr,
            "optim.warmup_steps": settings.warmup_steps,  # the trainer fits it to the run (health.py)
            **DEMO_METHODS[name](settings, steps), **settings.extra}


def _evaluate(model: torch.nn.Module, name: str, settings: DemoSettings, run_dir: Path,
              extra: dict[str, Any]) -> dict[str, float]:
    """Every run is measured on the same held-out samples (the eval split of settings.seed, whatever the seed)."""
    from alignclip.evaluation.report import flatten_metrics, write_report
    from alignclip.evaluation.suite import dataset_name, evaluate_model

    device = next(model.parameters()).device
    if settings.eval_data is None:
        results, image_features, text_features = evaluate_model(
            model, "synthetic", num_samples=settings.eval_samples, seed=settings.seed, device=device)
    else:
        results, image_features, text_features = evaluate_model(
            model, settings.eval_data, tasks="retrieval,gap", num_samples=settings.eval_samples, device=device)
        if settings.zeroshot:
            results += evaluate_model(model, settings.zeroshot, tasks="zeroshot", num_samples=settings.eval_samples,
                                      seed=settings.seed, device=device)[0]
    write_report(run_dir / "eval", {"method": name, "results": results, **extra},
                 image_features, text_features, title=f"alignclip demo: {name}", seed=settings.seed)
    metrics = flatten_metrics(results)
    if settings.eval_data is None:
        return metrics
    prefix = dataset_name(settings.eval_data) + "/"
    return {(HELDOUT + "/" + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in metrics.items()}


def _train_and_evaluate(settings: DemoSettings, name: str, out_dir: Path, seed: int, log: Callable[[str], None],
                        init_from: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    import alignclip
    from alignclip.training import load_config, train

    log(f"demo: seed {seed}: training {name}" + (f" from {init_from}" if init_from else ""))
    config = load_config(overrides=training_overrides(settings, name, out_dir, seed, init_from))
    result = train(config)
    if result.checkpoint is None or result.stopped_by:
        raise RuntimeError(f"demo: training {name} stopped early ({result.stopped_by}); report not written")
    log(f"demo: seed {seed}: evaluating {name}")
    metrics = _evaluate(alignclip.load_checkpoint(result.checkpoint), name, settings, Path(result.run_dir),
                        {"training": result.to_dict()})
    metrics.update(collapse_diagnosis(result.run_dir, config.logging.collapse_threshold))
    return metrics, result.to_dict()


def table_columns(settings: DemoSettings) -> dict[str, Any]:
    """The table's columns for a real-data run (the held-out pairs' measures), as keyword arguments of the table
    functions; the synthetic demo uses their default columns."""
    from alignclip.demo.table import Column

    if settings.eval_data is None:
        return {}
    gap, retrieval = f"{HELDOUT}/modality_gap", f"{HELDOUT}/retrieval"
    columns = [Column("l2m", f"{gap}/l2m", "lower"), Column("paired cos", f"{gap}/paired_cosine", "higher"),
               Column("RMG", f"{gap}/rmg", "lower"), Column("img-img cos", f"{gap}/image_cosine", ""),
               Column("txt-txt cos", f"{gap}/text_cosine", ""), Column("separability", f"{gap}/separability", "lower"),
               Column("I→T R@1", f"{retrieval}/i2t_recall@1", "higher"),
               Column("I→T R@5", f"{retrieval}/i2t_recall@5", "higher"),
               Column("T→I R@1", f"{retrieval}/t2i_recall@1", "higher"),
               Column("T→I R@10", f"{retrieval}/t2i_recall@10", "higher")]
    if settings.zeroshot:
        from alignclip.evaluation.suite import dataset_name

        name = dataset_name(settings.zeroshot)
        columns.append(Column(f"ZS {name}", f"{name}/zeroshot_classification/top1", "higher"))
    columns += [Column("collapsed", "train/collapsed", "", count=True),
                Column("steps collapsed", "train/steps_collapsed", "")]
    return {"columns": tuple(columns)}


def run_demo(settings: DemoSettings, log: Callable[[str], None] = print) -> DemoResult:
    import alignclip

    settings.validate()
    out_dir = new_demo_dir(settings.out)
    log(f"demo: {', '.join(settings.methods + settings.posttrain)} on {settings.data_label}, preset "
        f"{settings.preset}, {settings.num_steps} steps x {settings.batch_size} samples each (post-training: "
        f"{settings.posttrain_steps} more), seeds {settings.seed_list} -> {out_dir}")
    rows: dict[str, list[dict[str, float]]] = {}
    training: dict[str, list[dict[str, Any]]] = {}
    started = time.time()
    if settings.baseline:
        log("demo: evaluating an untrained model (the gap before any training; first seed only)")
        untrained = alignclip.create_model(settings.preset, "clip", seed=settings.seed)
        run_dir = out_dir / "untrained" / f"seed-{settings.seed}"
        rows["untrained"] = [_evaluate(untrained, "untrained", settings, run_dir, {})]
        training["untrained"] = [{}]
    for seed in settings.seed_list:
        for name in settings.methods + settings.posttrain:
            init_from = training["clip"][-1]["checkpoint"] if name in POSTTRAIN_METHODS else None
            metrics, summary = _train_and_evaluate(settings, name, out_dir, seed, log, init_from)
            rows.setdefault(name, []).append(metrics)
            training.setdefault(name, []).append(summary)

    seeds = {name: [settings.seed] if name == "untrained" else settings.seed_list for name in rows}
    columns = table_columns(settings)
    table = format_console(rows, **columns)
    write_tables(rows, out_dir, seeds, **columns)
    curves = {name: [read_curves(t["run_dir"], settings.num_steps if name in POSTTRAIN_METHODS else 0)
                     for t in runs] for name, runs in training.items() if name != "untrained"}
    plot_curves(curves, out_dir)
    document = {"settings": asdict(settings), "elapsed_seconds": time.time() - started,
                "methods": {name: {"seeds": seeds[name], "metrics": rows[name], "training": training[name]}
                            for name in rows}}
    (out_dir / "metrics.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    first = {name: out_dir / name / f"seed-{seeds[name][0]}" / "eval" for name in rows}
    write_overview(out_dir, first, rows, settings.eval_name)
    write_index(out_dir, first, rows, settings, columns)
    log(table)
    log(f"demo: done in {time.time() - started:.0f}s; report: {out_dir / 'index.html'}")
    return DemoResult(out_dir=out_dir, rows=rows, table=table)

