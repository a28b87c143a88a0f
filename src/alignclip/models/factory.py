"""`create_model`: a preset name, JSON file or dict plus an architecture -> a ready model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import ContrastiveModel
from .clip import CLIP
from .config import ARCHITECTURES, ModelConfig, list_presets, load_model_config
from .shared import SharedCLIP

_MODELS: dict[str, type[ContrastiveModel]] = {"clip": CLIP, "shared": SharedCLIP}

__all__ = ["create_model", "list_presets", "load_model_config", "ContrastiveModel"]


def create_model(preset: str | Path | dict[str, Any] | ModelConfig = "tiny", architecture: str = "clip",
                 device: str | torch.device | None = None, seed: int | None = None) -> ContrastiveModel:
    if architecture not in _MODELS:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    config = load_model_config(preset)
    if seed is not None:
        torch.manual_seed(seed)
    model = _MODELS[architecture](config)
    return model.to(device) if device is not None else model
