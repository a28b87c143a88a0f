"""open_clip's model-config format and zoo: exact conversion to our ModelConfig, or a refusal naming the feature.

open_clip itself is never imported. `zoo/open_clip.json` is a snapshot of open_clip 3.3's `model_configs/`, written
by scripts/make_openclip_goldens.py, so `config="ViT-B-16-quickgelu"` works offline."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import TEXT_POOLS, ModelConfig, TextConfig, VisionConfig

ZOO_FILE = Path(__file__).parent / "zoo" / "open_clip.json"
OPEN_CLIP_HEAD_WIDTH = 64  # open_clip's CLIPVisionCfg.head_width default (and OpenAI's)

# Keys that do not change the weights' meaning for given images and token ids (training or tokenizer settings).
_INERT = {"patch_dropout", "output_tokens", "hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode", "pad_id",
          "custom_text", "init_logit_scale", "cast_dtype", "timm_model_pretrained", "hf_model_pretrained"}
# A feature that is present (not at its default) -> what it is, for the refusal message.
_VISION_FEATURES = {"timm_model_name": "a timm image tower", "attentional_pool": "an attentional pooler",
                    "no_ln_pre": "no_ln_pre", "final_ln_after_pool": "final_ln_after_pool",
                    "act_kwargs": "act_kwargs",
                    "block_type": "a custom attention block", "qk_norm": "qk_norm",
                    "scaled_cosine_attn": "scaled cosine attention", "scale_heads": "scale_heads",
                    "scale_attn_inner": "scale_attn_inner", "scale_attn": "scale_attn", "scale_fc": "scale_fc"}
_TEXT_FEATURES = {**{k: v for k, v in _VISION_FEATURES.items() if k not in ("timm_model_name", "attentional_pool",
                                                                         "no_ln_pre")},
                  "hf_model_name": "a Hugging Face text tower", "no_causal_mask": "no causal mask",
                  "embed_cls": "a text CLS token (embed_cls)", "proj_bias": "a text projection bias"}
_TOP_FEATURES = {"multimodal_cfg": "CoCa's multimodal decoder", "init_logit_bias": "a logit bias (SigLIP)"}
_DEFAULTS = {"pool_type": "tok", "proj_type": "linear", "pos_embed_type": "learnable"}


@lru_cache(maxsize=1)
def open_clip_zoo() -> dict[str, dict[str, Any]]:
    """Model name -> open_clip model-config dict (the committed snapshot)."""
    return json.loads(ZOO_FILE.read_text())["configs"]


def is_open_clip_format(data: dict[str, Any]) -> bool:
    """Ours always stores vision heads; open_clip never does (it has head_width)."""
    vision = data.get("vision_cfg")
    return isinstance(vision, dict) and "heads" not in vision


def unsupported_features(data: dict[str, Any]) -> list[str]:
    """What in an open_clip config we cannot reproduce exactly (empty: it imports exactly)."""
    vision, text = data.get("vision_cfg") or {}, data.get("text_cfg") or {}
    found = [name for key, name in _TOP_FEATURES.items() if data.get(key)]
    if not isinstance(vision.get("layers", 12), int):
        found.append("a ResNet image tower")
    for cfg, features, tower in ((vision, _VISION_FEATURES, "image"), (text, _TEXT_FEATURES, "text")):
        found += [name for key, name in features.items() if cfg.get(key) not in (None, False, {}, "default")]
        found += [f"{tower} {key} {cfg[key]!r}" for key, default in _DEFAULTS.items()
                  if key in cfg and cfg[key] != default and not (tower == "text" and key == "pool_type")]
        if set(cfg.get("norm_kwargs") or {}) - {"eps"}:
            found.append(f"{tower} norm_kwargs {cfg['norm_kwargs']}")
    if text.get("pool_type", "argmax") not in TEXT_POOLS:
        found.append(f"text pool_type {text['pool_type']!r}")
    vision_width, head_width = vision.get("width", 768), vision.get("head_width", OPEN_CLIP_HEAD_WIDTH)
    if isinstance(vision.get("layers", 12), int) and isinstance(vision_width, int) and isinstance(head_width, int) \
            and head_width > 0 and vision_width % head_width:
        found.append(f"an image width {vision_width} that is not a multiple of head_width {head_width}")
    return found


def _known(cls: type, extra: set[str]) -> set[str]:
    return set(cls.__dataclass_fields__) | set(extra)


def from_open_clip_config(data: dict[str, Any], source: str = "open_clip config") -> ModelConfig:
    """open_clip's JSON (embed_dim, quick_gelu, vision_cfg with head_width, ...) -> ModelConfig, exactly or not."""
    if not isinstance(data, dict) or not isinstance(data.get("vision_cfg", {}), dict) \
            or not isinstance(data.get("text_cfg", {}), dict):
        raise ValueError(f"{source}: expected an open_clip model config (a JSON object with vision_cfg/text_cfg)")
    features = unsupported_features(data)
    if features:
        raise ValueError(f"{source}: uses {', '.join(features)}, which alignclip cannot import exactly "
                         "(it supports ViT image + transformer text towers)")
    vision, text = dict(data.get("vision_cfg", {})), dict(data.get("text_cfg", {}))
    vision_known = _known(VisionConfig, {"head_width", "norm_kwargs", "pool_type", "pos_embed_type"} | _INERT
                          | set(_VISION_FEATURES)) - {"heads", "layer_norm_eps"}
    text_known = _known(TextConfig, {"norm_kwargs", "proj_type"} | _INERT | set(_TEXT_FEATURES)) - {"layer_norm_eps"}
    unknown = sorted({f"vision_cfg.{k}" for k in vision if k not in vision_known}
                     | {f"text_cfg.{k}" for k in text if k not in text_known}
                     | {k for k in data if k not in {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"} | _INERT
                        | set(_TOP_FEATURES)})
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)} in an open_clip model config")
    if "embed_dim" not in data:
        raise ValueError(f"{source}: an open_clip model config needs embed_dim")
    width = vision.get("width", 768)
    head_width = vision.get("head_width", OPEN_CLIP_HEAD_WIDTH)
    v = {k: vision[k] for k in ("image_size", "patch_size", "width", "layers", "mlp_ratio", "ls_init_value")
         if k in vision}
    t = {k: text[k] for k in ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "pool_type",
                              "ls_init_value") if k in text}
    if text.get("pool_type") == "eos":
        t["eos_id"] = text.get("eos_id", 2)  # open_clip's CLIPTextCfg default
    return ModelConfig.from_dict({
        "embed_dim": data["embed_dim"], "activation": "quick_gelu" if data.get("quick_gelu") else "gelu",
        # open_clip's defaults where ours differ (ours: text width 512 = theirs; vision heads from head_width)
        "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12, **v,
                       "heads": width // head_width if isinstance(width, int) and isinstance(head_width, int)
                       and head_width > 0 else head_width,
                       "layer_norm_eps": (vision.get("norm_kwargs") or {}).get("eps", 1e-5)},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, **t,
                     "layer_norm_eps": (text.get("norm_kwargs") or {}).get("eps", 1e-5)}}, source)


