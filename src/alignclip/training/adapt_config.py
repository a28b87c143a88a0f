"""The `adapt` config section: which weights a run trains (locked towers, LoRA); models/adapt.py applies it.

Its own file, like the `eval` section, so config.py keeps one screen per section and stays torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .overrides import setting

# The attention (q/k/v in one packed weight, and the output) and MLP projections of every transformer block.
LORA_TARGETS = "attn.in_proj_weight,attn.out_proj,mlp.c_fc,mlp.c_proj"


@dataclass
class AdaptSection:
    # open_clip's --lock-image / --lock-image-unlocked-groups / --lock-image-freeze-bn-stats and the text options.
    lock_image: bool = setting(False, "freeze the image tower (two-tower models only; open_clip's --lock-image)")
    lock_image_unlocked_groups: int = setting(
        0, "with lock_image: train its last N groups (projection, ln_post + last block, earlier blocks, stem)")
    lock_image_freeze_norm: bool = setting(
        False, "with lock_image: the LayerNorms of the unlocked groups stay frozen too")
    lock_text: bool = setting(False, "freeze the text tower (two-tower models only; open_clip's --lock-text)")
    lock_text_unlocked_layers: int = setting(
        0, "with lock_text: train its last N groups (projection, ln_final + last block, earlier blocks, embeddings)")
    lock_text_freeze_layer_norm: bool = setting(
        False, "with lock_text: the LayerNorms of the unlocked groups stay frozen too")
    lora_rank: int = setting(0, "LoRA rank via peft (0: off): only the adapters and logit_scale train")
    lora_alpha: float | None = setting(None, "LoRA scaling alpha (the update is alpha / rank x B A); null: the rank")
    lora_dropout: float = setting(0.0, "dropout on the LoRA input (Linear targets only: none for a raw weight)")
    lora_targets: str = setting(
        LORA_TARGETS, "comma-separated module or parameter names (name suffixes) that get adapters")


def adapt_checks(a: AdaptSection) -> list[tuple[bool, str, Any, str]]:
    """(ok, key, value, why) rows for TrainConfig.validate."""
    return [
        (a.lock_image_unlocked_groups >= 0, "adapt.lock_image_unlocked_groups", a.lock_image_unlocked_groups,
         "must be >= 0"),
        (a.lock_text_unlocked_layers >= 0, "adapt.lock_text_unlocked_layers", a.lock_text_unlocked_layers,
         "must be >= 0"),
        (a.lora_rank >= 0, "adapt.lora_rank", a.lora_rank, "must be >= 0 (0: no LoRA)"),
        (a.lora_alpha is None or a.lora_alpha > 0, "adapt.lora_alpha", a.lora_alpha, "must be > 0 or null"),
        (0 <= a.lora_dropout < 1, "adapt.lora_dropout", a.lora_dropout, "must be in [0, 1)"),
        (a.lora_rank == 0 or bool(a.lora_targets.strip()), "adapt.lora_targets", a.lora_targets,
         "must name at least one module"),
    ]
