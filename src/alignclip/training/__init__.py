"""Training: `train(config) -> TrainResult`, the typed `TrainConfig`, and the pieces the loop is made of."""
from __future__ import annotations

from .config import TrainConfig, from_dict, load_config, save_config
from .trainer import NonFiniteLossError, TrainResult, train

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "from_dict", "load_config", "save_config", "train"]
