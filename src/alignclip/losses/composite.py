"""One loss of several named terms: a contrastive base (ClipLoss, AlignCLIPLoss, or any loss returning
`contrastive_loss` and `loss`, e.g. a sigmoid SigLIP loss) plus HyCD distillation and RaFA.

loss = contrastive_weight · base["loss"] + distill_weight · distill_loss + rafa_weight · rafa_loss

The base's own terms (`contrastive_loss`, `separation_loss`, ...) are logged as it names them; `distill_loss` and
`rafa_loss` are logged unweighted, so their curves compare across weights. What a term needs besides the features
comes from `prepare` (once per optimizer step, before any forward: the teacher's outputs and RaFA's references,
which gradient accumulation must reuse for every micro-batch) and from the model outputs named in
`model_outputs` (RaFA's unnormalised projections)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .distill import HyCDLoss
from .rafa import RaFALoss, draw_references

UNNORMALIZED = ("image_unnormalized", "text_unnormalized")


class CompositeLoss(nn.Module):
    def __init__(self, base: nn.Module, contrastive_weight: float = 1.0, distill: HyCDLoss | None = None,
                 distill_weight: float = 0.0, teacher: nn.Module | None = None, rafa: RaFALoss | None = None,
                 rafa_weight: float = 0.0, embed_dim: int | None = None) -> None:
        super().__init__()
        if distill is not None and teacher is None:
            raise ValueError("HyCD distillation needs a teacher model")
        if rafa is not None and embed_dim is None:
            raise ValueError("RaFA needs embed_dim (the size of its reference vectors)")
        self.base, self.contrastive_weight = base, contrastive_weight
        self.distill, self.distill_weight, self.teacher = distill, distill_weight, teacher
        self.rafa, self.rafa_weight, self.embed_dim = rafa, rafa_weight, embed_dim

    @property
    def model_outputs(self) -> tuple[str, ...]:
        """Model outputs beyond the normalised features and logit_scale that the trainer must pass in."""
        return UNNORMALIZED if self.rafa is not None else ()

    @torch.no_grad()
    def prepare(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-step inputs of the extra terms, for this rank's whole batch; the caller sets autocast (the
        teacher runs in the run's precision)."""
        extra: dict[str, torch.Tensor] = {}
        if self.distill is not None:
            out = self.teacher(images, tokens)  # type: ignore[misc]
            extra.update(dist_image_features=out["image_features"], dist_text_features=out["text_features"],
                         dist_logit_scale=out["logit_scale"])
        if self.rafa is not None:
            extra["rafa_reference"] = draw_references(images.shape[0], self.embed_dim, images.device)  # type: ignore
        return extra

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                semantic_features: torch.Tensor | None = None, dist_image_features: torch.Tensor | None = None,
                dist_text_features: torch.Tensor | None = None, dist_logit_scale: torch.Tensor | None = None,
                image_unnormalized: torch.Tensor | None = None, text_unnormalized: torch.Tensor | None = None,
                rafa_reference: torch.Tensor | None = None, **base_kwargs: Any) -> dict[str, torch.Tensor]:
        """`base_kwargs` (IMSep's beta, SigLIP's logit_bias) go to the base loss, and so do `semantic_features`
        when given (a base that takes none is never handed them)."""
        if semantic_features is not None:
            base_kwargs["semantic_features"] = semantic_features
        terms = dict(self.base(image_features, text_features, logit_scale, **base_kwargs))
        total = self.contrastive_weight * terms["loss"]
        if self.distill is not None:
            if dist_image_features is None or dist_text_features is None or dist_logit_scale is None:
                raise ValueError("distillation needs the teacher's outputs: call prepare(images, tokens) first")
            terms["distill_loss"] = self.distill(image_features, text_features, logit_scale, dist_image_features,
                                                 dist_text_features, dist_logit_scale)["loss"]
            total = total + self.distill_weight * terms["distill_loss"]
        if self.rafa is not None:
            if image_unnormalized is None or text_unnormalized is None or rafa_reference is None:
                raise ValueError("RaFA needs the unnormalised projections and this step's references "
                                 "(model_outputs, prepare)")
            terms["rafa_loss"] = self.rafa(image_unnormalized, text_unnormalized, rafa_reference)["loss"]
            total = total + self.rafa_weight * terms["rafa_loss"]
        terms["loss"] = total
        return terms
