"""Checkpoints: ours (safetensors + JSON config), and imports of open_clip / OpenAI / official AlignCLIP state dicts
and Hugging Face CLIPModel / SiglipModel folders (models/hf.py, models/hf_siglip.py), and open_clip's SigLIP timm
towers (models/timm_vit.py). Nothing is unpickled (`torch.load(weights_only=True)`).

Every import is exact or refused: keys and shapes are checked against the config's planned shapes (a meta-device
model, so no memory) before any real tensor is allocated, and what a file cannot fix (heads, activation) comes from
`config` or from the open_clip/OpenAI convention, announced in one line."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from alignclip.fileio import atomic_write
from alignclip.rundir import resolve_checkpoint

from .adapt import plain_state_dict
from .base import ContrastiveModel, unwrap
from .config import ARCHITECTURES, ModelConfig, list_presets, load_model_config, mlp_ratio_of
from .factory import planned_shapes
from .open_clip import OPEN_CLIP_HEAD_WIDTH as HEAD_WIDTH  # heads are not in a state dict: the 64-wide convention
from .weights import (ConfigSpec, _short, check_config_agrees, check_shapes, model_from_state, read_state_dict,
                      strip_prefix)

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
OPENAI_BUFFERS = ("attn_mask", "input_resolution", "context_length", "vocab_size")


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    return path / WEIGHTS_NAME, path / CONFIG_NAME


def save_checkpoint(model: ContrastiveModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `path/model.safetensors` + `path/config.json` (or `X.safetensors` + `X.json`); each file atomically."""
    model = unwrap(model)  # DDP / torch.compile
    weights, config = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in plain_state_dict(model).items()}  # LoRA merged
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    document = {"architecture": model.architecture, "model": model.config.to_dict(), **(metadata or {})}
    atomic_write(config, lambda tmp: tmp.write_text(json.dumps(document, indent=2) + "\n"))
    if model.tokenizer_folder is not None and weights.name == WEIGHTS_NAME:  # the ids need their vocabulary
        from alignclip.folder_tokenizer import copy_tokenizer
        copy_tokenizer(model.tokenizer_folder, weights.parent)
    return weights.parent if weights.name == WEIGHTS_NAME else weights


def load_checkpoint(path: str | Path, config: ConfigSpec = None, device: str | torch.device = "cpu",
                    architecture: str | None = None) -> ContrastiveModel:
    """Our checkpoint (folder or `.safetensors` + `.json`), a training run folder (its best, else newest,
    checkpoint), an open_clip / OpenAI / official AlignCLIP state dict (`.pt`, `.pth`, `.bin`, `.safetensors`) or a
    Hugging Face CLIPModel / SiglipModel folder -> our model.

    `config`: a preset, an open_clip model name, a JSON file (ours or open_clip's) or a ModelConfig; it fixes what
    a state dict cannot (heads, activation, text pooling) and must agree with the file's shapes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    path = resolve_checkpoint(path)
    weights, config_path = _paths(path)
    document = _read_json(config_path) if config_path.is_file() else None
    if path.is_dir() and isinstance(document, dict) and "model_type" in document:
        from .hf import import_hf
        model = import_hf(path, config)
    elif path.is_dir() or (isinstance(document, dict) and "architecture" in document):  # X.safetensors + X.json
        model = _load_ours(weights, config_path, document, config)
    elif path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        model = import_state_dict(read_state_dict(path), config, architecture, str(path))
    else:
        raise ValueError(f"{path}: not a checkpoint alignclip reads (a folder, .safetensors, .pt, .pth or .bin)")
    return model.to(device)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


def _load_ours(weights: Path, config_path: Path, document: Any, config: ConfigSpec) -> ContrastiveModel:
    """`document`: config_path's parsed JSON (None when the file is missing)."""
    if not weights.is_file() or document is None:
        raise FileNotFoundError(f"{weights.parent}: expected {weights.name} and {config_path.name} "
                                "(an alignclip checkpoint or a Hugging Face CLIPModel folder)")
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict) \
            or document.get("architecture") not in ARCHITECTURES:
        raise ValueError(f"{config_path}: not an alignclip model config (expected a JSON object with "
                         f"'architecture' ({' or '.join(ARCHITECTURES)}) and a 'model' object)")
    model_config = load_model_config(config) if config is not None else \
        ModelConfig.from_dict(document["model"], str(config_path))
    architecture = document["architecture"]
    try:  # shapes from the header first: a config that asks for more than the file holds allocates nothing
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: torch.Size(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights}: unreadable safetensors file ({e})") from None
    check_shapes(planned_shapes(model_config, architecture, str(config_path)), shapes, architecture,
                 str(weights))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{weights}: unreadable safetensors file ({e})") from None
    model = model_from_state(model_config, architecture, state, str(weights))
    from alignclip.folder_tokenizer import has_tokenizer
    if weights.name == WEIGHTS_NAME and has_tokenizer(weights.parent):
        model.tokenizer_folder = weights.parent
    return model


