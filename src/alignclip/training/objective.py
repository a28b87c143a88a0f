"""What a run optimizes: the loss built from the config (InfoNCE or sigmoid, IMSep, HyCD, RaFA) and IMSep's weight at
each step. Losses themselves live in alignclip.losses; this module only chooses and combines them."""
from __future__ import annotations

from torch import nn

from .config import TrainConfig


def contrastive_of(config: TrainConfig, model: nn.Module | None = None) -> str:
    """The image-text term a run trains: loss.contrastive, "auto" resolved by the model (a learned logit bias
    marks a SigLIP, trained with the sigmoid loss)."""
    if config.loss.contrastive != "auto":
        return config.loss.contrastive
    return "sigmoid" if getattr(model, "logit_bias", None) is not None else "infonce"


def create_loss(config: TrainConfig, embed_dim: int | None = None, teacher: nn.Module | None = None,
                model: nn.Module | None = None) -> nn.Module:
    """The method's contrastive loss (InfoNCE or sigmoid, `model` resolving loss.contrastive=auto), inside a
    CompositeLoss when HyCD or RaFA is on or when loss.alpha weights ClipLoss / SigLipLoss (AlignCLIPLoss and
    SigLipIMSepLoss apply their alpha themselves); `teacher`: training/teacher.py's, for HyCD."""
    from alignclip.losses import (AlignCLIPLoss, ClipLoss, CompositeLoss, HyCDLoss, RaFALoss, SigLipIMSepLoss,
                                  SigLipLoss)

    ls = config.loss
    sigmoid = contrastive_of(config, model) == "sigmoid"
    if config.method == "alignclip":
        imsep = AlignCLIPLoss(alpha=0.0 if sigmoid else ls.alpha, beta=ls.beta, separate_text=ls.separate_text,
                              separate_image=ls.separate_image, weighting=ls.weighting, local_loss=ls.local_loss)
        base: nn.Module = SigLipIMSepLoss(imsep, alpha=ls.alpha, local_loss=ls.local_loss) if sigmoid else imsep
    else:
        base = SigLipLoss(local_loss=ls.local_loss) if sigmoid else ClipLoss(local_loss=ls.local_loss)
    weight = 1.0 if config.method == "alignclip" else ls.alpha
    if ls.distill_weight == 0 and ls.rafa_weight == 0 and weight == 1.0:
        return base
    distill = HyCDLoss(ls.distill_alpha, ls.distill_temperature, ls.local_loss) if ls.distill_weight else None
    return CompositeLoss(base, weight, distill=distill, distill_weight=ls.distill_weight, teacher=teacher,
                         rafa=RaFALoss() if ls.rafa_weight else None, rafa_weight=ls.rafa_weight, embed_dim=embed_dim)


def beta_at(config: TrainConfig, step: int) -> float | None:
    """IMSep's weight for optimizer step `step` (0-based): ramped in over loss.separation_warmup_steps; None
    for the methods without IMSep."""
    ls = config.loss
    if config.method != "alignclip":
        return None
    if ls.separation_warmup_steps <= 0:
        return ls.beta
    return ls.beta * min(1.0, (step + 1) / ls.separation_warmup_steps)
