"""`create_model`: a preset name, JSON file or dict plus an architecture -> a ready model.

Every model is first planned on the meta device (no memory): its parameter count is bounded and a checkpoint's
keys and shapes are checked against the plan before a single real tensor is allocated."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .base import ContrastiveModel
from .clip import CLIP
from .config import ARCHITECTURES, ModelConfig, list_presets, load_model_config
from .shared import SharedCLIP

_MODELS: dict[str, type[ContrastiveModel]] = {"clip": CLIP, "shared": SharedCLIP}
MAX_PARAMS_ENV = "ALIGNCLIP_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 6_000_000_000  # above ViT-e-14 + text (~5B); 24 GB in fp32

__all__ = ["create_model", "list_presets", "load_model_config", "ContrastiveModel", "planned_shapes"]


def _model_class(architecture: str) -> type[ContrastiveModel]:
    if architecture not in _MODELS:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    return _MODELS[architecture]


def planned_shapes(config: ModelConfig, architecture: str, source: str = "model config") -> dict[str, torch.Size]:
    """The state dict's keys and shapes for this config, from a meta-device model; refuses oversized models."""
    with torch.device("meta"):
        plan = _model_class(architecture)(config)
    shapes = {k: v.shape for k, v in plan.state_dict().items()}
    count = sum(shape.numel() for shape in shapes.values())
    limit = int(os.environ.get(MAX_PARAMS_ENV) or DEFAULT_MAX_PARAMS)
    if count > limit:
        raise ValueError(f"{source}: this {architecture} model asks for {count:,} parameters, more than the "
                         f"{limit:,} allowed (set {MAX_PARAMS_ENV} to raise the limit if you mean it)")
    return shapes


def create_model(preset: str | Path | dict[str, Any] | ModelConfig = "tiny", architecture: str = "clip",
                 device: str | torch.device | None = None, seed: int | None = None) -> ContrastiveModel:
    config = load_model_config(preset)
    planned_shapes(config, architecture)
    if seed is not None:
        torch.manual_seed(seed)
    model = _MODELS[architecture](config)
    return model.to(device) if device is not None else model
