"""The arithmetic a run trains in: fp32 on CPU (bf16 matmuls are slow there), bf16 AMP on GPUs that have it, else fp16
with a gradient scaler."""
from __future__ import annotations

import torch


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: fp32 on CPU (bf16 there is slow and lossy unless asked for), bf16 AMP on GPUs that have it, else fp16."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("runtime.precision=fp16 needs a CUDA device (use fp32 or bf16 on CPU)")
    return precision


def create_scaler(precision: str) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None
