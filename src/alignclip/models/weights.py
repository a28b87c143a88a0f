"""Low-level weight handling shared by every format: read a state dict without unpickling, strip wrapper prefixes,
check keys and shapes against a plan, and build a model from checked tensors without a second copy."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .base import ContrastiveModel
from .config import ModelConfig
from .factory import _model_class, planned_shapes

PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers, in any order
ConfigSpec = Union[str, Path, dict, ModelConfig, None]  # what load_model_config takes


def check_shapes(own: dict[str, torch.Size], state: dict[str, Any], architecture: str, source: str) -> None:
    """One-line error naming missing, unexpected and mis-shaped keys."""
    shape = lambda v: torch.Size(v.shape) if isinstance(v, torch.Tensor) else torch.Size(v)  # noqa: E731
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k] != shape(state[k]))
    if missing or unexpected or wrong:
        parts = [f"{label}: {_short(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected),
                  ("shape mismatch", [f"{k} {list(shape(state[k]))} vs {list(own[k])}" for k in wrong]))
                 if keys]
        raise ValueError(f"{source}: does not fit a {architecture} model ({'; '.join(parts)})")


def check_config_agrees(given: dict[str, Any], found: dict[str, Any], source: str, where: str) -> None:
    """One-line error naming every field where a user's model config contradicts what the file fixes."""
    wrong = [f"{k} {given[k]!r} (file: {v!r})" for k, v in found.items() if given[k] != v]
    if wrong:
        raise ValueError(f"{source}: the given model config contradicts {where}: {', '.join(wrong)}")


def load_state_dict_strict(model: ContrastiveModel, state: dict[str, torch.Tensor], source: str) -> None:
    check_shapes({k: v.shape for k, v in model.state_dict().items()}, state, model.architecture, source)
    model.load_state_dict(state)


def model_from_state(config: ModelConfig, architecture: str, state: dict[str, torch.Tensor],
                     source: str) -> ContrastiveModel:
    """Check, then build on the meta device and take the file's tensors (as fp32): no second copy, no init."""
    check_shapes(planned_shapes(config, architecture, source), state, architecture, source)
    with torch.device("meta"):
        model = _model_class(architecture)(config)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()},
                          assign=True)
    return model


def _short(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A `.safetensors` file, or a `.pt`/`.pth`/`.bin` state dict (bare or under `state_dict`), without prefixes."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return strip_prefix(load_file(str(path)))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path}: unreadable safetensors file ({e})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt / pickled-code files
        if _is_torchscript(path):
            raise ValueError(f"{path}: a TorchScript archive (OpenAI's original release format), which alignclip "
                             "does not execute; save its state_dict() as a .pt first (e.g. with open_clip, "
                             "model 'ViT-B-32-quickgelu', pretrained='openai')") from None
        raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint ({type(e).__name__}: "
                         f"{str(e).split('.')[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: no state dict of tensors found")
    return strip_prefix(data)




def _is_torchscript(path: Path) -> bool:
    """torch.jit.save archives hold TorchScript code (`*/code/`) beside the tensors."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def strip_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...] = PREFIXES) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes every key shares (`module.`, `_orig_mod.`, nested in any order)."""
    changed = True
    while changed and state:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in state):
                state, changed = {k[len(prefix):]: v for k, v in state.items()}, True
    return state
