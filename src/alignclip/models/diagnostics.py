"""Cheap in-batch modality-gap diagnostics, O(N·D): computed every training step without an N×N matrix."""
from __future__ import annotations

from typing import TypedDict

import torch


class Diagnostics(TypedDict):
    paired_cosine: torch.Tensor
    l2m: torch.Tensor  # distance between the image and text centroids (Liang et al.'s gap), one name everywhere
    image_cosine: torch.Tensor
    text_cosine: torch.Tensor


def mean_offdiagonal_cosine(features: torch.Tensor) -> torch.Tensor:
    """Mean z_i·z_j over i != j for unit rows: (||Σz||² − N) / (N(N−1))."""
    n = features.shape[0]
    if n < 2:
        return features.new_tensor(float("nan"))
    total = features.sum(dim=0)
    return (total @ total - (features * features).sum()) / (n * (n - 1))


@torch.no_grad()
def batch_gap_diagnostics(image_features: torch.Tensor, text_features: torch.Tensor) -> Diagnostics:
    x, y = image_features.detach().float(), text_features.detach().float()
    return Diagnostics(
        paired_cosine=(x * y).sum(dim=-1).mean(),
        l2m=(x.mean(dim=0) - y.mean(dim=0)).norm(),
        image_cosine=mean_offdiagonal_cosine(x),
        text_cosine=mean_offdiagonal_cosine(y),
    )
