"""Train every demo method with the same preset, data, seed, schedule and sample budget, evaluate all of them on
the same held-out samples, and write one report folder (a new one per run, so nothing is overwritten)."""
from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

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
QUICK = {"budget": 384, "batch_size": 32, "dataset_size": 384, "eval_samples": 96}


@dataclass
class DemoSettings:
    methods: tuple[str, ...] = tuple(DEMO_METHODS)
    preset: str = "tiny"
    budget: int = 92_160  # training samples per method, the same for each (360 steps of 256)
    steps: int | None = None  # overrides budget: optimizer steps per method
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 20
    dataset_size: int = 20_480  # distinct synthetic training samples: their captions are sentence-encoded once
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

    def validate(self) -> "DemoSettings":
        unknown = [m for m in self.methods if m not in DEMO_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown demo method {unknown[0] if unknown else '(none given)'!r}; "
                             f"choose from {', '.join(DEMO_METHODS)}")
        for name in ("budget", "batch_size", "dataset_size", "eval_samples"):
            if getattr(self, name) < 2:
                raise ValueError(f"demo {name} must be at least 2, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"demo steps must be at least 1, got {self.steps}")
        return self


@dataclass
class DemoResult:
    out_dir: Path
    rows: dict[str, dict[str, float]]  # method -> flattened metrics
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


def training_overrides(settings: DemoSettings, name: str, out_dir: Path) -> dict[str, Any]:
    steps = settings.num_steps
    return {
        "model.preset": settings.preset, "data.train": "synthetic", "data.num_samples": settings.dataset_size,
        "data.synthetic_seed": settings.seed, "data.workers": settings.workers, "runtime.seed": settings.seed,
        "runtime.device": settings.device, "optim.steps": steps, "optim.batch_size": settings.batch_size,
        "optim.lr": settings.lr, "optim.warmup_steps": min(settings.warmup_steps, max(0, steps // 5)),
        "loss.beta": settings.beta, "logging.out": str(out_dir), "logging.name": name,
        "logging.checkpoint_every": 0, "logging.keep_last": 1,
        **DEMO_METHODS[name](settings, steps), **settings.extra,
    }


def _evaluate(model: torch.nn.Module, name: str, settings: DemoSettings, out_dir: Path,
              extra: dict[str, Any]) -> dict[str, float]:
    from alignclip.evaluation.report import flatten_metrics, write_report
    from alignclip.evaluation.suite import evaluate_model

    device = next(model.parameters()).device
    results, image_features, text_features = evaluate_model(
        model, "synthetic", num_samples=settings.eval_samples, seed=settings.seed, device=device)
    write_report(out_dir / name / "eval", {"method": name, "results": results, **extra},
                 image_features, text_features, title=f"alignclip demo: {name}", seed=settings.seed)
    return flatten_metrics(results)


def run_demo(settings: DemoSettings, log: Callable[[str], None] = print) -> DemoResult:
    import alignclip
    from alignclip.training import load_config, train

    settings.validate()
    out_dir = new_demo_dir(settings.out)
    log(f"demo: {', '.join(settings.methods)} on the synthetic dataset, preset {settings.preset}, "
        f"{settings.num_steps} steps x {settings.batch_size} samples each -> {out_dir}")
    rows: dict[str, dict[str, float]] = {}
    training: dict[str, dict[str, Any]] = {}
    started = time.time()
    if settings.baseline:
        log("demo: evaluating an untrained model (the gap before any training)")
        untrained = alignclip.create_model(settings.preset, "clip", seed=settings.seed)
        rows["untrained"] = _evaluate(untrained, "untrained", settings, out_dir, {})
    for name in settings.methods:
        log(f"demo: training {name}")
        result = train(load_config(overrides=training_overrides(settings, name, out_dir)))
        if result.checkpoint is None or result.stopped_by:
            raise RuntimeError(f"demo: training {name} stopped early ({result.stopped_by}); report not written")
        training[name] = result.to_dict()
        log(f"demo: evaluating {name}")
        model = alignclip.load_checkpoint(result.checkpoint)
        rows[name] = _evaluate(model, name, settings, out_dir, {"training": training[name]})

    table = format_console(rows)
    write_tables(rows, out_dir)
    document = {"settings": asdict(settings), "elapsed_seconds": time.time() - started,
                "methods": {name: {"metrics": metrics, "training": training.get(name)}
                            for name, metrics in rows.items()}}
    (out_dir / "metrics.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    _write_overview(out_dir, list(rows), rows)
    _write_index(out_dir, rows, settings)
    log(table)
    log(f"demo: done in {time.time() - started:.0f}s; report: {out_dir / 'index.html'}")
    return DemoResult(out_dir=out_dir, rows=rows, table=table)


def _write_overview(out_dir: Path, names: list[str], rows: dict[str, dict[str, float]]) -> None:
    """overview.png: every method's 2-D projection in one picture, each titled with its l2m."""
    from PIL import Image, ImageDraw

    paths = [out_dir / n / "eval" / "projection.png" for n in names]
    if not all(p.is_file() for p in paths):
        return
    tiles = [Image.open(p).convert("RGB") for p in paths]
    tiles = [t.resize((t.width // 2, t.height // 2), Image.LANCZOS) for t in tiles]
    columns, (width, height), title = min(3, len(tiles)), tiles[0].size, 24
    canvas = Image.new("RGB", (width * columns, (height + title) * -(-len(tiles) // columns)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, tile) in enumerate(zip(names, tiles)):
        x, y = (i % columns) * width, (i // columns) * (height + title)
        l2m = rows[name].get("synthetic/modality_gap/l2m", float("nan"))
        draw.text((x + 10, y + 6), f"{name}: l2m {l2m:.3f}", fill="black")
        canvas.paste(tile, (x, y + title))
    canvas.save(out_dir / "overview.png", optimize=True)


def _write_index(out_dir: Path, rows: dict[str, dict[str, float]], settings: DemoSettings) -> None:
    from alignclip.evaluation.report import FIGURES, html_page

    names = list(rows)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    figure_rows = "".join(
        f"<tr><td>{kind}</td>" + "".join(
            f"<td><img src=\"{html.escape(n)}/eval/{file}\" alt=\"{kind} {html.escape(n)}\"></td>"
            if (out_dir / n / "eval" / file).is_file() else "<td></td>" for n in names) + "</tr>"
        for kind, file in FIGURES.items() if any((out_dir / n / "eval" / file).is_file() for n in names))
    body = (f"<p>Preset <code>{html.escape(settings.preset)}</code>, {settings.num_steps} steps × "
            f"{settings.batch_size} samples per method, seed {settings.seed}, {settings.eval_samples} held-out "
            "samples. Bold: best trained method in its column. Files: <a href=\"table.md\">table.md</a>, "
            "<a href=\"table.csv\">table.csv</a>, <a href=\"metrics.json\">metrics.json</a>; each method's own "
            "report is in its folder (<code>METHOD/eval/index.html</code>).</p>\n"
            f"<h2>Comparison</h2>{html_table(rows)}\n<h2>Overview</h2><img src=\"overview.png\" "
            "alt=\"2-D projections of every method\">\n"
            f"<h2>Figures</h2><table><tr><th></th>{head}</tr>{figure_rows}</table>")
    (out_dir / "index.html").write_text(html_page("alignclip demo: CLIP vs SharedCLIP vs AlignCLIP", body))
