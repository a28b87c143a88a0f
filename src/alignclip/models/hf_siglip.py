"""Hugging Face `transformers.SiglipModel` folders <-> our two-tower model with SigLIP's options, exactly.

SigLIP is CLIP's two towers with other choices (models/config.py): patches without a class token or ln_pre, a biased
patch convolution, post-LN then MAP attention pooling as the image features (no projection); a bidirectional text
tower pooled at the last position through a Linear(D, D) head with a bias; logits exp(logit_scale)·cos + logit_bias.
SigLIP 2's fixed-resolution ("FixRes") checkpoints are SiglipModel folders with Gemma's vocabulary; its NaFlex
checkpoints (model_type 'siglip2') are refused: they resize each image to its own patch grid and interpolate the
position table per image, which a fixed-size ViT does not reproduce."""
from __future__ import annotations

import math
from typing import Any

import torch

from .config import ModelConfig, mlp_ratio_of
from .hf import from_hf_state, to_hf_state

SIGLIP_LOGIT_SCALE, SIGLIP_LOGIT_BIAS = math.log(10), -10.0  # SigLIP's initial values (Zhai et al. 2023)
HF_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh"}  # HF -> ours
_OURS_TO_HF_ACT = {v: k for k, v in HF_ACTIVATIONS.items()}
_RENAMES = {  # ours -> HF, whole keys or key prefixes
    "visual.conv1.": "vision_model.embeddings.patch_embedding.",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.transformer.resblocks.": "vision_model.encoder.layers.",
    "visual.ln_post.": "vision_model.post_layernorm.",
    "visual.attn_pool.probe": "vision_model.head.probe",
    "visual.attn_pool.attn.": "vision_model.head.attention.",
    "visual.attn_pool.ln.": "vision_model.head.layernorm.",
    "visual.attn_pool.mlp.c_fc.": "vision_model.head.mlp.fc1.",
    "visual.attn_pool.mlp.c_proj.": "vision_model.head.mlp.fc2.",
    "token_embedding.": "text_model.embeddings.token_embedding.",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "transformer.resblocks.": "text_model.encoder.layers.",
    "ln_final.": "text_model.final_layer_norm.",
    "text_projection.": "text_model.head.",
    "logit_scale": "logit_scale", "logit_bias": "logit_bias"}
_SCALARS = ("logit_scale", "logit_bias")  # HF stores them as shape [1], ours as scalars


def from_hf_siglip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = from_hf_state(state, _RENAMES, {})
    return {k: v.reshape(()) if k in _SCALARS and v.numel() == 1 else v for k, v in out.items()}


def to_hf_siglip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.reshape(1) if k in _SCALARS else v for k, v in to_hf_state(state, _RENAMES, {}).items()}


