"""Checkpoints: our models as safetensors + JSON config (nothing is unpickled), and importers for the official
AlignCLIP and open_clip `.pt` files (loaded with weights_only=True)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from alignclip.fileio import atomic_write

from .base import ContrastiveModel
from .config import ModelConfig, list_presets, load_model_config
from .factory import create_model

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
HEAD_WIDTH = 64  # heads are not stored in a state dict; OpenAI/open_clip ViTs use 64-wide heads


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    return path / WEIGHTS_NAME, path / CONFIG_NAME


def save_checkpoint(model: ContrastiveModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `path/model.safetensors` + `path/config.json` (or `X.safetensors` + `X.json`); each file atomically."""
    model = getattr(model, "module", model)  # unwrap DDP
    weights, config = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    document = {"architecture": model.architecture, "model": model.config.to_dict(), **(metadata or {})}
    atomic_write(config, lambda tmp: tmp.write_text(json.dumps(document, indent=2) + "\n"))
    return weights.parent if weights.name == WEIGHTS_NAME else weights


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    architecture: str | None = None) -> ContrastiveModel:
    """Load our checkpoint (a folder or `.safetensors`), or import an official AlignCLIP / open_clip `.pt`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix in (".pt", ".pth", ".bin"):
        state = read_torch_state_dict(path)
        if architecture is None:
            architecture = "shared" if "projection" in state else "clip"
        importer = import_official_alignclip if architecture == "shared" else import_open_clip
        return importer(state, source=str(path)).to(device)
    weights, config_path = _paths(path)
    if not weights.is_file() or not config_path.is_file():
        raise FileNotFoundError(f"{path}: expected {weights.name} and {config_path.name} (an alignclip checkpoint)")
    try:
        document = json.loads(config_path.read_text())
        config = ModelConfig.from_dict(document["model"], str(config_path))
        arch = document["architecture"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{config_path}: not an alignclip model config ({e})") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{weights}: unreadable safetensors file ({e})") from None
    model = create_model(config, arch)
    load_state_dict_strict(model, state, str(weights))
    return model.to(device)


def load_state_dict_strict(model: ContrastiveModel, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {_short(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected),
                  ("shape mismatch", [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in wrong]))
                 if keys]
        raise ValueError(f"{source}: does not fit a {model.architecture} model ({'; '.join(parts)})")
    model.load_state_dict(state)


def _short(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def read_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """An open_clip-style `.pt`: a state dict, or a dict with `state_dict`, maybe with DDP's `module.` prefix."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt / pickled-code files
        raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint ({type(e).__name__}: "
                         f"{str(e).split('.')[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: no state dict of tensors found")
    return strip_prefix(data)


def strip_prefix(state: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"resblocks\.(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _require(state: dict[str, torch.Tensor], keys: list[str], source: str, layout: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{source}: not an {layout} checkpoint (missing keys: {_short(missing)})")


def _match_preset(config: ModelConfig) -> ModelConfig:
    """Prefer a named preset with these shapes (the official repo renamed its presets once).

    A state dict does not record the number of heads, so shapes are compared without it and a matching preset
    supplies it; with no match, heads default to width / 64 as in OpenAI's and open_clip's ViTs.
    """
    def shapes(c: ModelConfig) -> dict:
        d = c.to_dict()
        d["vision_cfg"].pop("heads"), d["text_cfg"].pop("heads")
        return d
    for name in list_presets():
        preset = load_model_config(name)
        if shapes(preset) == shapes(config):
            return preset
    return config


def official_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    conv = state["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = int(round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    layers = _count_blocks(state, "transformer.")
    mlp_ratio = state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width
    shape = {"width": width, "layers": layers, "heads": max(1, width // HEAD_WIDTH), "mlp_ratio": mlp_ratio}
    return _match_preset(ModelConfig.from_dict({
        "embed_dim": state["projection"].shape[1],
        "vision_cfg": {"image_size": grid * patch, "patch_size": patch, **shape},
        "text_cfg": {"context_length": state["text.positional_embedding"].shape[0],
                     "vocab_size": state["text.token_embedding.weight"].shape[0], **shape}}, "official checkpoint"))


def import_official_alignclip(state: dict[str, torch.Tensor] | str | Path, source: str = "checkpoint",
                              ) -> ContrastiveModel:
    """The official AlignCLIP (SharedCLIP) layout -> our `shared` model. `text.text_projection` is unused there."""
    if not isinstance(state, dict):
        source, state = str(state), read_torch_state_dict(state)
    state = strip_prefix(dict(state))
    _require(state, ["visual.conv1.weight", "visual.positional_embedding", "projection",
                     "text.token_embedding.weight", "text.positional_embedding",
                     "transformer.resblocks.0.mlp.c_fc.weight"], source, "official AlignCLIP")
    state.pop("text.text_projection", None)
    model = create_model(official_config(state), "shared")
    load_state_dict_strict(model, state, source)
    return model


def open_clip_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    conv = state["visual.conv1.weight"]
    v_width, patch = conv.shape[0], conv.shape[-1]
    grid = int(round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    t_width = state["ln_final.weight"].shape[0]
    return _match_preset(ModelConfig.from_dict({
        "embed_dim": state["text_projection"].shape[1],
        "vision_cfg": {"image_size": grid * patch, "patch_size": patch, "width": v_width,
                       "layers": _count_blocks(state, "visual.transformer."),
                       "heads": max(1, v_width // HEAD_WIDTH),
                       "mlp_ratio": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / v_width},
        "text_cfg": {"context_length": state["positional_embedding"].shape[0],
                     "vocab_size": state["token_embedding.weight"].shape[0], "width": t_width,
                     "layers": _count_blocks(state, "transformer."), "heads": max(1, t_width // HEAD_WIDTH),
                     "mlp_ratio": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / t_width}},
        "open_clip checkpoint"))


def import_open_clip(state: dict[str, torch.Tensor] | str | Path, source: str = "checkpoint") -> ContrastiveModel:
    """An open_clip / OpenAI ViT CLIP state dict -> our `clip` model (same parameter names)."""
    if not isinstance(state, dict):
        source, state = str(state), read_torch_state_dict(state)
    state = strip_prefix(dict(state))
    _require(state, ["visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
                     "positional_embedding", "ln_final.weight", "text_projection",
                     "visual.transformer.resblocks.0.mlp.c_fc.weight", "transformer.resblocks.0.mlp.c_fc.weight"],
             source, "open_clip ViT")
    for key in ("attn_mask", "input_resolution", "context_length", "vocab_size"):  # OpenAI JIT-era buffers
        state.pop(key, None)
    model = create_model(open_clip_config(state), "clip")
    load_state_dict_strict(model, state, source)
    return model
