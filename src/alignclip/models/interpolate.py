"""Weight-space interpolation between a model and its fine-tuned self (WiSE-FT, Wortsman et al. 2022).

θ(a) = (1 − a)·θ_base + a·θ_tuned trades what fine-tuning gained against what it forgot with one number, no
training: a sweep over `a` draws the trade-off curve. A pure function on state dicts, so any two checkpoints of
one architecture (ours, open_clip's, imported) interpolate the same way.
"""
from __future__ import annotations

from typing import Mapping

import torch


def interpolate_state_dicts(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """(1 − alpha)·base + alpha·tuned, key by key. alpha 0 and 1 return copies of the inputs bit for bit (no
    arithmetic: 0·x + y is not y for y = −0.0, and 0·inf is NaN); other values are computed in float64 and cast
    back. Integer and bool tensors (counters, masks) must agree and are copied. Different keys, shapes or dtypes
    are a one-line ValueError naming the first one."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"interpolation alpha must be in [0, 1] (0: the base, 1: the tuned model), got {alpha}")
    missing, extra = sorted(set(base) - set(tuned)), sorted(set(tuned) - set(base))
    if missing or extra:
        which = f"{missing[0]!r} only in the base" if missing else f"{extra[0]!r} only in the tuned model"
        raise ValueError(f"cannot interpolate models with different weights: {which} "
                         f"({len(missing) + len(extra)} keys differ); both must have the same architecture")
    out: dict[str, torch.Tensor] = {}
    for key, a in base.items():
        b = tuned[key]
        if a.shape != b.shape:
            raise ValueError(f"cannot interpolate models of different shapes: {key} is {tuple(a.shape)} in the base "
                             f"and {tuple(b.shape)} in the tuned model")
        if a.dtype != b.dtype:
            raise ValueError(f"cannot interpolate {key}: dtype {a.dtype} in the base, {b.dtype} in the tuned model")
        if alpha == 0.0 or alpha == 1.0:
            out[key] = (a if alpha == 0.0 else b).detach().clone()
        elif a.is_floating_point():
            out[key] = ((1.0 - alpha) * a.double() + alpha * b.double()).to(a.dtype)
        elif torch.equal(a, b):
            out[key] = a.detach().clone()
        else:
            raise ValueError(f"cannot interpolate {key}: a {a.dtype} tensor that differs between the two models")
    return out


def parse_alphas(spec: str) -> list[float]:
    """'0.25,0.5,0.75' -> [0.25, 0.5, 0.75]; each in [0, 1], at least one."""
    try:
        alphas = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--alpha must be comma-separated numbers in [0, 1], got {spec!r}") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"--alpha must be comma-separated numbers in [0, 1], got {spec!r}")
    return alphas
