"""AlignCLIP's loss: CLIP's contrastive term plus IMSep, the semantically weighted intra-modality separation.

For a modality z (text y or image x), row i scores its paired cross-modal similarity t·(x_i·y_i) as the positive
against the same-modality similarities t·(z_i·z_j), weighted by how different captions i and j mean
(w_ij = 1 − s_i·s_j): near-synonymous captions are barely pushed apart.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .clip_loss import contrastive_terms
from .distributed import GlobalBatch, gather_no_grad

# "none": no semantic weights at all, plain intra-modal InfoNCE with each embedding its own positive; an explicit
# choice, because silently falling back to it when the caption embeddings are missing trains a different loss.
WEIGHTINGS = ("logits", "negatives", "none")


def separation_logits(queries: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor, weights: torch.Tensor,
                      labels: torch.Tensor, logit_scale: torch.Tensor, weighting: str) -> torch.Tensor:
    """Intra-modal logits with the diagonal (at `labels`) replaced by the paired cross-modal similarity.

    weighting="logits" (the paper): off-diagonal logits t·(z_i·z_j)·w_ij.
    weighting="negatives" (ours): t·(z_i·z_j) + log(w_ij), i.e. w_ij weights each negative in the softmax
    denominator; with the paper's form a synonym pair (w≈0) gets logit 0 whatever the embeddings do, so
    collapsing all embeddings together still leaves the positive a margin.
    """
    similarity = logit_scale * queries @ keys.T
    if weighting == "logits":
        logits = similarity * weights
    else:
        logits = similarity + weights.clamp(1e-6, 2.0).log()
    rows = torch.arange(queries.shape[0], device=queries.device)
    diagonal = torch.zeros_like(logits, dtype=torch.bool)
    diagonal[rows, labels] = True
    return torch.where(diagonal, (logit_scale * positives).unsqueeze(1).expand_as(logits), logits)


class AlignCLIPLoss(nn.Module):
    """Terms: `contrastive_loss` = the mean of the two InfoNCE directions (the same quantity as ClipLoss's, so the
    curves of both compare as logged), `separation_loss` = beta x IMSep, and the paper's total
    `loss` = alpha x (CE_i2t + CE_t2i) + separation_loss = 2·alpha·contrastive_loss + separation_loss."""

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, separate_text: bool = True,
                 separate_image: bool = True, weighting: str = "logits", local_loss: bool = False,
                 gather_with_grad: bool = True) -> None:
        super().__init__()
        if not (separate_text or separate_image):
            raise ValueError("AlignCLIPLoss needs separate_text or separate_image (or both); with neither it is "
                             "plain CLIP: use ClipLoss")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        self.alpha, self.beta = alpha, beta
        self.separate_text, self.separate_image = separate_text, separate_image
        self.weighting, self.local_loss, self.gather_with_grad = weighting, local_loss, gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                semantic_features: torch.Tensor | None = None, beta: float | None = None,
                logit_bias: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`beta` overrides self.beta for this call (a trainer's warm-up ramp passes it in rather than mutating
        the module); weighting="none" ignores `semantic_features`, the other weightings require them. A SigLIP's
        `logit_bias` enters the InfoNCE logits only (clip_loss.contrastive_terms: it changes no value)."""
        beta = self.beta if beta is None else beta
        batch = GlobalBatch(image_features, text_features, self.local_loss, self.gather_with_grad)
        i2t, t2i = contrastive_terms(batch, logit_scale, logit_bias)
        both = i2t + t2i  # the paper's code sums the two directions: alpha * both is its contrastive term

        pairs = [(batch.image, batch.all_image)] * self.separate_image + [(batch.text, batch.all_text)] * self.separate_text
        if self.weighting == "none":
            terms = [F.cross_entropy(logit_scale * q @ k.T, batch.labels) for q, k in pairs]
        else:
            if semantic_features is None:
                raise ValueError(f"AlignCLIPLoss(weighting={self.weighting!r}) needs semantic_features (sentence "
                                 "embeddings of the captions); for the unweighted variant, each embedding its own "
                                 "positive, use weighting='none'")
            if semantic_features.shape[0] != image_features.shape[0]:
                raise ValueError(f"semantic_features has {semantic_features.shape[0]} rows for a batch of "
                                 f"{image_features.shape[0]}")
            semantic = F.normalize(gather_no_grad(semantic_features.detach()).float(), dim=-1)
            weights = (1 - batch.rows(semantic) @ semantic.T).to(image_features.dtype)
            positives = (batch.image * batch.text).sum(dim=-1)
            terms = [F.cross_entropy(separation_logits(q, k, positives, weights, batch.labels, logit_scale,
                                                       self.weighting), batch.labels) for q, k in pairs]
        separation = beta * sum(terms)
        return {"contrastive_loss": both / 2, "separation_loss": separation,
                "loss": self.alpha * both + separation}
