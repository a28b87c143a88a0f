"""`alignclip train --recipe NAME`: named layers of overrides (their place in the order: resolve.resolve_config).

All three post-train an already trained CLIP (model.init_from). Each recipe is a plain {"section.key": value}
mapping, so reference_table() shows every recipe's settings next to the config reference."""
from __future__ import annotations

from typing import Any

# Post-training with IMSep: a lower lr than from scratch so the learned features are kept, a short warm-up, and
# full-strength separation from the start (the embeddings are already aligned: nothing for a beta ramp to wait
# for). README: "Close the gap of the CLIP you already have". On a SigLIP (a model with a logit bias)
# loss.contrastive=auto keeps its sigmoid loss beside IMSep.
POSTTRAIN: dict[str, Any] = {"method": "alignclip", "loss.weighting": "negatives", "loss.beta": 0.5,
                             "loss.separation_warmup_steps": 0, "optim.lr": 2e-4, "optim.warmup_steps": 10}

RECIPES: dict[str, dict[str, Any]] = {
    "posttrain": POSTTRAIN,
    # IMSep-NW plus HyCD distillation from the frozen starting model (the teacher), so the separation closes the
    # gap while the teacher's image-text ranking holds what the model knew. CLIP-Refine's HyCD defaults (weight 1,
    # alpha 0.5, T 1) until a held-out experiment retunes them.
    "posttrain-keep": {**POSTTRAIN, "loss.distill_weight": 1.0, "loss.distill_alpha": 0.5,
                       "loss.distill_temperature": 1.0},
    # CLIP-Refine (Yamaguchi et al., CVPR 2025): RaFA plus HyCD and no contrastive term (loss.alpha 0: HyCD's
    # alpha-weighted one-hot target is its only contrastive signal), alpha 0.5, T 1. Its 1e-6 learning rate is for
    # one epoch of COCO at batch 512 (about 1,100 steps) on a ViT-B/32 pre-trained for 32 epochs; our runs are ~100
    # steps at batches of 16-256 on models trained for a few hundred steps at 5e-4, where 1e-6 moves nothing. The
    # teacher term bounds how far the student drifts, so we take posttrain's 2e-4: the recipes then compare at one
    # learning rate and one step budget.
    "clip-refine": {"method": "clip", "loss.alpha": 0.0, "loss.distill_weight": 1.0, "loss.distill_alpha": 0.5,
                    "loss.distill_temperature": 1.0, "loss.rafa_weight": 1.0, "optim.lr": 2e-4,
                    "optim.warmup_steps": 10},
}


def recipes_table() -> str:
    """Markdown rows (recipe, its settings) for the README's config reference."""
    rows = ["| recipe | settings |", "|---|---|"]
    for name, settings in RECIPES.items():
        rows.append(f"| `{name}` | " + ", ".join(f"`{key}={value}`" for key, value in settings.items()) + " |")
    return "\n".join(rows)
