"""One optimizer step: forward/backward (plain, or feature-cached accumulation), clipping, AMP and the temperature
clamp. A step takes what it needs (the batch, the caption embeddings, this step's beta; the schedule has already set
the lr) and returns what happened; it keeps no state between steps, so the trainer alone polices the run."""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import nn

from alignclip.data.collate import Batch
from alignclip.losses.sigmoid_loss import logit_bias_of
from alignclip.models.base import unwrap
from alignclip.models.diagnostics import batch_gap_diagnostics

from .distributed import all_reduce, dist_ready

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepResult:
    values: dict[str, torch.Tensor]  # detached, on the device: loss terms, grad_norm, logit_scale, diagnostics
    finite: bool = True  # False: a NaN/inf loss seen on the host (all ranks agree); no update was made
    nonfinite: torch.Tensor | None = None  # not checked on the host (GPU: no sync): a 0-d bool flag on the device


class StepRunner:
    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler | None, precision: str, device: torch.device, accum_freq: int,
                 grad_clip: float | None) -> None:
        self.model, self.loss_fn, self.optimizer, self.scaler = model, loss_fn, optimizer, scaler
        self.precision, self.device, self.accum_freq, self.grad_clip = precision, device, accum_freq, grad_clip

    def autocast(self) -> ContextManager:
        if self.precision in _DTYPES:
            return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])
        return contextlib.nullcontext()

    def _loss_inputs(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[dict, tuple[str, ...]]:
        """A composite loss's per-step inputs (a teacher's outputs, RaFA's references: once per step, for the whole
        batch, in the run's autocast) and the extra model outputs it reads (losses/composite.py)."""
        prepare = getattr(self.loss_fn, "prepare", None)
        with torch.no_grad(), self.autocast():
            extra = prepare(images, tokens) if prepare is not None else {}
        return extra, tuple(getattr(self.loss_fn, "model_outputs", ()))

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, batch: Batch, semantic: torch.Tensor | None, beta: float | None = None,
             check_finite: bool = False) -> StepResult:
        """Forward, backward and update on this rank's batch. check_finite: sync the loss to the host (free on
        CPU) and skip the update when it is NaN/inf; otherwise the result carries an on-device flag."""
        images = batch.images.to(self.device, non_blocking=True)
        tokens = batch.tokens.to(self.device, non_blocking=True)
        extra, outputs = self._loss_inputs(images, tokens)
        loss_fn = functools.partial(self.loss_fn, **extra, **({} if beta is None else {"beta": beta}))
        self.optimizer.zero_grad(set_to_none=True)
        if self.accum_freq == 1:
            with self.autocast():
                out = self.model(images, tokens)
                terms = loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                                semantic_features=semantic, **{key: out[key] for key in outputs},
                                **logit_bias_of(out))
            self._backward(terms["loss"])
            terms = {k: v.detach() for k, v in terms.items()}
        else:
            from alignclip.losses import MicroBatch, accumulated_backward
            k = self.accum_freq
            chunks = zip(images.chunk(k), tokens.chunk(k),
                         semantic.chunk(k) if semantic is not None else [None] * k)
            micro = [MicroBatch(i, t, s) for i, t, s in chunks]
            # `out`: the features of the whole batch, so the diagnostics below are the whole batch's.
            terms, out = accumulated_backward(self.model, loss_fn, micro, backward=self._backward,
                                              autocast=self.autocast, outputs=outputs)
        loss, flag = terms["loss"], None
        if check_finite:
            nonfinite = float(not torch.isfinite(loss).item())
            if dist_ready():
                nonfinite = all_reduce([nonfinite], self.device, op="max")[0]
            if nonfinite:
                return StepResult(values=terms, finite=False)  # no update from a poisoned gradient
        else:
            flag = ~torch.isfinite(loss)

        if self.scaler is not None:
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                terms["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.grad_clip is not None:
                terms["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
        unwrap(self.model).clamp_logit_scale()  # open_clip: keep exp(logit_scale) within [1, 100]
        diagnostics = batch_gap_diagnostics(out["image_features"], out["text_features"])  # once, detached
        values = {**terms, "logit_scale": out["logit_scale"].detach(), **logit_bias_of(out, detach=True),
                  **diagnostics}
        return StepResult(values={name: value.detach() for name, value in values.items()}, nonfinite=flag)
