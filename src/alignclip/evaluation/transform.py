"""Training-free gap closing as an embedding transform that every evaluation applies: per-modality offsets.

x' = normalise(x − a) for image features, y' = normalise(y − b) for text features, with offsets fitted on the
*training* pairs (fitting them on the held-out set would let the baseline see the test data):
- I0T's post-hoc mean-centring (An et al., ACL 2025): a = mean image feature, b = mean text feature;
- Liang et al. 2022's shift by λ: a = λΔ, b = −λΔ with Δ = mean image − mean text (λ = 0.5 meets halfway).
The wrapped model is what `alignclip eval --offsets FILE` evaluates, so zero-shot, retrieval, STS, the linear probe
and the gap measures all see the transformed embeddings, as a user of the transform would.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignclip.evaluation.features import encode_texts, extract_features
from alignclip.evaluation.pairs import embed_pairs, is_pair_dataset


class OffsetModel(nn.Module):
    """`model` with its normalised embeddings moved by fixed per-modality offsets and re-normalised."""

    def __init__(self, model: nn.Module, image_offset: torch.Tensor, text_offset: torch.Tensor) -> None:
        super().__init__()
        dim = image_offset.shape[-1]
        if image_offset.shape != (dim,) or text_offset.shape != (dim,):
            raise ValueError(f"offsets must be two vectors of one length, got {tuple(image_offset.shape)} and "
                             f"{tuple(text_offset.shape)}")
        self.model = model
        self.register_buffer("image_offset", image_offset.float())
        self.register_buffer("text_offset", text_offset.float())
        self.image_size, self.context_length = model.image_size, model.context_length
        self.architecture, self.config = getattr(model, "architecture", None), getattr(model, "config", None)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        moved = self.model.encode_image(images, normalize=True) - self.image_offset
        return F.normalize(moved, dim=-1) if normalize else moved

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        moved = self.model.encode_text(tokens, normalize=True) - self.text_offset
        return F.normalize(moved, dim=-1) if normalize else moved


def training_features(model: nn.Module, dataset: str, num_samples: int = 2000, seed: int = 0,
                      batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (image, text) features of training pairs, row i a pair: "synthetic" (the training split of
    data.synthetic_seed = `seed`, each image's caption) or pairs (csv:/tsv:/captions:/wds:, the first N images)."""
    if dataset == "synthetic":
        from alignclip.data.synthetic import SyntheticShapes

        train = SyntheticShapes(num_samples, seed=seed, image_size=model.image_size, train=True)
        images = extract_features(model, train, batch_size, desc="training images")
        texts = encode_texts(model, [train.captions_for(i, 1)[0] for i in range(len(train))], batch_size=batch_size)
        return images, texts
    if is_pair_dataset(dataset):
        pairs = embed_pairs(model, dataset, num_samples, batch_size=batch_size)
        return pairs.image_features, pairs.paired_text()
    raise ValueError(f"training features need image-caption pairs (synthetic, csv:, tsv:, captions:, wds:), got "
                     f"{dataset!r}")


def means(image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return image.double().mean(0).float(), text.double().mean(0).float()


def centring_offsets(image_mean: torch.Tensor, text_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """I0T: remove each modality's own mean."""
    return image_mean, text_mean


def shift_offsets(image_mean: torch.Tensor, text_mean: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Liang et al.'s shift, as evaluation/gap.shift_modalities does it (there with the evaluated set's means)."""
    delta = image_mean - text_mean
    return lam * delta, -lam * delta


def best_shift(image: torch.Tensor, text: torch.Tensor, lambdas: Sequence[float]) -> tuple[float, list[float]]:
    """The λ whose shift (Δ from these pairs) gives the best mean retrieval R@1 of both directions on these pairs
    (the training pairs: λ is chosen without the held-out set); returns (λ, the score of each λ)."""
    delta = image.double().mean(0) - text.double().mean(0)
    scores = []
    for lam in lambdas:
        x = F.normalize(image.double() - lam * delta, dim=-1)
        y = F.normalize(text.double() + lam * delta, dim=-1)
        similarity = x @ y.T
        target = torch.arange(len(x))
        scores.append(float(((similarity.argmax(1) == target).double().mean()
                             + (similarity.argmax(0) == target).double().mean()) / 2))
    return float(lambdas[int(np.argmax(scores))]), scores


def save_offsets(path: str | Path, image_offset: torch.Tensor, text_offset: torch.Tensor, **info: float | str) -> None:
    np.savez(path, image=image_offset.numpy(), text=text_offset.numpy(), **{k: np.asarray(v) for k, v in info.items()})


def load_offsets(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """An .npz with `image` and `text` vectors (what save_offsets writes); one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"offsets file not found: {path}")
    try:
        with np.load(path) as data:
            return torch.from_numpy(data["image"]).float(), torch.from_numpy(data["text"]).float()
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not an offsets file (an .npz with 'image' and 'text' vectors): {e}") from None
