"""One optimizer step: forward/backward (plain, or feature-cached accumulation), clipping, AMP, the temperature clamp,
and on-device running sums of the logged terms so that a step needs no host sync on GPU."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
import torch.distributed as dist
from torch import nn

from .distributed import all_reduce

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StepRunner:
    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler | None, precision: str, device: torch.device, accum_freq: int,
                 grad_clip: float | None) -> None:
        self.model, self.loss_fn, self.optimizer, self.scaler = model, loss_fn, optimizer, scaler
        self.precision, self.device, self.accum_freq, self.grad_clip = precision, device, accum_freq, grad_clip
        self.lr: float = 0.0
        self.beta: float | None = None
        self.bad: str | None = None  # where a non-finite loss was seen, once known on the host
        self._window: dict[str, torch.Tensor] = {}
        self._window_steps = 0
        self._window_first = 0
        self._flag: torch.Tensor | None = None  # GPU: non-finite seen in this window (no sync until logged)
        self._last_step = 0

    def autocast(self) -> ContextManager:
        if self.precision in _DTYPES:
            return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])
        return contextlib.nullcontext()

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _unwrapped(self) -> nn.Module:
        model = getattr(self.model, "_orig_mod", self.model)
        return getattr(model, "module", model)

    def step(self, batch: dict, semantic: torch.Tensor | None, step: int, check_finite: bool) -> None:
        images = batch["images"].to(self.device, non_blocking=True)
        tokens = batch["tokens"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        if self.accum_freq == 1:
            with self.autocast():
                out = self.model(images, tokens)
                terms = self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                                     semantic_features=semantic)
            self._backward(terms["loss"])
            terms = {k: v.detach() for k, v in terms.items()}
        else:
            from alignclip.losses import accumulated_backward
            k = self.accum_freq
            chunks = zip(images.chunk(k), tokens.chunk(k),
                         semantic.chunk(k) if semantic is not None else [None] * k)
            micro = [{"images": i, "tokens": t, "semantic_features": s} for i, t, s in chunks]
            # `out` is the last micro-batch's output, with diagnostics recomputed over the whole batch.
            terms, out = accumulated_backward(self.model, self.loss_fn, micro, backward=self._backward,
                                              autocast=self.autocast)
        loss = terms["loss"]
        if check_finite:
            nonfinite = float(not torch.isfinite(loss).item())
            if dist.is_available() and dist.is_initialized():
                nonfinite = all_reduce([nonfinite], self.device, op="max")[0]
            if nonfinite:
                self.bad = f"step {step}"
                return  # no update from a poisoned gradient
        else:
            flag = ~torch.isfinite(loss)
            self._flag = flag if self._flag is None else self._flag | flag

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
        self._unwrapped().clamp_logit_scale()  # open_clip: keep exp(logit_scale) within [1, 100]

        logged = {**terms, "logit_scale": out["logit_scale"].detach(), **out.get("diagnostics", {})}
        if self._window_steps == 0:
            self._window_first = step
        for name, value in logged.items():
            value = value.detach().float()
            self._window[name] = self._window[name] + value if name in self._window else value
        self._window_steps += 1
        self._last_step = step

    def reduce_window(self) -> dict[str, float]:
        """Means of the logged values since the last call, averaged over ranks (one collective)."""
        names = sorted(self._window)
        values = [self._window[n] / max(1, self._window_steps) for n in names]
        flag = self._flag.float() if self._flag is not None else torch.zeros((), device=self.device)
        packed = torch.stack(values + [flag]).double() if values else flag.double().reshape(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(packed)
            world = dist.get_world_size()
            packed[:-1] /= world
        host = packed.tolist()
        if host[-1] > 0 and self.bad is None:
            self.bad = f"a step in {self._window_first}..{self._last_step}"
        self._window, self._window_steps, self._flag = {}, 0, None
        return dict(zip(names, host[:-1]))

    def sync_nonfinite(self) -> None:
        """GPU: bring the window's non-finite flag to the host (all ranks call this together)."""
        if self._flag is None:
            return
        flagged = all_reduce([float(self._flag.item())], self.device, op="max")[0]
        if flagged and self.bad is None:
            self.bad = f"a step in {self._window_first}..{self._last_step}"

    def first_nonfinite_step(self) -> str | None:
        return self.bad
