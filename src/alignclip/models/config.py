"""Model shapes as dataclasses, loaded from JSON presets (the open_clip convention: embed_dim, vision_cfg, text_cfg)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "presets"
ARCHITECTURES = ("clip", "shared")


@dataclass
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0


@dataclass
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0


@dataclass
class ModelConfig:
    embed_dim: int = 512
    vision_cfg: VisionConfig = field(default_factory=VisionConfig)
    text_cfg: TextConfig = field(default_factory=TextConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        data = dict(data)
        data.pop("architecture", None)  # stored beside the shapes in checkpoints; not a shape
        data.pop("name", None)
        _check_keys(cls, data, source)
        vision = data.pop("vision_cfg", {})
        text = data.pop("text_cfg", {})
        _check_keys(VisionConfig, vision, f"{source}: vision_cfg")
        _check_keys(TextConfig, text, f"{source}: text_cfg")
        config = cls(vision_cfg=VisionConfig(**vision), text_cfg=TextConfig(**text), **data)
        config.validate(source)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, source: str = "config") -> None:
        v, t = self.vision_cfg, self.text_cfg
        positive = {"embed_dim": self.embed_dim, "vision_cfg.image_size": v.image_size,
                    "vision_cfg.patch_size": v.patch_size, "vision_cfg.width": v.width,
                    "vision_cfg.layers": v.layers, "vision_cfg.heads": v.heads,
                    "text_cfg.context_length": t.context_length, "text_cfg.vocab_size": t.vocab_size,
                    "text_cfg.width": t.width, "text_cfg.layers": t.layers, "text_cfg.heads": t.heads}
        for key, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{source}: {key} must be a positive integer, got {value!r}")
        if v.image_size % v.patch_size:
            raise ValueError(f"{source}: vision_cfg.image_size {v.image_size} is not a multiple of "
                             f"patch_size {v.patch_size}")
        for name, cfg in (("vision_cfg", v), ("text_cfg", t)):
            if cfg.width % cfg.heads:
                raise ValueError(f"{source}: {name}.width {cfg.width} is not divisible by heads {cfg.heads}")
            if cfg.mlp_ratio <= 0:
                raise ValueError(f"{source}: {name}.mlp_ratio must be positive, got {cfg.mlp_ratio}")

    def validate_shared(self, source: str = "config") -> None:
        """SharedCLIP runs both modalities through one transformer, so the towers' shapes must agree."""
        v, t = self.vision_cfg, self.text_cfg
        mismatched = [f"{key} (vision {getattr(v, key)} vs text {getattr(t, key)})"
                      for key in ("width", "layers", "heads", "mlp_ratio") if getattr(v, key) != getattr(t, key)]
        if mismatched:
            raise ValueError(f"{source}: the shared architecture needs one transformer for both modalities, "
                             f"but these differ: {', '.join(mismatched)}")


def _check_keys(cls: type, data: dict[str, Any], source: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_model_config(preset: str | Path | dict[str, Any]) -> ModelConfig:
    """A preset name, a path to a JSON file, or a dict -> validated ModelConfig."""
    if isinstance(preset, ModelConfig):
        return preset
    if isinstance(preset, dict):
        return ModelConfig.from_dict(preset, "model config")
    path = Path(preset)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"model config file not found: {path}")
        source = str(path)
    else:
        path = PRESET_DIR / f"{preset}.json"
        if not path.is_file():
            raise ValueError(f"unknown model preset {str(preset)!r}; available: {', '.join(list_presets())} "
                             "(or pass a path to a JSON config)")
        source = f"preset {preset}"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: invalid JSON ({e})") from None
    return ModelConfig.from_dict(data, source)
