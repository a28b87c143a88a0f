"""Training: `train(config) -> TrainResult`, the typed `TrainConfig`, and the pieces the loop is made of."""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import TrainConfig
from .resolve import from_dict, load_config, save_config

# The trainer (torch) is imported on first use, so that the config alone (`alignclip train --help`) stays quick.
_LAZY = {"NonFiniteLossError": ".result", "TrainResult": ".result", "train": ".launch"}

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "from_dict", "load_config", "save_config", "train"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
