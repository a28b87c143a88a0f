"""What a training run hands back (TrainResult) and how it stops on NaN/inf (NonFiniteLossError)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class NonFiniteLossError(RuntimeError):
    """The loss or the weights became NaN/inf: training stops, the last good checkpoint is kept, none is written.
    `step`: the first optimizer step (0-based) at which the loss may have been non-finite (None: the weights)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class TrainResult:
    run_dir: str
    checkpoint: str | None  # the checkpoint written last (the final one unless stopped by a signal)
    steps: int  # optimizer steps done in total (including those before a resume)
    samples: int  # samples trained on in total
    elapsed_seconds: float  # wall time of this invocation
    samples_per_second: float  # over this invocation
    skipped_samples: int  # unreadable samples dropped (all ranks)
    final_loss: float | None
    final_metrics: dict[str, float] = field(default_factory=dict)
    stopped_by: str | None = None  # "SIGTERM" / "SIGINT" when a signal ended the run early
    semantic_encoded: int = 0  # captions that ran through the sentence model in this invocation (rank 0)
    total_steps: int = 0  # the run's planned optimizer steps
    warmup_steps: int = 0  # the lr warm-up used: optim.warmup_steps, fitted to the run (training/health.py)
    warnings: list[str] = field(default_factory=list)  # run-length and collapse warnings printed (rank 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summary_lines(result: TrainResult, start_step: int) -> list[str]:
    """What a run prints when it ends."""
    lines = [f"{'stopped by ' + result.stopped_by if result.stopped_by else 'done'}: "
             f"{result.steps - start_step} steps in {result.elapsed_seconds:.1f}s "
             f"({result.samples_per_second:.1f} samples/s), step {result.steps}/{result.total_steps}",
             f"  final loss {result.final_loss:.4f}" if result.final_loss is not None else "  no loss logged",
             f"  skipped samples: {result.skipped_samples}" + (
                 f" (named in {Path(result.run_dir) / 'bad_samples.tsv'})" if result.skipped_samples else ""),
             f"  checkpoint: {result.checkpoint}"]
    if result.stopped_by:
        lines.append(f"  resume with: alignclip train --resume {result.run_dir}")
    return lines
