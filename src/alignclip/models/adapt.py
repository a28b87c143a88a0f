"""Which weights a run trains: open_clip's tower locks and LoRA adapters (through peft), and the merge that lets
every saved checkpoint hold plain weights (so `eval` and `export` need nothing new).

`adapt_model(model, section)` takes the model and the config's `adapt` section (training/adapt_config.py) and
returns the parameters left trainable. Order: LoRA first (peft freezes every base weight), then the locks, whose
"unlocked" groups train in full. logit_scale always trains (one number; open_clip's locks leave it alone too).
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from torch import nn

from .base import ContrastiveModel

LORA_KEYS = ("lora_", "base_layer")  # state-dict names that exist only while adapters are injected


def _params(items: Iterable[nn.Module | nn.Parameter]) -> list[tuple[str, nn.Parameter]]:
    out: list[tuple[str, nn.Parameter]] = []
    for item in items:
        if isinstance(item, nn.Parameter):
            out.append(("", item))
        else:
            out.extend(item.named_parameters())
    return out


def tower_groups(model: ContrastiveModel, tower: str) -> list[list[nn.Module | nn.Parameter]]:
    """open_clip's lock groups, input side first: stem/embeddings, each block, (last block + final norm), projection;
    unlocking N groups trains the last N."""
    if tower == "image":
        v = model.visual
        blocks = list(v.transformer.resblocks)
        return [[v.conv1, v.class_embedding, v.positional_embedding, v.ln_pre], *[[b] for b in blocks[:-1]],
                [blocks[-1], v.ln_post], [v.proj]]
    blocks = list(model.transformer.resblocks)
    return [[model.token_embedding, model.positional_embedding], *[[b] for b in blocks[:-1]],
            [blocks[-1], model.ln_final], [model.text_projection]]


def tower_prefixes(tower: str) -> tuple[str, ...]:
    """State-dict name prefixes of a two-tower model's tower (the text parameters sit at the top level)."""
    if tower == "image":
        return ("visual.",)
    return ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def lock_tower(model: ContrastiveModel, tower: str, unlocked: int, freeze_norm: bool) -> None:
    """Freeze a tower, then train its last `unlocked` groups (their LayerNorms stay frozen with freeze_norm)."""
    if model.architecture != "clip":
        raise ValueError(f"adapt.lock_{tower}: a shared model has one transformer, final norm and projection for "
                         "both modalities, so locking one modality would freeze the other's path too (use "
                         "adapt.lora_rank to train fewer weights)")
    groups = tower_groups(model, tower)
    for _, p in _params([g for group in groups for g in group]):
        p.requires_grad_(False)
    for group in groups[len(groups) - min(unlocked, len(groups)):]:
        norms = {id(q) for g in group if isinstance(g, nn.Module)
                 for m in g.modules() if isinstance(m, nn.LayerNorm) for q in m.parameters()}
        for _, p in _params(group):
            p.requires_grad_(not (freeze_norm and id(p) in norms))


def lora_targets(model: nn.Module, targets: str, skip: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(module names, parameter names) that the comma-separated name suffixes select, outside the `skip` prefixes;
    a suffix that selects nothing is a one-line error."""
    modules = [n for n, m in model.named_modules() if n and not n.startswith(skip)]
    params = [n for n, _ in model.named_parameters() if not n.startswith(skip)]
    found_modules: list[str] = []
    found_params: list[str] = []
    for target in (t.strip() for t in targets.split(",") if t.strip()):
        matches = [n for n in modules if n == target or n.endswith("." + target)]
        if matches:
            bad = [n for n in matches if not isinstance(model.get_submodule(n), (nn.Linear, nn.Embedding,
                                                                                 nn.Conv2d))]
            if bad:
                raise ValueError(f"adapt.lora_targets: {target!r} selects {bad[0]}, a "
                                 f"{type(model.get_submodule(bad[0])).__name__}, not a Linear layer or a weight")
            found_modules += matches
            continue
        matches = [n for n in params if n == target or n.endswith("." + target)]
        if not matches:
            linear = sorted({n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] if n.count(".") > 1 else n
                             for n, m in model.named_modules() if isinstance(m, nn.Linear)})
            raise ValueError(f"adapt.lora_targets: {target!r} matches no module or parameter of the model (its "
                             f"Linear layers end in: {', '.join(linear)}; its attention weight: attn.in_proj_weight)")
        found_params += matches
    return found_modules, found_params


def add_lora(model: ContrastiveModel, rank: int, alpha: float | None, dropout: float, targets: str,
             skip: tuple[str, ...] = ()) -> None:
    """Inject peft LoRA adapters in place (the model keeps its class, forward and config)."""
    from peft import LoraConfig, inject_adapter_in_model

    target_modules, target_parameters = lora_targets(model, targets, skip)
    if dropout and target_parameters:
        raise ValueError(f"adapt.lora_dropout={dropout:g}: peft's LoRA on a raw weight ({target_parameters[0]}) "
                         "has no dropout; set adapt.lora_dropout=0, or leave attn.in_proj_weight out of "
                         "adapt.lora_targets")
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                        target_modules=target_modules or None, target_parameters=target_parameters or None)
    inject_adapter_in_model(config, model)


def adapt_model(model: ContrastiveModel, section: Any) -> list[nn.Parameter]:
    """Apply the `adapt` section (locks, LoRA) in place; returns the trainable parameters."""
    s = section
    locked = [t for t, on in (("image", s.lock_image), ("text", s.lock_text)) if on]
    for tower in locked:  # refuse a shared model before peft touches it
        if model.architecture != "clip":
            lock_tower(model, tower, 0, False)
    if s.lora_rank:
        skip = tuple(p for t in locked for p in tower_prefixes(t))  # a locked tower gets no adapters
        add_lora(model, s.lora_rank, s.lora_alpha, s.lora_dropout, s.lora_targets, skip)
        model.logit_scale.requires_grad_(True)
    if s.lock_image:
        lock_tower(model, "image", s.lock_image_unlocked_groups, s.lock_image_freeze_norm)
    if s.lock_text:
        lock_tower(model, "text", s.lock_text_unlocked_layers, s.lock_text_freeze_layer_norm)
    return [p for p in model.parameters() if p.requires_grad]


def merged(model: nn.Module) -> nn.Module:
    """A copy with every adapter merged into its base weight and the peft wrappers removed: the plain model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = copy.deepcopy(model)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in reversed(layers):  # innermost first: an adapted attention holds an adapted out_proj
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.base_layer)
    return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict to save: the model's own, with any LoRA adapters merged (same keys as without them)."""
    state = model.state_dict()
    if not any(key in name for name in state for key in LORA_KEYS):  # no adapters: peft is never imported
        return state
    return merged(model).state_dict()


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unmerged tensors of the adapted layers (their base weights and adapters), for an exact resume: the
    saved checkpoint holds W + BA, from which W and B, A cannot be recovered bit for bit."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if any(s in k for s in LORA_KEYS)}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Put adapter_state() back into a model adapted the same way (strict on the adapter keys)."""
    expected = set(adapter_state(model))
    if set(state) != expected:
        raise ValueError(f"cannot resume from {source}: its LoRA adapters do not match this run's adapt settings "
                         f"({len(set(state) ^ expected)} tensors differ; keep adapt.lora_rank and lora_targets)")
    model.load_state_dict(state, strict=False)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, adapters included."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def parameter_line(model: nn.Module) -> str:
    trainable, total = parameter_counts(model)
    return f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / max(total, 1):.2f}%)"
