"""Train every demo method with the same preset, data, schedule and sample budget, for several seeds, post-train the
trained CLIP with the same extra budget in several ways, evaluate everything on the same held-out samples, and
write one report folder (a new one per run, so nothing is overwritten): table with mean ± std over seeds, training
curves, figures."""
from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from alignclip.demo.curves import QUANTITIES, collapse_diagnosis, plot_curves, read_curves
from alignclip.demo.table import format_console, html_table, write_tables

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
    from alignclip.training.config import RECIPES

    recipe = dict(RECIPES["posttrain"], method=method)
    if weighting is None:
        recipe = {k: v for k, v in recipe.items() if not k.startswith("loss.")}
    return {**recipe, **({"loss.weighting": weighting} if weighting else {})}


# Post-training rows (issue 8): the trained `clip` of the same seed, then the same extra steps as more CLIP, or as
# IMSep on the same two-tower model. Every row uses the same post-training optimizer settings.
POSTTRAIN_METHODS: dict[str, Callable[[], dict[str, Any]]] = {
    "clip+clip": lambda: _posttrain("clip"),
    "clip+imsep-nw": lambda: _posttrain("alignclip", "negatives"),
    "clip+imsep": lambda: _posttrain("alignclip", "logits"),
}
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
        return self


@dataclass
class DemoResult:
    out_dir: Path
    rows: dict[str, list[dict[str, float]]]  # method -> flattened metrics, one per seed (untrained: the first only)
    table: str  # the console table


