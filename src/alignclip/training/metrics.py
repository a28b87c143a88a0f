"""What a run writes as it goes: metrics.jsonl (one JSON object per log step), TensorBoard events, run folders, and
the window of per-step values that one log line averages."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist

from .distributed import all_reduce, dist_ready

METRICS_FILE = "metrics.jsonl"


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
                    # heldout/... (training/heldout.py) keeps its own namespace, as open_clip's val/...
                    self.writer.add_scalar(key if "/" in key else f"train/{key}", value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()


class MetricsWindow:
    """On-device running sums of the logged values between two log lines, so a step needs no host sync on GPU, and
    the non-finite flag of those steps; `reduce` brings the means to the host in one collective."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = self.first_step = self.last_step = 0
        self._flag: torch.Tensor | None = None  # a non-finite loss in this window (GPU: unknown until synced)

    def add(self, step: int, values: Mapping[str, torch.Tensor], nonfinite: torch.Tensor | None = None) -> None:
        if self._steps == 0:
            self.first_step = step
        for name, value in values.items():
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        if nonfinite is not None:
            self._flag = nonfinite if self._flag is None else self._flag | nonfinite
        self._steps += 1
        self.last_step = step

    def reduce(self) -> tuple[dict[str, float], bool]:
        """(means of the window's values averaged over ranks, whether any rank saw a non-finite loss); resets."""
        names = sorted(self._sums)
        values = [self._sums[n] / max(1, self._steps) for n in names]
        flag = self._flag.float() if self._flag is not None else torch.zeros((), device=self.device)
        packed = torch.stack(values + [flag]).double() if values else flag.double().reshape(1)
        if dist_ready():
            dist.all_reduce(packed)
            packed[:-1] /= dist.get_world_size()
        host = packed.tolist()
        self._sums, self._steps, self._flag = {}, 0, None
        return dict(zip(names, host[:-1])), host[-1] > 0

    def nonfinite_seen(self) -> bool:
        """Bring the window's non-finite flag to the host without resetting it (every rank calls this together)."""
        if self._flag is None:
            return False
        return all_reduce([float(self._flag.item())], self.device, op="max")[0] > 0


def append_bad_samples(run_dir: Path, rank: int, step: int, bad: list[tuple[str, str]]) -> None:
    """Name every skipped sample (step, source, reason) in <run>/bad_samples.tsv, one file per rank beyond 0, so a
    user can find and fix them; appended as they come, so a killed run keeps what it saw."""
    name = "bad_samples.tsv" if rank == 0 else f"bad_samples.rank{rank}.tsv"
    with open(run_dir / name, "a", encoding="utf-8") as f:
        for source, reason in bad:
            f.write(f"{step}\t{source}\t{' '.join(str(reason).split())}\n")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl as written."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_postfix(record: dict[str, Any]) -> dict[str, str]:
    """The progress-bar summary: loss terms, temperature and the in-batch gap diagnostics."""
    names = [("loss", "loss"), ("contrastive_loss", "clip"), ("separation_loss", "sep"), ("logit_scale", "scale"),
             ("paired_cosine", "pair"), ("l2m", "l2m"), ("image_cosine", "img"),
             ("text_cosine", "txt")]
    out = {short: f"{record[key]:.3g}" for key, short in names if key in record}
    if "samples_per_second" in record:
        out["samples/s"] = f"{record['samples_per_second']:.0f}"
    return out
