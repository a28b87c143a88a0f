"""SigLIP's pairwise sigmoid loss (Zhai et al., *Sigmoid Loss for Language Image Pre-Training*, 2023), with
open_clip's `SigLipLoss` semantics: every image-text pair of the batch is its own binary problem, positive on the
diagonal (label +1) and negative elsewhere (label -1), on the logits t·(x·y) + b.

Why the bias and its init: a batch of B has B positives and B² − B negatives. Starting at t = 10 and b = −10 puts
every logit near −10, i.e. the model first predicts "no match" everywhere, which is already right for all but B
pairs; without it the negatives' loss swamps the first steps (the paper's section 3.2 and open_clip's defaults).

Under torch.distributed every rank gathers the features of all ranks (with gradient) and scores its query rows
against all keys, so the sum covers every pair of the global batch exactly once (open_clip ring-exchanges text
features instead; the sum is the same).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import GlobalBatch

INIT_LOGIT_SCALE = math.log(10)  # the parameter, log t: t = 10 (CLIP starts at 1/0.07)
INIT_LOGIT_BIAS = -10.0


def logit_bias_of(out: Mapping[str, Any], detach: bool = False) -> dict[str, torch.Tensor]:
    """{"logit_bias": b} for a model output that has one (SigLIP), else {}: what a trainer adds to a loss call,
    so that models without a bias keep calling losses exactly as before."""
    bias = out.get("logit_bias")
    if bias is None:
        return {}
    return {"logit_bias": bias.detach() if detach else bias}


def sigmoid_terms(batch: GlobalBatch, logit_scale: torch.Tensor, logit_bias: torch.Tensor | None) -> torch.Tensor:
    """−Σ logσ(z_ij · (t·x_i·y_j + b)) over this rank's query rows i and all keys j, divided by the query rows."""
    logits = logit_scale * batch.image @ batch.all_text.T
    if logit_bias is not None:
        logits = logits + logit_bias
    rows = torch.arange(logits.shape[0], device=logits.device)
    labels = -torch.ones_like(logits)
    labels[rows, batch.labels] = 1.0
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


class SigLipLoss(nn.Module):
    """Terms: `contrastive_loss` (the sigmoid loss, under the name every loss logs its image-text term by) and
    `loss` (equal to it).

    local_loss=False (default): every rank scores the whole global batch, so a rank's loss equals that of one
    process holding it. local_loss=True: only the rank's own image rows against all captions, divided by its own
    rows; the mean over ranks (what DDP's gradient averaging optimises) is then the global loss, as in open_clip.
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None,
                semantic_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`logit_scale` is t (already exp()'d, as models return it); `logit_bias` b (None: no bias).
        `semantic_features` is accepted and ignored so a trainer can call every loss the same way."""
        batch = GlobalBatch(image_features, text_features, self.local_loss, self.gather_with_grad)
        loss = sigmoid_terms(batch, logit_scale, logit_bias)
        return {"contrastive_loss": loss, "loss": loss}


class SigLipIMSepLoss(nn.Module):
    """The sigmoid loss plus IMSep (AlignCLIP's intra-modality separation), to close the gap of a SigLIP.

    IMSep is AlignCLIPLoss's own separation term, reused as is: `imsep` is an AlignCLIPLoss with alpha = 0, whose
    InfoNCE term is then weighted out and only its `separation_loss` is taken (the bias does not enter IMSep: it is
    a softmax over one row, which a constant shift cannot change). Terms: `contrastive_loss` = the sigmoid loss,
    `separation_loss` = beta x IMSep, `loss` = alpha x contrastive_loss + separation_loss.
    """

    def __init__(self, imsep: nn.Module, alpha: float = 1.0, local_loss: bool = False,
                 gather_with_grad: bool = True) -> None:
        super().__init__()
        if getattr(imsep, "alpha", None) != 0:
            raise ValueError("SigLipIMSepLoss takes IMSep from an AlignCLIPLoss(alpha=0): its InfoNCE term must not "
                             "count")
        self.sigmoid = SigLipLoss(local_loss, gather_with_grad)
        self.imsep, self.alpha = imsep, alpha

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, semantic_features: torch.Tensor | None = None,
                beta: float | None = None) -> dict[str, torch.Tensor]:
        """`beta` overrides IMSep's weight for this call (the trainer's warm-up ramp), as in AlignCLIPLoss."""
        sigmoid = self.sigmoid(image_features, text_features, logit_scale, logit_bias)["loss"]
        separation = self.imsep(image_features, text_features, logit_scale, semantic_features=semantic_features,
                                beta=beta)["separation_loss"]
        return {"contrastive_loss": sigmoid, "separation_loss": separation, "loss": self.alpha * sigmoid + separation}
