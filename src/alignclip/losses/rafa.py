"""RaFA, the random feature alignment of CLIP-Refine (Yamaguchi et al., CVPR 2025): the image and the text of each
pair are pulled toward one shared reference vector drawn from N(0, I), a fresh one every step.

On UNNORMALISED projections (as CLIP-Refine's code applies it), not on our L2-normalised features: on the unit
sphere E_r‖x − r‖² = 1 + D whatever x is, so the term's expected gradient is zero and it would only add noise. On
the raw projections it is ‖x‖² + D in expectation, an L2 pull toward the prior's mean; the contrastive terms cannot
see a feature's norm, so the cheapest way for the model to meet it is to drop the constant per-modality offset
of its features, which is the modality gap; and within a step the shared r moves both halves of a pair together.
"""
from __future__ import annotations

import torch
from torch import nn

from .distributed import world_info


def draw_references(rows: int, dim: int, device: torch.device | str) -> torch.Tensor:
    """One N(0, I) reference per pair of this rank's `rows`, from torch's global generator (checkpointed, so a
    resumed run redraws the same ones). Every rank draws the whole global batch's (its generator is seeded alike)
    and keeps its own slice: no two pairs of a step share a vector."""
    rank, world = world_info()
    return torch.randn(rows * world, dim, device=device)[rank * rows:(rank + 1) * rows]


class RaFALoss(nn.Module):
    """Terms: `rafa_loss` = MSE(x, r) + MSE(y, r), each the mean over pairs and dimensions (the sum, as in
    CLIP-Refine's code), and `loss` (equal to it).

    Per-row, so under DDP each rank scores its own rows: DDP's gradient average of the ranks' means is exactly the
    gradient of the global mean (equal shards), with no gather needed."""

    def forward(self, image_unnormalized: torch.Tensor, text_unnormalized: torch.Tensor,
                reference: torch.Tensor) -> dict[str, torch.Tensor]:
        if reference.shape != image_unnormalized.shape or image_unnormalized.shape != text_unnormalized.shape:
            raise ValueError(f"RaFA needs image, text and reference of one shape, got {list(image_unnormalized.shape)}"
                             f", {list(text_unnormalized.shape)}, {list(reference.shape)}")
        reference = reference.float()
        image = ((image_unnormalized.float() - reference) ** 2).mean()
        text = ((text_unnormalized.float() - reference) ** 2).mean()
        loss = image + text
        return {"rafa_loss": loss, "loss": loss}
