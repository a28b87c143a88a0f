"""open_clip's model-config format and zoo: exact conversion to our ModelConfig, or a refusal naming the feature.

open_clip itself is never imported. `zoo/open_clip.json` is a snapshot of open_clip 3.3's `model_configs/`, written
by scripts/make_openclip_goldens.py, so `config="ViT-B-16-quickgelu"` works offline."""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import TEXT_POOLS, ModelConfig

ZOO_FILE = Path(__file__).parent / "zoo" / "open_clip.json"
OPEN_CLIP_HEAD_WIDTH = 64  # open_clip's CLIPVisionCfg.head_width default (and OpenAI's)

# Keys that do not change the weights' meaning for given images and token ids (training or tokenizer settings).
_INERT = {"patch_dropout", "output_tokens", "hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode", "pad_id",
          "custom_text", "init_logit_scale", "cast_dtype", "timm_model_pretrained", "hf_model_pretrained"}
# A feature that is present (not at its default) -> what it is, for the refusal message.
_VISION_FEATURES = {"attentional_pool": "an attentional pooler",
                    "no_ln_pre": "no_ln_pre", "final_ln_after_pool": "final_ln_after_pool",
                    "block_type": "a custom attention block", "qk_norm": "qk_norm",
                    "scaled_cosine_attn": "scaled cosine attention", "scale_heads": "scale_heads",
                    "scale_attn_inner": "scale_attn_inner", "scale_attn": "scale_attn", "scale_fc": "scale_fc"}
_TEXT_FEATURES = {**{k: v for k, v in _VISION_FEATURES.items() if k not in ("attentional_pool", "no_ln_pre")},
                  "hf_model_name": "a Hugging Face text tower", "embed_cls": "a text CLS token (embed_cls)"}
_TOP_FEATURES = {"multimodal_cfg": "CoCa's multimodal decoder"}
_DEFAULTS = {"pool_type": "tok", "proj_type": "linear", "pos_embed_type": "learnable"}
_TANH = {"approximate": "tanh"}  # act_kwargs of SigLIP 2's text towers: GELU's tanh approximation
_TIMM_KEYS = {"timm_model_name", "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"}


@lru_cache(maxsize=1)
def _zoo_file() -> dict[str, Any]:
    return json.loads(ZOO_FILE.read_text())


def open_clip_zoo() -> dict[str, dict[str, Any]]:
    """Model name -> open_clip model-config dict (the committed snapshot)."""
    return _zoo_file()["configs"]


def timm_towers() -> dict[str, dict[str, Any]]:
    """timm model name -> the shapes timm builds for it, for the timm ViTs alignclip expresses exactly (SigLIP's)."""
    return _zoo_file()["timm_towers"]


def _timm_problem(data: dict[str, Any], towers: dict[str, dict[str, Any]]) -> str | None:
    """Why this config's timm image tower cannot be imported exactly (None: it can)."""
    vision = data.get("vision_cfg") or {}
    name = vision["timm_model_name"]
    tower = towers.get(name)
    if tower is None:
        return f"a timm image tower {name!r} (alignclip reads timm's SigLIP ViTs: {', '.join(sorted(towers)[:3])}, ...)"
    for key, want in (("timm_pool", "map"), ("timm_proj", "none")):
        if vision.get(key) != want:
            return f"a timm image tower with {key} {vision.get(key)!r} (alignclip reads {key} {want!r})"
    if vision.get("timm_proj_bias") or not tower["square"] or tower["map_mlp_hidden"] != tower["mlp_hidden"]:
        return f"a timm image tower {name!r} with a projection bias or non-square patches"
    if vision.get("image_size", tower["image_size"]) != tower["image_size"]:
        return (f"image_size {vision['image_size']} with timm tower {name!r}, built by timm at "
                f"{tower['image_size']} px")
    if data.get("embed_dim") != tower["width"]:
        return f"embed_dim {data.get('embed_dim')} with timm tower {name!r} of width {tower['width']} and no projection"
    return None


def is_open_clip_format(data: dict[str, Any]) -> bool:
    """Ours always stores vision heads; open_clip never does (it has head_width)."""
    vision = data.get("vision_cfg")
    return isinstance(vision, dict) and "heads" not in vision


