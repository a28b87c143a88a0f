"""What every alignclip model shares: the learnable temperature and the forward contract."""
from __future__ import annotations

import math
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

LOGIT_SCALE_MAX = 100.0


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers, nested in any order: the one
    place that knows the wrapper attributes (saving, clamping and checking weights all need the bare model)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        inner = inner if isinstance(inner, nn.Module) else getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class CLIPOutput(TypedDict):
    image_features: torch.Tensor  # [N, D], L2-normalised
    text_features: torch.Tensor  # [N, D], L2-normalised
    logit_scale: torch.Tensor  # scalar, exp()'d and clamped to <= 100
    logit_bias: torch.Tensor | None  # scalar added to every logit (SigLIP); None for models without one
    image_unnormalized: torch.Tensor  # [N, D], the projections before normalisation (RaFA's input)
    text_unnormalized: torch.Tensor


class ContrastiveModel(nn.Module):
    """Subclasses implement `_encode_image` / `_encode_text` (unnormalised projected features)."""

    architecture: str = ""
    tokenizer_folder = None  # a folder with the model's own vocabulary (SigLIP); None: alignclip's CLIP BPE

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.image_size = config.vision_cfg.image_size
        self.context_length = config.text_cfg.context_length
        self.embed_dim = config.embed_dim
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias))) \
            if config.logit_bias is not None else None

    @property
    def family(self) -> str:
        """What the model is, for reports: a logit bias marks a sigmoid-trained (SigLIP) model."""
        if self.logit_bias is not None:
            return "siglip"
        return "sharedclip" if self.architecture == "shared" else "clip"

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self._encode_image(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self._encode_text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> CLIPOutput:
        image_unnormalized, text_unnormalized = self._encode_image(images), self._encode_text(tokens)
        image_features = F.normalize(image_unnormalized, dim=-1)
        text_features = F.normalize(text_unnormalized, dim=-1)
        return CLIPOutput(image_features=image_features, text_features=text_features,
                          logit_scale=self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX),
                          logit_bias=self.logit_bias,
                          image_unnormalized=image_unnormalized, text_unnormalized=text_unnormalized)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Image-by-text logits exp(logit_scale)·cos (+ logit_bias), unclamped, as the model's own framework
        computes them; rankings use the cosine alone (the scale and bias cannot change an order)."""
        logits = self.logit_scale.exp() * image_features @ text_features.t()
        return logits + self.logit_bias if self.logit_bias is not None else logits

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """open_clip clamps the parameter after each step so exp() stays within [1, 100]."""
        self.logit_scale.clamp_(0, math.log(LOGIT_SCALE_MAX))
