"""What a run writes as it goes: metrics.jsonl (one JSON object per log step), TensorBoard events, run folders."""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def new_run_dir(out_root: str | Path, name: str | None, method: str, preset: str) -> Path:
    """A fresh run folder: `name` (must not hold a run yet), or `<timestamp>-<method>-<preset>` made unique."""
    root = Path(out_root)
    if name is not None:
        run_dir = root / name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ValueError(f"run directory {run_dir} already exists; resume it with --resume latest "
                             f"(and --set logging.name={name}), or pick another logging.name")
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{Path(preset).stem}"
    for i in range(1000):
        run_dir = root / (stem if i == 0 else f"{stem}-{i}")
        try:
            run_dir.mkdir(parents=True, exist_ok=False)  # exist_ok=False: two runs started together never share
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {root}")  # pragma: no cover


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the fact visible
    return value


class MetricsLogger:
    """Rank 0 writes; the others hold a disabled logger so the loop needs no rank checks."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.writer = None
        if not enabled:
            return
        if resume_step is not None:
            self._truncate_after(resume_step)
        self.file = open(self.path, "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError as e:  # pragma: no cover - tensorboard is a core dependency
                warnings.warn(f"TensorBoard logging disabled ({e})", RuntimeWarning, stacklevel=2)

    def _truncate_after(self, step: int) -> None:
        """Drop lines a killed run logged after its last checkpoint, so the resumed log reads as one run."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed process
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        if self.writer is not None:
            step = record["step"]
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_postfix(record: dict[str, Any]) -> dict[str, str]:
    """The progress-bar summary: loss terms, temperature and the in-batch gap diagnostics."""
    names = [("loss", "loss"), ("contrastive_loss", "clip"), ("separation_loss", "sep"), ("logit_scale", "scale"),
             ("paired_cosine", "pair"), ("centroid_distance", "gap"), ("image_cosine", "img"),
             ("text_cosine", "txt")]
    out = {short: f"{record[key]:.3g}" for key, short in names if key in record}
    if "samples_per_second" in record:
        out["samples/s"] = f"{record['samples_per_second']:.0f}"
    return out