def unsupported_features(data: dict[str, Any], towers: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """What in an open_clip config we cannot reproduce exactly (empty: it imports exactly). `towers`: timm towers
    beyond the zoo's (the goldens' shrunk ones)."""
    vision, text = data.get("vision_cfg") or {}, data.get("text_cfg") or {}
    found = [name for key, name in _TOP_FEATURES.items() if data.get(key)]
    if not isinstance(vision.get("layers", 12), int):
        found.append("a ResNet image tower")
    if vision.get("timm_model_name") and (problem := _timm_problem(data, {**timm_towers(), **(towers or {})})):
        found.append(problem)
    for cfg, features, tower in ((vision, _VISION_FEATURES, "image"), (text, _TEXT_FEATURES, "text")):
        found += [name for key, name in features.items() if cfg.get(key) not in (None, False, {}, "default")]
        if cfg.get("act_kwargs") not in (None, {}, _TANH) or (cfg.get("act_kwargs") and data.get("quick_gelu")):
            found.append(f"{tower} act_kwargs {cfg['act_kwargs']}")
        found += [f"{tower} {key} {cfg[key]!r}" for key, default in _DEFAULTS.items()
                  if key in cfg and cfg[key] != default and not (tower == "text" and key == "pool_type")
                  and not (tower == "text" and key == "proj_type" and cfg[key] == "none")]
        if set(cfg.get("norm_kwargs") or {}) - {"eps"}:
            found.append(f"{tower} norm_kwargs {cfg['norm_kwargs']}")
    if text.get("pool_type", "argmax") not in TEXT_POOLS:
        found.append(f"text pool_type {text['pool_type']!r}")
    vision_width, head_width = vision.get("width", 768), vision.get("head_width", OPEN_CLIP_HEAD_WIDTH)
    if isinstance(vision.get("layers", 12), int) and isinstance(vision_width, int) and isinstance(head_width, int) \
            and head_width > 0 and vision_width % head_width:
        found.append(f"an image width {vision_width} that is not a multiple of head_width {head_width}")
    return found


_VISION_KEYS = {"image_size", "patch_size", "width", "layers", "mlp_ratio", "ls_init_value", "head_width",
                "norm_kwargs", "pool_type", "pos_embed_type", "act_kwargs"} | _INERT | set(_VISION_FEATURES) \
    | _TIMM_KEYS
_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "ls_init_value", "pool_type",
              "eos_id", "norm_kwargs", "proj_type", "proj_bias", "no_causal_mask", "act_kwargs"} | _INERT \
    | set(_TEXT_FEATURES)


def from_open_clip_config(data: dict[str, Any], source: str = "open_clip config",
                          towers: dict[str, dict[str, Any]] | None = None) -> ModelConfig:
    """open_clip's JSON (embed_dim, quick_gelu, vision_cfg with head_width, ...) -> ModelConfig, exactly or not.
    A timm image tower takes its shapes from the zoo's record of what timm builds (`towers`: more of them)."""
    if not isinstance(data, dict) or not isinstance(data.get("vision_cfg", {}), dict) \
            or not isinstance(data.get("text_cfg", {}), dict):
        raise ValueError(f"{source}: expected an open_clip model config (a JSON object with vision_cfg/text_cfg)")
    features = unsupported_features(data, towers)
    if features:
        raise ValueError(f"{source}: uses {', '.join(features)}, which alignclip cannot import exactly "
                         "(it supports ViT image + transformer text towers, and timm's SigLIP ViTs)")
    vision, text = dict(data.get("vision_cfg", {})), dict(data.get("text_cfg", {}))
    unknown = sorted({f"vision_cfg.{k}" for k in vision if k not in _VISION_KEYS}
                     | {f"text_cfg.{k}" for k in text if k not in _TEXT_KEYS}
                     | {k for k in data if k not in {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg",
                                                     "init_logit_bias"} | _INERT | set(_TOP_FEATURES)})
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)} in an open_clip model config")
    if "embed_dim" not in data:
        raise ValueError(f"{source}: an open_clip model config needs embed_dim")
    activation = "quick_gelu" if data.get("quick_gelu") else "gelu"
    if vision.get("timm_model_name"):
        from .timm_vit import vision_from_tower
        vision_cfg = vision_from_tower({**timm_towers(), **(towers or {})}[vision["timm_model_name"]])
    else:
        width = vision.get("width", 768)
        head_width = vision.get("head_width", OPEN_CLIP_HEAD_WIDTH)
        v = {k: vision[k] for k in ("image_size", "patch_size", "width", "layers", "mlp_ratio", "ls_init_value")
             if k in vision}
        # open_clip's defaults where ours differ (ours: text width 512 = theirs; vision heads from head_width)
        vision_cfg = {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12, **v,
                      "heads": width // head_width if isinstance(width, int) and isinstance(head_width, int)
                      and head_width > 0 else head_width,
                      "layer_norm_eps": (vision.get("norm_kwargs") or {}).get("eps", 1e-5),
                      "activation": "gelu_tanh" if vision.get("act_kwargs") else None}
    t = {k: text[k] for k in ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "pool_type",
                              "ls_init_value", "proj_type") if k in text}
    if text.get("pool_type") == "eos":
        t["eos_id"] = text.get("eos_id", 2)  # open_clip's CLIPTextCfg default
    if text.get("act_kwargs"):
        activation = "gelu_tanh"  # the text tower's (a timm tower records its own; a native one says so above)
    if vision_cfg.get("activation") == activation:
        vision_cfg["activation"] = None
    return ModelConfig.from_dict({
        "embed_dim": data["embed_dim"], "activation": activation,
        **({"logit_bias": float(data["init_logit_bias"]), "logit_scale": math.log(10)}
           if data.get("init_logit_bias") is not None else {}),
        "vision_cfg": vision_cfg,
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, **t,
                     "causal": not text.get("no_causal_mask", False), "proj_bias": bool(text.get("proj_bias")),
                     "layer_norm_eps": (text.get("norm_kwargs") or {}).get("eps", 1e-5)}}, source)


