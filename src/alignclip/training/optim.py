"""AdamW with open_clip's weight-decay split, and a per-step cosine schedule with linear warm-up."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

# Parameters that act as lookup tables or positions rather than linear maps: decaying them only shrinks the input
# signal (open_clip's "gain_or_bias_params" rule excludes them via ndim < 2 for the 1-D ones; the 2-D ones we name).
EMBEDDING_NAMES = ("positional_embedding", "class_embedding", "token_embedding")


def exclude_from_weight_decay(name: str, param: torch.Tensor) -> bool:
    """open_clip's rule (p.ndim < 2, "bn", "ln", "bias", "logit_scale") plus the embeddings."""
    return (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
            or any(e in name for e in EMBEDDING_NAMES))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if exclude_from_weight_decay(name, param) else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def create_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay)
    try:  # the fused kernel is ~8x faster than the per-tensor loop on CPU (the 49k-row token table dominates)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch (< 2.4 on CPU) or unsupported device/dtype
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, schedule: str = "cosine") -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up to base_lr, then cosine to 0 (open_clip)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base_lr


class CosineSchedule:
    """Sets the lr of every param group before each step. Stateless: the shape of the schedule comes from the config
    and the step from the trainer, so a resumed run that asks for more steps stretches the decay instead of ignoring
    it. state_dict is empty, and load_state_dict ignores what it is given."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int, total_steps: int,
                 schedule: str = "cosine") -> None:
        self.optimizer, self.base_lr = optimizer, base_lr
        self.warmup_steps, self.total_steps, self.schedule = warmup_steps, total_steps, schedule

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.base_lr, self.warmup_steps, self.total_steps, self.schedule)

    def step(self, step: int) -> float:
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: the lr is a function of the step alone."""


def total_steps_of(config: TrainConfig, epoch_batches: int | None) -> int:
    if config.optim.steps is None and epoch_batches is None:
        raise ValueError(f"data {config.data.train!r} has no known length: set optim.steps, or data.num_samples "
                         "(the samples per epoch)")
    return config.optim.steps if config.optim.steps is not None else config.optim.epochs * epoch_batches
