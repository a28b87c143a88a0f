"""Hugging Face `transformers.CLIPModel` folders <-> our two-tower CLIP, exactly (`SiglipModel`: models/hf_siglip.py).

HF splits attention into q/k/v projections (ours: one in_proj, open_clip's layout), names the LayerNorms
pre_layrnorm / post_layernorm / final_layer_norm, stores the projections as bias-free Linear weights (transposed),
and pools text at the first `eos_token_id`, or at the largest id (argmax) when eos_token_id is 2 (OpenAI's
original configs; see modeling_clip.CLIPTextTransformer)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from alignclip.fileio import atomic_write

from .base import ContrastiveModel
from .weights import ConfigSpec, check_config_agrees, model_from_state, read_state_dict
from .config import ACTIVATIONS, ModelConfig, load_model_config, mlp_ratio_of

LEGACY_EOS_ID = 2  # HF pools with argmax when the config's eos_token_id is 2
_RENAMES = {  # ours -> HF, whole keys or key prefixes
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.": "vision_model.embeddings.patch_embedding.",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.": "vision_model.pre_layrnorm.",
    "visual.ln_post.": "vision_model.post_layernorm.",
    "visual.transformer.resblocks.": "vision_model.encoder.layers.",
    "token_embedding.": "text_model.embeddings.token_embedding.",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.": "text_model.final_layer_norm.",
    "transformer.resblocks.": "text_model.encoder.layers.",
    "logit_scale": "logit_scale"}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_BLOCK = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2.",
          "attn.out_proj.": "self_attn.out_proj."}


def _rename(key: str, table: dict[str, str]) -> str | None:
    for old, new in sorted(table.items(), key=lambda item: -len(item[0])):  # longest prefix first
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):]
    return None


def to_hf_state(state: dict[str, torch.Tensor], renames: dict[str, str] = _RENAMES,
                transposed: dict[str, str] = _TRANSPOSED) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key in transposed:
            out[transposed[key]] = value.t().contiguous()
            continue
        key = _rename(key, renames) or key
        if ".encoder.layers." in key:
            head, _, rest = key.partition(".encoder.layers.")
            index, _, rest = rest.partition(".")
            if (m := re.match(r"attn\.in_proj_(weight|bias)$", rest)):
                for name, part in zip("qkv", value.chunk(3)):
                    out[f"{head}.encoder.layers.{index}.self_attn.{name}_proj.{m.group(1)}"] = part.contiguous()
                continue
            key = f"{head}.encoder.layers.{index}.{_rename(rest, _BLOCK) or rest}"
        out[key] = value
    return out


def from_hf_state(state: dict[str, torch.Tensor], renames: dict[str, str] = _RENAMES,
                  transposed: dict[str, str] = _TRANSPOSED) -> dict[str, torch.Tensor]:
    inverse, block_inverse = {v: k for k, v in renames.items()}, {v: k for k, v in _BLOCK.items()}
    transposed = {v: k for k, v in transposed.items()}
    out, qkv = {}, {}
    for key, value in state.items():
        if key.endswith("position_ids"):  # a buffer of 0..n-1 in older transformers versions
            continue
        if key in transposed:
            out[transposed[key]] = value.t().contiguous()
            continue
        if (m := re.match(r"^(.*\.encoder\.layers\.\d+\.)self_attn\.([qkv])_proj\.(weight|bias)$", key)):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        if ".encoder.layers." in key:
            head, _, rest = key.partition(".encoder.layers.")
            index, _, rest = rest.partition(".")
            key = f"{head}.encoder.layers.{index}.{_rename(rest, block_inverse) or rest}"
        out[_rename(key, inverse) or key] = value
    for (prefix, kind), parts in qkv.items():
        if set(parts) != set("qkv"):  # leave the incomplete ones for the shape check to name
            out.update({f"{prefix}self_attn.{n}_proj.{kind}": v for n, v in parts.items()})
            continue
        out[_rename(f"{prefix}attn.in_proj_{kind}", inverse)] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def config_from_hf(document: dict[str, Any], source: str) -> ModelConfig:
    """An HF CLIPConfig (defaults of the installed transformers filled in) -> ModelConfig, or a one-line refusal."""
    from transformers import CLIPConfig

    hf = CLIPConfig.from_dict(document)
    v, t = hf.vision_config, hf.text_config
    activations = {v.hidden_act, t.hidden_act}
    if len(activations) != 1 or not activations <= set(ACTIVATIONS):
        raise ValueError(f"{source}: hidden_act {v.hidden_act!r} (vision) / {t.hidden_act!r} (text) is not "
                         f"supported; alignclip's towers share one of {', '.join(ACTIVATIONS)}")
    if v.num_channels != 3:
        raise ValueError(f"{source}: num_channels {v.num_channels}; alignclip's image tower takes RGB (3)")
    pool = {"pool_type": "argmax"} if t.eos_token_id == LEGACY_EOS_ID else {"pool_type": "eos",
                                                                             "eos_id": t.eos_token_id}
    return ModelConfig.from_dict({
        "embed_dim": hf.projection_dim, "activation": v.hidden_act,
        "vision_cfg": {"image_size": v.image_size, "patch_size": v.patch_size, "width": v.hidden_size,
                       "layers": v.num_hidden_layers, "heads": v.num_attention_heads,
                       "mlp_ratio": mlp_ratio_of(v.hidden_size, v.intermediate_size),
                       "layer_norm_eps": v.layer_norm_eps},
        "text_cfg": {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size,
                     "width": t.hidden_size, "layers": t.num_hidden_layers, "heads": t.num_attention_heads,
                     "mlp_ratio": mlp_ratio_of(t.hidden_size, t.intermediate_size),
                     "layer_norm_eps": t.layer_norm_eps, **pool}}, source)


def _flat(config: ModelConfig) -> dict[str, Any]:
    d = config.to_dict()
    return {**{k: v for k, v in d.items() if not isinstance(v, dict)},
            **{f"{tower}.{k}": v for tower in ("vision_cfg", "text_cfg") for k, v in d[tower].items()}}


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():  # sharded save_pretrained output
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise FileNotFoundError(f"{folder}: a Hugging Face folder without model.safetensors or pytorch_model.bin")


def import_hf(folder: str | Path, config: ConfigSpec = None) -> ContrastiveModel:
    """A `CLIPModel.save_pretrained` folder -> our `clip` model. Its config.json fixes everything, so a given
    `config` must agree with it field by field."""
    folder = Path(folder)
    source = str(folder)
    document = json.loads((folder / "config.json").read_text())
    model_type = document.get("model_type")
    if model_type in ("siglip", "siglip2"):
        from .hf_siglip import config_from_hf_siglip, from_hf_siglip_state
        model_config, convert = config_from_hf_siglip(document, source), from_hf_siglip_state
    elif model_type == "clip":
        model_config, convert = config_from_hf(document, source), from_hf_state
    else:
        raise ValueError(f"{source}: a Hugging Face {model_type!r} model; alignclip imports CLIPModel and "
                         "SiglipModel folders (model_type 'clip' or 'siglip')")
    if config is not None:
        check_config_agrees(_flat(load_model_config(config)), _flat(model_config), source, "its config.json")
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        state.update(read_state_dict(path))
    model = model_from_state(model_config, "clip", convert(state), source)
    if model_type != "clip":  # CLIP's BPE is alignclip's own; SigLIP's vocabulary lives in the folder
        model.tokenizer_folder = folder
    return model


def hf_config(config: ModelConfig, logit_scale: float) -> Any:
    """Our ModelConfig -> transformers.CLIPConfig; refuses what HF's CLIPModel cannot express."""
    from transformers import CLIPConfig

    v, t = config.vision_cfg, config.text_cfg
    if v.ls_init_value is not None or t.ls_init_value is not None:
        raise ValueError("layer scale (ls_init_value) has no Hugging Face CLIPModel equivalent")
    if config.tower_options() or config.activation not in ("gelu", "quick_gelu"):
        raise ValueError(f"{', '.join(config.tower_options() or [repr(config.activation)])} has no Hugging Face "
                         "CLIPModel equivalent (a SiglipModel export needs a logit_bias and SigLIP's towers)")
    if t.pool_type == "argmax":
        eos = LEGACY_EOS_ID
    elif t.pool_type == "eos" and t.eos_id != LEGACY_EOS_ID:
        eos = t.eos_id
    else:
        raise ValueError(f"text pool_type {t.pool_type!r} (eos_id {t.eos_id}) has no Hugging Face CLIPModel "
                         "equivalent (it pools at argmax when eos_token_id is 2, else at the first eos_token_id)")
    common = lambda c: {"hidden_size": c.width, "intermediate_size": int(c.width * c.mlp_ratio),  # noqa: E731
                        "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
                        "hidden_act": config.activation, "layer_norm_eps": c.layer_norm_eps}
    return CLIPConfig(
        text_config={**common(t), "vocab_size": t.vocab_size, "max_position_embeddings": t.context_length,
                     "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": eos, "projection_dim": config.embed_dim},
        vision_config={**common(v), "image_size": v.image_size, "patch_size": v.patch_size, "num_channels": 3,
                       "projection_dim": config.embed_dim},
        projection_dim=config.embed_dim, logit_scale_init_value=logit_scale)


def export_hf(model: ContrastiveModel, out: str | Path) -> Path:
    """Write `out/config.json` + `out/model.safetensors` that `CLIPModel.from_pretrained(out)` loads
    (`SiglipModel.from_pretrained(out)` for a model with a logit bias)."""
    if model.architecture != "clip":
        raise ValueError(f"a {model.architecture} model cannot be exported to Hugging Face: CLIPModel has two "
                         "towers, and this model runs both modalities through one shared transformer")
    state = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    if model.family == "siglip":
        from .hf_siglip import hf_siglip_config, to_hf_siglip_state
        config, state = hf_siglip_config(model.config), to_hf_siglip_state(state)
    else:
        config, state = hf_config(model.config, float(model.logit_scale.detach())), to_hf_state(state)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    atomic_write(out / "config.json", lambda tmp: tmp.write_text(config.to_json_string()))
    if model.tokenizer_folder is not None:
        from alignclip.folder_tokenizer import copy_tokenizer
        copy_tokenizer(model.tokenizer_folder, out)
    return out