def count_blocks(state: dict[str, Any], prefix: str, source: str) -> int:
    """Number of `prefix.resblocks.N` blocks; a gap (e.g. only block 100000) is an error, not 100001 blocks."""
    pattern = re.compile(re.escape(prefix) + r"resblocks\.(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if found and len(found) != max(found) + 1:
        absent = sorted(set(range(max(found) + 1)) - found)
        raise ValueError(f"{source}: {prefix}resblocks has {len(found)} blocks but names block {max(found)} "
                         f"(blocks {_short([str(i) for i in absent], 4)} are missing)")
    return len(found)


def _require(state: dict[str, torch.Tensor], keys: list[str], source: str, layout: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{source}: not an {layout} checkpoint (missing keys: {_short(missing)})")


def _tower(state: dict[str, torch.Tensor], prefix: str, width: int, source: str) -> dict[str, Any]:
    hidden = state[f"{prefix}resblocks.0.mlp.c_fc.weight"].shape[0]
    layer_scale = f"{prefix}resblocks.0.ls_1.gamma" in state  # its init value is moot: the gains are loaded
    # only a guess that a given config replaces, but it must divide the width (208 = 2 x 104 is not 3 x 64)
    heads = next(h for h in range(max(1, width // HEAD_WIDTH), 0, -1) if width % h == 0)
    return {"width": width, "layers": count_blocks(state, prefix, source), "heads": heads,
            "mlp_ratio": mlp_ratio_of(width, hidden), "ls_init_value": 1.0 if layer_scale else None}


def infer_config(state: dict[str, torch.Tensor], architecture: str, source: str) -> ModelConfig:
    """The shapes a state dict fixes; heads by the 64-wide convention, GELU, argmax pooling (announced by caller)."""
    conv = state["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = int(round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    vision = {"image_size": grid * patch, "patch_size": patch}
    if architecture == "shared":
        shape = _tower(state, "transformer.", width, source)
        return ModelConfig.from_dict({
            "embed_dim": state["projection"].shape[1], "vision_cfg": {**vision, **shape},
            "text_cfg": {"context_length": state["text.positional_embedding"].shape[0],
                         "vocab_size": state["text.token_embedding.weight"].shape[0], **shape}}, source)
    return ModelConfig.from_dict({
        "embed_dim": state["text_projection"].shape[1],
        "vision_cfg": {**vision, **_tower(state, "visual.transformer.", width, source)},
        "text_cfg": {"context_length": state["positional_embedding"].shape[0],
                     "vocab_size": state["token_embedding.weight"].shape[0],
                     **_tower(state, "transformer.", state["ln_final.weight"].shape[0], source)}}, source)


def _shape_fields(config: ModelConfig) -> dict[str, Any]:
    """What a state dict's shapes determine (heads, activation, eps and pooling they do not)."""
    v, t = config.vision_cfg, config.text_cfg
    fields = {"embed_dim": config.embed_dim}
    for name, cfg in (("vision_cfg", v), ("text_cfg", t)):
        fields.update({f"{name}.width": cfg.width, f"{name}.layers": cfg.layers,
                       f"{name}.mlp hidden width": int(cfg.width * cfg.mlp_ratio)})
    fields.update({"vision_cfg.image_size": v.image_size, "vision_cfg.patch_size": v.patch_size,
                   "text_cfg.context_length": t.context_length, "text_cfg.vocab_size": t.vocab_size})
    return fields


def reconcile(inferred: ModelConfig, config: ConfigSpec, source: str) -> ModelConfig:
    """The given config if the file's shapes agree with it (else a one-line error naming the fields); without one,
    the inferred shapes plus an announced assumption for heads and activation."""
    if config is not None:
        given = load_model_config(config)
        check_config_agrees(_shape_fields(given), _shape_fields(inferred), source, "the file")
        return given
    preset = _match_preset(inferred)
    assumed = (f"heads of alignclip preset '{preset[0]}'" if preset else f"{HEAD_WIDTH}-wide heads") + \
        ", GELU and argmax text pooling"
    print(f"alignclip: {source} does not record heads or activation; assumed {assumed} (the open_clip/OpenAI "
          "convention); if it differs, say so with config= / --model-config (train: --init-config), e.g. "
          "ViT-B-16-quickgelu or a JSON file",
          file=sys.stderr)
    return preset[1] if preset else inferred


def _match_preset(config: ModelConfig) -> tuple[str, ModelConfig] | None:
    """A preset of ours with these shapes (a file with our shapes most likely came from us) supplies the heads."""
    def shapes(c: ModelConfig) -> dict:
        d = c.to_dict()
        d["vision_cfg"].pop("heads"), d["text_cfg"].pop("heads")
        return d
    for name in list_presets():
        preset = load_model_config(name)
        if shapes(preset) == shapes(config):
            return name, preset
    return None


def official_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    inferred = infer_config(state, "shared", "official checkpoint")
    preset = _match_preset(inferred)
    return preset[1] if preset else inferred


_OFFICIAL_KEYS = ["visual.conv1.weight", "visual.positional_embedding", "projection", "text.token_embedding.weight",
                  "text.positional_embedding", "transformer.resblocks.0.mlp.c_fc.weight"]
_OPEN_CLIP_KEYS = ["visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
                   "positional_embedding", "ln_final.weight", "text_projection",
                   "visual.transformer.resblocks.0.mlp.c_fc.weight", "transformer.resblocks.0.mlp.c_fc.weight"]


def import_state_dict(state: dict[str, torch.Tensor], config: ConfigSpec = None, architecture: str | None = None,
                      source: str = "checkpoint") -> ContrastiveModel:
    """An official AlignCLIP (`shared`) or open_clip / OpenAI (`clip`) state dict -> our model, exactly."""
    state = strip_prefix(dict(state))
    if any(k.startswith(("vision_model.", "text_model.")) for k in state):
        raise ValueError(f"{source}: Hugging Face CLIPModel weights; load the folder that holds them with its "
                         "config.json")
    if architecture is None:
        architecture = "shared" if "projection" in state else "clip"
    if architecture == "shared":
        _require(state, _OFFICIAL_KEYS, source, "official AlignCLIP")
        state.pop("text.text_projection", None)  # present in the official files, unused there
    else:
        if "text.transformer.resblocks.0.ln_1.weight" in state:  # open_clip's CustomTextCLIP layout
            state = {k[len("text."):] if k.startswith("text.") else k: v for k, v in state.items()}
        from .timm_vit import from_timm_state, is_timm_state
        if is_timm_state(state):  # a timm image tower (SigLIP): its shapes are the named tower's, not the file's
            if config is None:
                raise ValueError(f"{source}: an open_clip model with a timm image tower (SigLIP); name its open_clip "
                                 "config with config= / --model-config, e.g. ViT-B-16-SigLIP2 or its JSON file")
            return model_from_state(load_model_config(config), "clip", from_timm_state(state), source)
        _require(state, _OPEN_CLIP_KEYS, source, "open_clip ViT")
        for key in OPENAI_BUFFERS:  # OpenAI JIT-era buffers
            state.pop(key, None)
    model_config = reconcile(infer_config(state, architecture, source), config, source)
    return model_from_state(model_config, architecture, state, source)


def import_official_alignclip(state: dict[str, torch.Tensor] | str | Path, source: str = "checkpoint",
                              config: ConfigSpec = None) -> ContrastiveModel:
    """The official AlignCLIP (SharedCLIP) layout -> our `shared` model."""
    if not isinstance(state, dict):
        source, state = str(state), read_state_dict(state)
    return import_state_dict(state, config, "shared", source)


def import_open_clip(state: dict[str, torch.Tensor] | str | Path, source: str = "checkpoint",
                     config: ConfigSpec = None) -> ContrastiveModel:
    """An open_clip / OpenAI ViT CLIP state dict -> our `clip` model (same parameter names)."""
    if not isinstance(state, dict):
        source, state = str(state), read_state_dict(state)
    return import_state_dict(state, config, "clip", source)