def new_demo_dir(root: str | Path) -> Path:
    """runs/demo-YYYYmmdd-HHMMSS, with a numeric suffix when that exists: a rerun never clobbers a report."""
    base = Path(root) / time.strftime("demo-%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


def training_overrides(settings: DemoSettings, name: str, out_dir: Path, seed: int,
                       init_from: str | None = None) -> dict[str, Any]:
    """One run: a demo method from scratch, or (init_from) a post-training row, its run in out_dir/NAME/seed-S."""
    steps = settings.posttrain_steps if init_from else settings.num_steps
    shared = {
        "data.train": "synthetic", "data.num_samples": settings.dataset_size, "data.synthetic_seed": settings.seed,
        "data.workers": settings.workers, "runtime.seed": seed, "runtime.device": settings.device,
        "optim.steps": steps, "optim.batch_size": settings.batch_size, "loss.beta": settings.beta,
        "logging.out": str(out_dir / name), "logging.name": f"seed-{seed}", "logging.checkpoint_every": 0,
        "logging.keep_last": 1}
    if init_from:
        return {**shared, "model.init_from": init_from, **POSTTRAIN_METHODS[name](), **settings.extra}
    return {**shared, "model.preset": settings.preset, "optim.lr": settings.lr,
            "optim.warmup_steps": min(settings.warmup_steps, max(0, steps // 5)),
            **DEMO_METHODS[name](settings, steps), **settings.extra}


def _evaluate(model: torch.nn.Module, name: str, settings: DemoSettings, run_dir: Path,
              extra: dict[str, Any]) -> dict[str, float]:
    """Every run is measured on the same held-out samples (the eval split of settings.seed, whatever the seed)."""
    from alignclip.evaluation.report import flatten_metrics, write_report
    from alignclip.evaluation.suite import evaluate_model

    device = next(model.parameters()).device
    results, image_features, text_features = evaluate_model(
        model, "synthetic", num_samples=settings.eval_samples, seed=settings.seed, device=device)
    write_report(run_dir / "eval", {"method": name, "results": results, **extra},
                 image_features, text_features, title=f"alignclip demo: {name}", seed=settings.seed)
    return flatten_metrics(results)


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
    return metrics, {**result.to_dict(), "alpha": config.loss.alpha if config.method == "alignclip" else None}


def run_demo(settings: DemoSettings, log: Callable[[str], None] = print) -> DemoResult:
    import alignclip

    settings.validate()
    out_dir = new_demo_dir(settings.out)
    log(f"demo: {', '.join(settings.methods + settings.posttrain)} on the synthetic dataset, preset "
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
    table = format_console(rows)
    write_tables(rows, out_dir, seeds)
    curves = {name: [read_curves(t["run_dir"], t["alpha"], settings.num_steps if name in POSTTRAIN_METHODS else 0)
                     for t in runs] for name, runs in training.items() if name != "untrained"}
    plot_curves(curves, out_dir)
    document = {"settings": asdict(settings), "elapsed_seconds": time.time() - started,
                "methods": {name: {"seeds": seeds[name], "metrics": rows[name], "training": training[name]}
                            for name in rows}}
    (out_dir / "metrics.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    first = {name: out_dir / name / f"seed-{seeds[name][0]}" / "eval" for name in rows}
    _write_overview(out_dir, first, rows)
    _write_index(out_dir, first, rows, settings)
    log(table)
    log(f"demo: done in {time.time() - started:.0f}s; report: {out_dir / 'index.html'}")
    return DemoResult(out_dir=out_dir, rows=rows, table=table)


def _write_overview(out_dir: Path, evals: dict[str, Path], rows: dict[str, list[dict[str, float]]]) -> None:
    """overview.png: every method's 2-D projection (first seed) in one picture, each titled with its l2m."""
    from PIL import Image, ImageDraw

    names = list(evals)
    paths = [evals[n] / "projection.png" for n in names]
    if not all(p.is_file() for p in paths):
        return
    tiles = [Image.open(p).convert("RGB") for p in paths]
    tiles = [t.resize((t.width // 2, t.height // 2), Image.LANCZOS) for t in tiles]
    columns, (width, height), title = min(3, len(tiles)), tiles[0].size, 24
    canvas = Image.new("RGB", (width * columns, (height + title) * -(-len(tiles) // columns)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, tile) in enumerate(zip(names, tiles)):
        x, y = (i % columns) * width, (i // columns) * (height + title)
        l2m = rows[name][0].get("synthetic/modality_gap/l2m", float("nan"))
        draw.text((x + 10, y + 6), f"{name}: l2m {l2m:.3f}", fill="black")
        canvas.paste(tile, (x, y + title))
    canvas.save(out_dir / "overview.png", optimize=True)


def _write_index(out_dir: Path, evals: dict[str, Path], rows: dict[str, list[dict[str, float]]],
                 settings: DemoSettings) -> None:
    from alignclip.evaluation.report import FIGURES, html_page

    names = list(rows)
    links = {n: html.escape(evals[n].relative_to(out_dir).as_posix()) for n in names}
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    figure_rows = "".join(
        f"<tr><td>{kind}</td>" + "".join(
            f"<td><img src=\"{links[n]}/{file}\" alt=\"{kind} {html.escape(n)}\"></td>"
            if (evals[n] / file).is_file() else "<td></td>" for n in names) + "</tr>"
        for kind, file in FIGURES.items() if any((evals[n] / file).is_file() for n in names))
    curves = "".join(f"<img src=\"{file}\" alt=\"{html.escape(label)}\">"
                     for _, file, label in QUANTITIES if (out_dir / file).is_file())
    body = (f"<p>Preset <code>{html.escape(settings.preset)}</code>, {settings.num_steps} steps × "
            f"{settings.batch_size} samples per method (post-training rows: {settings.posttrain_steps} more steps "
            f"from the same seed's trained clip), seeds {settings.seed_list} (weights and data order), the same "
            f"{settings.eval_samples} held-out samples for every run. Cells: mean ± sample std over seeds. Bold: "
            "best trained method in its column. Collapsed: seeds whose mean intra-modal cosine ended above the "
            "collapse threshold. Files: <a href=\"table.md\">table.md</a>, <a href=\"table.csv\">table.csv</a> "
            "(every seed), <a href=\"metrics.json\">metrics.json</a>; each run's own report is in "
            "<code>METHOD/seed-S/eval/index.html</code>.</p>\n"
            f"<h2>Comparison</h2>{html_table(rows)}\n<h2>Training curves</h2>{curves}\n"
            "<h2>Overview (first seed)</h2><img src=\"overview.png\" alt=\"2-D projections of every method\">\n"
            f"<h2>Figures (first seed)</h2><table><tr><th></th>{head}</tr>{figure_rows}</table>")
    (out_dir / "index.html").write_text(html_page("alignclip demo: CLIP vs SharedCLIP vs AlignCLIP", body))
