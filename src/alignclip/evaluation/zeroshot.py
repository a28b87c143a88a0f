"""Zero-shot classification: class names x prompt templates -> averaged, re-normalised text classifier (CLIP style)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from alignclip.evaluation.features import Images, TokenizeFn, encode_texts, extract_features
from alignclip.evaluation.result import EvalResult

GENERIC_TEMPLATES = ["a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}."]
FASHION_TEMPLATES = ["a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of a {}.",
                     "a photo of the {}, a type of clothing."]


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top1, top5 (only with >= 5 classes) and mean per-class recall over the classes present in `labels`."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    if logits.shape[0] == 0:
        raise ValueError("no samples to score")
    num_classes = logits.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    predictions = logits.argmax(dim=1)
    correct = predictions == labels
    metrics = {"top1": float(correct.double().mean())}
    if num_classes >= 5:
        top5 = logits.topk(5, dim=1).indices
        metrics["top5"] = float((top5 == labels[:, None]).any(dim=1).double().mean())
    recalls = [correct[labels == c].double().mean() for c in labels.unique()]
    metrics["mean_per_class_recall"] = float(torch.stack(recalls).mean())
    return metrics


class ZeroShotClassifier:
    """Build a text classifier for `classnames` from `templates` and score image features against it."""

    def __init__(self, classnames: Sequence[str], templates: Sequence[str] = GENERIC_TEMPLATES,
                 dataset: str = "custom", tokenizer: TokenizeFn | None = None, batch_size: int = 256,
                 device: str | torch.device | None = "cpu") -> None:
        if len(classnames) == 0:
            raise ValueError(f"zero-shot task {dataset!r} has an empty class list")
        if len(templates) == 0:
            raise ValueError(f"zero-shot task {dataset!r} has no prompt templates")
        bad = [t for t in templates if "{}" not in t]
        if bad:
            raise ValueError(f"prompt template {bad[0]!r} has no '{{}}' placeholder for the class name")
        self.classnames, self.templates = list(classnames), list(templates)
        self.dataset, self.tokenizer = dataset, tokenizer
        self.batch_size, self.device = batch_size, device

    def class_embeddings(self, model: torch.nn.Module) -> torch.Tensor:
        """[C, D]: per class, the mean of its prompt embeddings, re-normalised (CLIP's prompt ensembling)."""
        prompts = [template.format(name) for name in self.classnames for template in self.templates]
        features = encode_texts(model, prompts, self.tokenizer, self.batch_size, self.device, desc="class prompts")
        features = features.view(len(self.classnames), len(self.templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)

    def evaluate_features(self, model: torch.nn.Module, image_features: torch.Tensor,
                          labels: torch.Tensor) -> EvalResult:
        """Score precomputed image features (so several tasks can share one pass over the images)."""
        weights = self.class_embeddings(model)
        if image_features.shape[1] != weights.shape[1]:
            raise ValueError(f"image features have dim {image_features.shape[1]} but text features {weights.shape[1]}")
        logits = F.normalize(image_features.float(), dim=-1) @ weights.T
        info = {"num_samples": int(logits.shape[0]), "num_classes": len(self.classnames),
                "num_templates": len(self.templates)}
        return EvalResult(self.dataset, "zeroshot_classification", classification_metrics(logits, labels), info)

    def evaluate(self, model: torch.nn.Module, images: Images, labels: torch.Tensor | None = None) -> EvalResult:
        """Images: a LabelledImages set (labels from its .targets), a tensor or a loader (labels given)."""
        if labels is None:
            labels = getattr(images, "targets", None)
            if labels is None:
                raise ValueError("labels are required unless the image set has .targets")
        features = extract_features(model, images, self.batch_size, self.device)
        return self.evaluate_features(model, features, torch.as_tensor(labels))
