"""Model shapes as dataclasses, loaded from JSON presets (the open_clip convention: embed_dim, vision_cfg, text_cfg)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "presets"
ARCHITECTURES = ("clip", "shared")
# exact-erf GELU (open_clip's default); OpenAI's x * sigmoid(1.702 x); GELU's tanh approximation (SigLIP)
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh")
TEXT_POOLS = ("argmax", "eos", "last")  # open_clip's text pool_type: highest token id, first eos_id, last position
VISION_POOLS = ("tok", "map")  # the class token; SigLIP's multihead attention pooling (a learned probe)
PROJ_TYPES = ("linear", "none")  # a final width -> embed_dim matrix, or none (the tower's width is embed_dim)
CLIP_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature; SigLIP starts at log(10)
MAX_LAYERS = 1024  # a bound on what a (possibly hostile) config may ask for; the largest real CLIPs have 48


@dataclass
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    ls_init_value: float | None = None  # None: no layer scale; else open_clip's per-channel residual gains
    # SigLIP's image tower: no class token, no ln_pre, a patch convolution with a bias, MAP pooling, no projection
    class_token: bool = True  # a learned class token before the patches (positions then cover it too)
    pre_norm: bool = True  # ln_pre on the embedded patches
    patch_bias: bool = False  # a bias on the patch convolution
    pool_type: str = "tok"  # VISION_POOLS
    proj_type: str = "linear"  # PROJ_TYPES
    activation: str | None = None  # this tower's MLP activation; None: the model's


@dataclass
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    ls_init_value: float | None = None
    pool_type: str = "argmax"  # which position's features represent the caption (TEXT_POOLS)
    eos_id: int | None = None  # the end-of-text id that pool_type "eos" looks for
    causal: bool = True  # CLIP masks future tokens; SigLIP's text tower is bidirectional
    proj_bias: bool = False  # a bias on the text projection (SigLIP's Linear head)
    proj_type: str = "linear"  # PROJ_TYPES
    activation: str | None = None  # this tower's MLP activation; None: the model's


@dataclass
class ModelConfig:
    embed_dim: int = 512
    activation: str = "gelu"  # of both towers' MLPs (ACTIVATIONS); OpenAI's weights need quick_gelu
    logit_scale: float = CLIP_LOGIT_SCALE  # the learned log-temperature's initial value
    logit_bias: float | None = None  # None: no bias; else a learned logit bias starting here (SigLIP: -10)
    vision_cfg: VisionConfig = field(default_factory=VisionConfig)
    text_cfg: TextConfig = field(default_factory=TextConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        _check_keys(cls, data if not isinstance(data, dict) else {}, source)  # a JSON list or null: one line
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
        for key, value in (("vision_cfg.layers", v.layers), ("text_cfg.layers", t.layers)):
            if value > MAX_LAYERS:
                raise ValueError(f"{source}: {key} {value} is more than the {MAX_LAYERS} a model may have")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{source}: activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        self._validate_siglip_options(source)
        if t.pool_type not in TEXT_POOLS:
            raise ValueError(f"{source}: text_cfg.pool_type must be one of {', '.join(TEXT_POOLS)}, "
                             f"got {t.pool_type!r}")
        if t.pool_type == "eos" and (not isinstance(t.eos_id, int) or isinstance(t.eos_id, bool)
                                     or not 0 <= t.eos_id < t.vocab_size):
            raise ValueError(f"{source}: text_cfg.pool_type 'eos' needs an eos_id in [0, vocab_size), "
                             f"got {t.eos_id!r}")
        # SigLIP's towers (no class token) drop a partial last row/column of patches, as timm and transformers do
        # (so400m-patch14-384: 27 x 27 patches); CLIP's configs must tile the image exactly
        if v.image_size < v.patch_size or (v.image_size % v.patch_size and v.class_token is True):
            raise ValueError(f"{source}: vision_cfg.image_size {v.image_size} is not a multiple of "
                             f"patch_size {v.patch_size}")
        for name, cfg in (("vision_cfg", v), ("text_cfg", t)):
            if cfg.width % cfg.heads:
                raise ValueError(f"{source}: {name}.width {cfg.width} is not divisible by heads {cfg.heads}")
            for key in ("mlp_ratio", "layer_norm_eps"):
                value = getattr(cfg, key)
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                    raise ValueError(f"{source}: {name}.{key} must be a positive number, got {value!r}")
            if cfg.ls_init_value is not None and (not isinstance(cfg.ls_init_value, (int, float))
                                                  or isinstance(cfg.ls_init_value, bool)):
                raise ValueError(f"{source}: {name}.ls_init_value must be a number or null, got {cfg.ls_init_value!r}")

    def _validate_siglip_options(self, source: str) -> None:
        v, t = self.vision_cfg, self.text_cfg
        for key, value in (("logit_scale", self.logit_scale), ("logit_bias", self.logit_bias)):
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not math.isfinite(value)):
                raise ValueError(f"{source}: {key} must be a finite number{' or null' * (key == 'logit_bias')}, "
                                 f"got {value!r}")
        for key, value in (("vision_cfg.class_token", v.class_token), ("vision_cfg.pre_norm", v.pre_norm),
                           ("vision_cfg.patch_bias", v.patch_bias), ("text_cfg.causal", t.causal),
                           ("text_cfg.proj_bias", t.proj_bias)):
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {key} must be true or false, got {value!r}")
        choices = (("vision_cfg.pool_type", v.pool_type, VISION_POOLS),
                   ("vision_cfg.proj_type", v.proj_type, PROJ_TYPES), ("text_cfg.proj_type", t.proj_type, PROJ_TYPES),
                   ("vision_cfg.activation", v.activation, (None,) + ACTIVATIONS),
                   ("text_cfg.activation", t.activation, (None,) + ACTIVATIONS))
        for key, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"{source}: {key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        if v.pool_type == "tok" and not v.class_token:
            raise ValueError(f"{source}: vision_cfg.pool_type 'tok' pools the class token, but class_token is false "
                             "(use pool_type 'map')")
        for name, cfg in (("vision_cfg", v), ("text_cfg", t)):
            if cfg.proj_type == "none" and cfg.width != self.embed_dim:
                raise ValueError(f"{source}: {name}.proj_type 'none' needs width {cfg.width} == embed_dim "
                                 f"{self.embed_dim}")
        if t.proj_bias and t.proj_type == "none":
            raise ValueError(f"{source}: text_cfg.proj_bias needs a projection (proj_type 'linear')")

    def tower_options(self) -> list[str]:
        """The tower options (SigLIP's) that differ from CLIP's defaults, e.g. ["vision_cfg.pool_type 'map'"]."""
        found = []
        for name, cfg, default in (("vision_cfg", self.vision_cfg, VisionConfig()),
                                   ("text_cfg", self.text_cfg, TextConfig())):
            for key in ("class_token", "pre_norm", "patch_bias", "pool_type", "proj_type", "activation", "causal",
                        "proj_bias"):
                if hasattr(cfg, key) and getattr(cfg, key) != getattr(default, key) \
                        and not (key == "pool_type" and name == "text_cfg"):
                    found.append(f"{name}.{key} {getattr(cfg, key)!r}")
        return found

    def validate_shared(self, source: str = "config") -> None:
        """SharedCLIP runs both modalities through one transformer, so the towers' shapes must agree."""
        v, t = self.vision_cfg, self.text_cfg
        mismatched = [f"{key} (vision {getattr(v, key)} vs text {getattr(t, key)})"
                      for key in ("width", "layers", "heads", "mlp_ratio", "layer_norm_eps", "ls_init_value")
                      if getattr(v, key) != getattr(t, key)]
        if mismatched:
            raise ValueError(f"{source}: the shared architecture needs one transformer for both modalities, "
                             f"but these differ: {', '.join(mismatched)}")
        two_tower = self.tower_options()
        if two_tower:
            raise ValueError(f"{source}: the shared architecture does not support {', '.join(two_tower)} "
                             "(two-tower options; use architecture 'clip')")


def _check_keys(cls: type, data: dict[str, Any], source: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object, got {'null' if data is None else type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def mlp_ratio_of(width: int, hidden: int) -> float:
    """The mlp_ratio whose int(width * ratio) gives back `hidden` (the ratio a state dict's shapes imply)."""
    ratio = hidden / width
    return ratio if int(width * ratio) == hidden else (hidden + 0.5) / width


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_model_config(preset: str | Path | dict[str, Any] | ModelConfig) -> ModelConfig:
    """A preset name, an open_clip model name (e.g. ViT-B-16-quickgelu), a JSON file (ours, an alignclip
    checkpoint's config.json, or open_clip's model-config format), or a dict -> validated ModelConfig."""
    if isinstance(preset, ModelConfig):
        return preset
    if isinstance(preset, dict):
        return config_from_dict(preset, "model config")
    path = Path(preset)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"model config file not found: {path}")
        source = str(path)
    else:
        path = PRESET_DIR / f"{preset}.json"
        if not path.is_file():
            from .open_clip import open_clip_model_config
            config = open_clip_model_config(str(preset))
            if config is None:
                raise ValueError(f"unknown model preset {str(preset)!r}; available: {', '.join(list_presets())}, "
                                 "an open_clip model name (e.g. ViT-B-16-quickgelu) or a path to a JSON config")
            return config
        source = f"preset {preset}"
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{source}: invalid JSON ({e})") from None
    return config_from_dict(data, source)


def config_from_dict(data: Any, source: str) -> ModelConfig:
    """Ours, an alignclip checkpoint's config.json ({"architecture", "model"}) or open_clip's format."""
    if isinstance(data, dict) and "model" in data and "vision_cfg" not in data:
        data = data["model"]
    from .open_clip import from_open_clip_config, is_open_clip_format
    if isinstance(data, dict) and is_open_clip_format(data):
        return from_open_clip_config(data, source)
    return ModelConfig.from_dict(data, source)