def to_open_clip_config(config: ModelConfig, towers: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Our ModelConfig -> open_clip's model-config JSON (what `open_clip.create_model` reads): a native ViT, or for
    SigLIP's image tower the timm ViT (of the zoo's, or `towers`) that builds it."""
    v, t = config.vision_cfg, config.text_cfg
    text = {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width, "heads": t.heads,
            "layers": t.layers, "mlp_ratio": t.mlp_ratio, "pool_type": t.pool_type}
    if t.pool_type == "eos":
        text["eos_id"] = t.eos_id
    if not t.causal:
        text["no_causal_mask"] = True
    if t.proj_type != "linear" or t.proj_bias:
        text.update({"proj_type": t.proj_type} if t.proj_type != "linear" else {"proj_bias": True})
    document: dict[str, Any] = {"embed_dim": config.embed_dim}
    if config.logit_bias is not None:
        document["init_logit_bias"] = config.logit_bias
    siglip_vision = (not v.class_token, not v.pre_norm, v.patch_bias, v.pool_type == "map", v.proj_type == "none")
    if any(siglip_vision):
        from .timm_vit import tower_name_for
        name = tower_name_for(config, {**timm_towers(), **(towers or {})}) if all(siglip_vision) else None
        if name is None or v.ls_init_value is not None:
            raise ValueError(f"{', '.join(config.tower_options())}: no timm image tower of open_clip's zoo builds "
                             "this image tower, so it has no open_clip equivalent; keep it in alignclip's or Hugging "
                             "Face's format")
        document["custom_text"] = True  # open_clip builds timm towers in CustomTextCLIP
        vision = {"image_size": v.image_size, "timm_model_name": name, "timm_model_pretrained": False,
                  "timm_pool": "map", "timm_proj": "none"}
    else:
        vision = {"image_size": v.image_size, "layers": v.layers, "width": v.width, "patch_size": v.patch_size,
                  "head_width": v.width // v.heads, "mlp_ratio": v.mlp_ratio}
    for cfg, out, timm in ((v, vision, "timm_model_name" in vision), (t, text, False)):
        if timm:
            continue
        if cfg.ls_init_value is not None:
            out["ls_init_value"] = cfg.ls_init_value
        if cfg.layer_norm_eps != 1e-5:
            out["norm_kwargs"] = {"eps": cfg.layer_norm_eps}
        activation = cfg.activation or config.activation
        if activation == "gelu_tanh":
            out["act_kwargs"] = dict(_TANH)
        elif activation != config.activation or (config.activation == "gelu_tanh" and cfg is v and timm):
            raise ValueError(f"a {activation} tower beside {config.activation}: open_clip has one activation")
    top = (t.activation or config.activation) if "timm_model_name" in vision else config.activation
    if top == "quick_gelu":
        document["quick_gelu"] = True
    elif "timm_model_name" not in vision and {v.activation or config.activation, t.activation or config.activation} \
            - {"gelu", "gelu_tanh"}:
        raise ValueError("open_clip's towers take quick_gelu for both or neither")
    return {**document, "vision_cfg": vision, "text_cfg": text}


def open_clip_model_config(name: str) -> ModelConfig | None:
    """An open_clip model name (e.g. ViT-B-16-quickgelu) -> ModelConfig; None if the zoo has no such name."""
    data = open_clip_zoo().get(name)
    return None if data is None else from_open_clip_config(data, f"open_clip model {name}")


def export_open_clip(model: Any, out: str | Path, towers: dict[str, dict[str, Any]] | None = None,
                     ) -> tuple[Path, Path]:
    """Write `out` (an open_clip state dict, torch.save) and `out` with .json (its open_clip model config)."""
    import torch

    from alignclip.fileio import atomic_write

    if model.architecture != "clip":
        raise ValueError(f"a {model.architecture} model has no open_clip equivalent (open_clip's CLIP has two "
                         "towers); keep it in alignclip's format")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config_path = out.with_suffix(".json")
    config = to_open_clip_config(model.config, towers)  # refusals first: nothing written for a model it cannot hold
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # same names as open_clip
    if config.get("custom_text"):  # CustomTextCLIP: the text tower under text., the timm tower under visual.trunk.
        from .timm_vit import to_timm_state
        state = {k if k.startswith(("visual.", "logit_")) else f"text.{k}": v for k, v in to_timm_state(state).items()}
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    document = json.dumps(config, indent=2) + "\n"
    atomic_write(config_path, lambda tmp: tmp.write_text(document))
    return out, config_path