def to_open_clip_config(config: ModelConfig) -> dict[str, Any]:
    """Our ModelConfig -> open_clip's model-config JSON (what `open_clip.create_model` reads)."""
    v, t = config.vision_cfg, config.text_cfg
    vision = {"image_size": v.image_size, "layers": v.layers, "width": v.width, "patch_size": v.patch_size,
              "head_width": v.width // v.heads, "mlp_ratio": v.mlp_ratio}
    text = {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width, "heads": t.heads,
            "layers": t.layers, "mlp_ratio": t.mlp_ratio, "pool_type": t.pool_type}
    if t.pool_type == "eos":
        text["eos_id"] = t.eos_id
    for cfg, out in ((v, vision), (t, text)):
        if cfg.ls_init_value is not None:
            out["ls_init_value"] = cfg.ls_init_value
        if cfg.layer_norm_eps != 1e-5:
            out["norm_kwargs"] = {"eps": cfg.layer_norm_eps}
    document: dict[str, Any] = {"embed_dim": config.embed_dim}
    if config.activation == "quick_gelu":
        document["quick_gelu"] = True
    return {**document, "vision_cfg": vision, "text_cfg": text}


def open_clip_model_config(name: str) -> ModelConfig | None:
    """An open_clip model name (e.g. ViT-B-16-quickgelu) -> ModelConfig; None if the zoo has no such name."""
    data = open_clip_zoo().get(name)
    return None if data is None else from_open_clip_config(data, f"open_clip model {name}")


def export_open_clip(model: Any, out: str | Path) -> tuple[Path, Path]:
    """Write `out` (an open_clip state dict, torch.save) and `out` with .json (its open_clip model config)."""
    import torch

    from alignclip.fileio import atomic_write

    if model.architecture != "clip":
        raise ValueError(f"a {model.architecture} model has no open_clip equivalent (open_clip's CLIP has two "
                         "towers); keep it in alignclip's format")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config_path = out.with_suffix(".json")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # same names as open_clip
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    document = json.dumps(to_open_clip_config(model.config), indent=2) + "\n"
    atomic_write(config_path, lambda tmp: tmp.write_text(document))
    return out, config_path
