"""alignclip: train and measure CLIP, SharedCLIP and AlignCLIP (image-text models with a smaller modality gap)."""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Lazy exports keep `import alignclip` cheap (no sentence-transformers / matplotlib import until used).
_EXPORTS = {
    "create_model": "alignclip.models.factory",
    "list_presets": "alignclip.models.factory",
    "load_model_config": "alignclip.models.factory",
    "get_tokenizer": "alignclip.tokenizer",
    "save_checkpoint": "alignclip.models.checkpoint",
    "load_checkpoint": "alignclip.models.checkpoint",
    "import_official_alignclip": "alignclip.models.checkpoint",
    "import_open_clip": "alignclip.models.checkpoint",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'alignclip' has no attribute {name!r}")
