"""Is this run set up to learn, and is it learning? A warm-up fitted to the run's length, a warning when a run is too
short to learn from scratch, and a collapse warning that fires on a trend after warm-up, with advice that fits it.

The thresholds and why:
- WARMUP_MAX_FRACTION: a linear warm-up spends half its steps' worth of learning rate; past a fifth of the run the
  schedule is mostly ramp (the default 50 warm-up steps on a 48-step run never reach optim.lr at all). The demo
  used to cap its own warm-up at steps // 5; it now leaves that to this rule, so its runs are unchanged.
- SHORT_RUN_STEPS: measured by benchmarks/short_runs.py with the demo's tiny CLIP (batch 128, lr 1e-3, held-out
  zero-shot colour top-1, chance 0.125, seeds 0/1): 48 steps gave 0.19 / 0.45 (one seed near chance), 100 steps
  0.84 / 0.90, 200 steps 0.93 / 0.94. Below 100 steps learning is a coin toss. Post-training (model.init_from)
  starts from a trained model, so it is exempt (the demo post-trains in 67 steps).
- Collapse: an untrained tower starts with intra-modal cosines near 1 (README: 0.99), and healthy runs fall from
  there (0.94 at step 50, 0.02 at the end). Only a window of COLLAPSE_WINDOW logged values after the warm-ups (lr,
  and AlignCLIP's beta ramp), every one above the threshold and together not falling by COLLAPSE_MIN_DROP, is one.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

WARMUP_MAX_FRACTION = 0.2
SHORT_RUN_STEPS = 100
COLLAPSE_WINDOW = 5  # logged values (log lines), not steps
COLLAPSE_MIN_DROP = 0.01  # a fitted fall of the cosine smaller than this over the window is "not falling"
LOSS_MIN_DROP = 0.01  # a fitted fall of the contrastive loss, relative to its level, smaller than this is "stalled"


def fitted_warmup(warmup_steps: int, total_steps: int) -> int:
    """optim.warmup_steps, cut to a fifth of the run (at least 1) when longer."""
    cap = max(1, int(total_steps * WARMUP_MAX_FRACTION))
    return min(warmup_steps, cap)


def run_length_notes(warmup_steps: int, total_steps: int, batch_size: int, from_scratch: bool) -> list[str]:
    """The lines to print before training: a shortened warm-up, and a run too short to learn."""
    notes = []
    fitted = fitted_warmup(warmup_steps, total_steps)
    if fitted != warmup_steps:
        notes.append(f"note: optim.warmup_steps={warmup_steps} is more than {WARMUP_MAX_FRACTION:.0%} of this run's "
                     f"{total_steps} steps: warming up over {fitted} steps instead")
    if from_scratch and total_steps < SHORT_RUN_STEPS:
        notes.append(f"warning: only {total_steps} optimizer steps (of {batch_size} samples): from scratch that is "
                     f"likely too short to learn (fewer than {SHORT_RUN_STEPS}: the tiny preset at 48 steps stayed near "
                     "chance on one of two seeds); give it more steps: raise optim.epochs or optim.steps, or lower optim.batch_size")
    return notes


def slope(values: Sequence[float]) -> float:
    """Least-squares slope per index (per logged value)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


def collapse_trend(cosines: Sequence[float], threshold: float, window: int = COLLAPSE_WINDOW) -> bool:
    """The last `window` values all above `threshold` and, fitted by a line, not falling by COLLAPSE_MIN_DROP."""
    last = list(cosines)[-window:]
    return (len(last) == window and min(last) > threshold
            and slope(last) * (window - 1) > -COLLAPSE_MIN_DROP)


def collapse_advice(losses: Sequence[float], method: str, weighting: str) -> str:
    """What to try, from what the loss does over the same window, and from the loss that is trained."""
    if len(losses) >= 2 and slope(losses) * (len(losses) - 1) < -LOSS_MIN_DROP * abs(losses[0]):
        advice = (f"the contrastive loss is still falling ({losses[0]:.3g} -> {losses[-1]:.3g}), so the model is "
                  "learning and may yet escape: train longer before judging")
    else:
        advice = (f"the contrastive loss is not falling either ({losses[0]:.3g} -> {losses[-1]:.3g}): training is "
                  "stuck; try a lower optim.lr or a longer optim.warmup_steps") if losses else "try a lower optim.lr"
    if method == "alignclip":
        advice += ("; IMSep pulls a modality together when its captions are near-synonyms: " + (
            "the paper's weighting (loss.weighting=logits) rewards that collapse, loss.weighting=negatives does "
            "not; " if weighting == "logits" else "") + "a smaller loss.beta or a longer "
                   "loss.separation_warmup_steps gives the contrastive term time first (README)")
    return advice


class CollapseWatch:
    """Fed every log record; returns one warning (once per run) when the intra-modal cosine trend says collapse."""

    def __init__(self, threshold: float, after_step: int, method: str, weighting: str) -> None:
        self.threshold, self.after_step, self.method, self.weighting = threshold, after_step, method, weighting
        self.cosines: list[float] = []
        self.losses: list[float] = []
        self.warned = False

    @classmethod
    def for_run(cls, config: Any, warmup_steps: int) -> "CollapseWatch":
        """Watch from the end of the warm-ups: the lr's and, for AlignCLIP, beta's (while beta ramps in, the loss
        being minimised changes under the model; a real 60-step micro run sat at 0.99 through its 20-step ramp
        and escaped right after)."""
        ramp = config.loss.separation_warmup_steps if config.method == "alignclip" else 0
        return cls(config.logging.collapse_threshold, max(warmup_steps, ramp), config.method, config.loss.weighting)

    def update(self, record: Mapping[str, Any]) -> str | None:
        if self.warned or record["step"] <= self.after_step or "image_cosine" not in record:
            return None
        self.cosines = (self.cosines + [max(record["image_cosine"], record.get("text_cosine", 0.0))])[-COLLAPSE_WINDOW:]
        if "contrastive_loss" in record:
            self.losses = (self.losses + [record["contrastive_loss"]])[-COLLAPSE_WINDOW:]
        if not collapse_trend(self.cosines, self.threshold):
            return None
        self.warned = True
        return (f"warning: step {record['step']}: the mean intra-modal cosine (max of image-image and text-text, "
                f"in-batch) stayed above {self.threshold} for the last {COLLAPSE_WINDOW} logs without falling "
                f"({self.cosines[0]:.3f} -> {self.cosines[-1]:.3f}): the embedding is collapsed; "
                + collapse_advice(self.losses, self.method, self.weighting))
