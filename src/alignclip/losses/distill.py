"""HyCD, the hybrid contrastive-distillation of CLIP-Refine (Yamaguchi et al., CVPR 2025): a frozen teacher's
cross-modal similarity distribution, mixed with the one-hot contrastive target, keeps what the model knew while
other terms move its embeddings.

For each direction (image->text, text->image) the target is ``alpha * I + (1 - alpha) * softmax(teacher / T)`` and
the term is ``KL(target || softmax(student / T)) * T**2`` (Hinton's T² keeps the gradient's size independent of T),
averaged over the two directions. With alpha = 1 it is InfoNCE at temperature T (times T²).

Which scale: both logits are each model's own ``logit_scale * cosine``. CLIP-Refine's code scores raw dot products
of unnormalised projections, whose norms act as the temperature; ours are unit vectors, and at scale 1 a softmax
over a batch of cosines (all within [-1, 1]) is nearly uniform and carries little ranking. The teacher's
similarities are a distribution at the temperature it was trained with; the student is scored the way its own
contrastive term scores it, so at alpha = 1 the term is exactly that contrastive term. The student's learned
temperature is therefore pulled toward the teacher's too, which is part of "keeping what it knew". A bias
(SigLIP's logit_bias) would not matter: a softmax is shift-invariant per row.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import GlobalBatch, gather_no_grad


def hycd_direction(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   alpha: float, temperature: float) -> torch.Tensor:
    """KL(alpha·onehot + (1-alpha)·softmax(teacher/T) ‖ softmax(student/T))·T², the mean over query rows."""
    teacher = F.softmax(teacher_logits.float() / temperature, dim=-1)
    target = (1 - alpha) * teacher
    target[torch.arange(target.shape[0], device=target.device), labels] += alpha
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (torch.special.xlogy(target, target) - target * log_student).sum(dim=-1)  # 0·log 0 = 0
    return kl.mean() * temperature ** 2


class HyCDLoss(nn.Module):
    """Terms: `distill_loss` (the mean of the two directions) and `loss` (equal to it). Features are L2-normalised
    [N, D] rows of this rank; under DDP both the student's and the teacher's are gathered (the teacher's without a
    graph), so every rank scores the global batch, as ClipLoss does."""

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, local_loss: bool = False,
                 gather_with_grad: bool = True) -> None:
        super().__init__()
        if not 0 <= alpha <= 1:
            raise ValueError(f"bad value for 'loss.distill_alpha': {alpha!r} (must be in [0, 1])")
        if not temperature > 0:
            raise ValueError(f"bad value for 'loss.distill_temperature': {temperature!r} (must be > 0)")
        self.alpha, self.temperature = alpha, temperature
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                dist_image_features: torch.Tensor, dist_text_features: torch.Tensor,
                dist_logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """The `dist_*` names are open_clip's for a teacher's outputs (its DistillClipLoss)."""
        batch = GlobalBatch(image_features, text_features, self.local_loss, self.gather_with_grad)
        teacher_image = gather_no_grad(dist_image_features.detach())
        teacher_text = gather_no_grad(dist_text_features.detach())
        scale = dist_logit_scale.detach()
        student_i2t = logit_scale * batch.image @ batch.all_text.T
        student_t2i = logit_scale * batch.text @ batch.all_image.T
        teacher_i2t = scale * batch.rows(teacher_image) @ teacher_text.T
        teacher_t2i = scale * batch.rows(teacher_text) @ teacher_image.T
        a, t = self.alpha, self.temperature
        loss = (hycd_direction(student_i2t, teacher_i2t, batch.labels, a, t)
                + hycd_direction(student_t2i, teacher_t2i, batch.labels, a, t)) / 2
        return {"distill_loss": loss, "loss": loss}