def _activation(hf_act: str, tower: str, source: str) -> str:
    if hf_act not in HF_ACTIVATIONS:
        raise ValueError(f"{source}: {tower} hidden_act {hf_act!r} is not supported; alignclip's towers use one of "
                         f"{', '.join(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[hf_act]


def config_from_hf_siglip(document: dict[str, Any], source: str) -> ModelConfig:
    """An HF SiglipConfig (defaults of the installed transformers filled in) -> ModelConfig, or a one-line refusal."""
    if document.get("model_type") == "siglip2":
        raise ValueError(f"{source}: a SigLIP 2 NaFlex model (model_type 'siglip2'), which alignclip does not import: "
                         "NaFlex resizes every image to its own patch grid and interpolates the position table per "
                         "image; use a fixed-resolution SigLIP 2 checkpoint (a SiglipModel folder, model_type "
                         "'siglip')")
    from transformers import SiglipConfig

    hf = SiglipConfig.from_dict(document)
    v, t = hf.vision_config, hf.text_config
    if not v.vision_use_head:
        raise ValueError(f"{source}: vision_use_head is false, so the image tower has no pooled features to embed")
    if v.num_channels != 3:
        raise ValueError(f"{source}: num_channels {v.num_channels}; alignclip's image tower takes RGB (3)")
    if not isinstance(v.image_size, int) or not isinstance(v.patch_size, int):
        raise ValueError(f"{source}: a non-square image_size {v.image_size} / patch_size {v.patch_size}; alignclip's "
                         "image tower is square")
    if t.projection_size != v.hidden_size:
        raise ValueError(f"{source}: the text head's projection_size {t.projection_size} differs from the image "
                         f"width {v.hidden_size}, so the two embeddings do not share a space")
    vision_act, text_act = _activation(v.hidden_act, "vision", source), _activation(t.hidden_act, "text", source)
    return ModelConfig.from_dict({
        "embed_dim": v.hidden_size, "activation": vision_act,
        "logit_scale": SIGLIP_LOGIT_SCALE, "logit_bias": SIGLIP_LOGIT_BIAS,
        "vision_cfg": {"image_size": v.image_size, "patch_size": v.patch_size, "width": v.hidden_size,
                       "layers": v.num_hidden_layers, "heads": v.num_attention_heads,
                       "mlp_ratio": mlp_ratio_of(v.hidden_size, v.intermediate_size),
                       "layer_norm_eps": v.layer_norm_eps, "class_token": False, "pre_norm": False,
                       "patch_bias": True, "pool_type": "map", "proj_type": "none"},
        "text_cfg": {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size,
                     "width": t.hidden_size, "layers": t.num_hidden_layers, "heads": t.num_attention_heads,
                     "mlp_ratio": mlp_ratio_of(t.hidden_size, t.intermediate_size),
                     "layer_norm_eps": t.layer_norm_eps, "pool_type": "last", "causal": False, "proj_bias": True,
                     "activation": None if text_act == vision_act else text_act}}, source)


SIGLIP_OPTIONS = {"vision_cfg.class_token": False, "vision_cfg.pre_norm": False, "vision_cfg.patch_bias": True,
                  "vision_cfg.pool_type": "map", "vision_cfg.proj_type": "none", "text_cfg.causal": False,
                  "text_cfg.pool_type": "last", "text_cfg.proj_type": "linear", "text_cfg.proj_bias": True,
                  "vision_cfg.ls_init_value": None, "text_cfg.ls_init_value": None}


def hf_siglip_config(config: ModelConfig) -> Any:
    """Our ModelConfig -> transformers.SiglipConfig; refuses what SiglipModel cannot express, naming it."""
    from transformers import SiglipConfig

    d = config.to_dict()
    wrong = [f"{key} {d[key.split('.')[0]][key.split('.')[1]]!r} (SiglipModel: {want!r})"
             for key, want in SIGLIP_OPTIONS.items() if d[key.split(".")[0]][key.split(".")[1]] != want]
    if config.logit_bias is None:
        wrong.append("no logit_bias")
    if wrong:
        raise ValueError(f"this model cannot be exported as a Hugging Face SiglipModel: {', '.join(wrong)}")
    v, t = config.vision_cfg, config.text_cfg
    common = lambda c: {"hidden_size": c.width, "intermediate_size": int(c.width * c.mlp_ratio),  # noqa: E731
                        "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
                        "hidden_act": _OURS_TO_HF_ACT[c.activation or config.activation],
                        "layer_norm_eps": c.layer_norm_eps}
    return SiglipConfig(
        text_config={**common(t), "vocab_size": t.vocab_size, "max_position_embeddings": t.context_length,
                     "projection_size": config.embed_dim,
                     # SiglipTextConfig's CLIP-vocabulary defaults (49406/49407) are not ids of every vocabulary;
                     # the model never reads them (the folder's tokenizer has its own)
                     **{key: None for key, default in (("bos_token_id", 49406), ("eos_token_id", 49407))
                        if default >= t.vocab_size}},
        vision_config={**common(v), "image_size": v.image_size, "patch_size": v.patch_size, "num_channels": 3,
                       "vision_use_head": True})
