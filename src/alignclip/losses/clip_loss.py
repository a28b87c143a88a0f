"""The symmetric InfoNCE loss of CLIP, in open_clip's convention (the mean of the two directions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import GlobalBatch


def contrastive_terms(batch: GlobalBatch, logit_scale: torch.Tensor,
                      logit_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text CE, text->image CE) over the global batch. A SigLIP's logit bias is added as open_clip does: it
    shifts every logit of a row alike, so the loss and every other gradient are unchanged and the bias gets a zero
    gradient; that keeps it in the graph, so DDP does not stop on an unused parameter (open_clip #1076)."""
    logits_per_image = logit_scale * batch.image @ batch.all_text.T
    logits_per_text = logit_scale * batch.text @ batch.all_image.T
    if logit_bias is not None:
        logits_per_image, logits_per_text = logits_per_image + logit_bias, logits_per_text + logit_bias
    return F.cross_entropy(logits_per_image, batch.labels), F.cross_entropy(logits_per_text, batch.labels)


class ClipLoss(nn.Module):
    """Terms: `contrastive_loss` (the mean of the two directions, the same quantity AlignCLIPLoss logs under that
    name) and `loss` (equal to it)."""

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                semantic_features: torch.Tensor | None = None,
                logit_bias: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`semantic_features` is accepted and ignored so a trainer can call every loss the same way;
        `logit_bias`: see contrastive_terms."""
        batch = GlobalBatch(image_features, text_features, self.local_loss, self.gather_with_grad)
        i2t, t2i = contrastive_terms(batch, logit_scale, logit_bias)
        loss = (i2t + t2i) / 2
        return {"contrastive_loss": loss, "loss": loss}
