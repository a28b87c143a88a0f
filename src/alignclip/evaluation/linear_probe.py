"""Linear probe: logistic regression on frozen image features, L2 strength chosen on a held-out validation split.

The solver runs with one BLAS/OpenMP thread: these are small matrices, and on a busy 2-core machine the default
thread pool spin-waited the Fashion-MNIST probe from 4-30 s to 135-400 s (benchmarks/README.md).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from alignclip.evaluation.features import Images, extract_features
from alignclip.evaluation.gap import unit_rows
from alignclip.evaluation.result import EvalResult

DEFAULT_CS = tuple(float(c) for c in np.logspace(-2, 3, 6))


def _labels(labels: torch.Tensor | np.ndarray | Sequence[int], rows: int, name: str) -> np.ndarray:
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    if labels.ndim != 1 or labels.shape[0] != rows:
        raise ValueError(f"{name} has shape {labels.shape} but there are {rows} feature rows")
    return labels


class LinearProbe:
    """C grid search on a stratified validation split of the training features, refit on all of them, test once."""

    def __init__(self, Cs: Sequence[float] = DEFAULT_CS, val_fraction: float = 0.2, seed: int = 0,
                 max_iter: int = 1000, dataset: str = "custom") -> None:
        if len(Cs) == 0 or min(Cs) <= 0:
            raise ValueError(f"regularisation grid must be positive values, got {list(Cs)}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.Cs, self.val_fraction, self.seed = list(Cs), val_fraction, seed
        self.max_iter, self.dataset = max_iter, dataset

    def _fit(self, features: np.ndarray, labels: np.ndarray, C: float) -> Any:
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return LogisticRegression(C=C, max_iter=self.max_iter).fit(features, labels)

    def _split(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.model_selection import train_test_split

        counts = np.bincount(labels)
        counts = counts[counts > 0]
        indices = np.arange(len(labels))
        if counts.min() < 2:  # a class with one sample cannot be on both sides: plain random split
            return train_test_split(indices, test_size=self.val_fraction, random_state=self.seed)
        # stratified, with at least one sample of every class on each side (fine for tiny sets too)
        n_val = max(round(self.val_fraction * len(labels)), len(counts))
        return train_test_split(indices, test_size=n_val, random_state=self.seed, stratify=labels)

    def evaluate_features(self, train_features: torch.Tensor | np.ndarray, train_labels: Any,
                          test_features: torch.Tensor | np.ndarray, test_labels: Any) -> EvalResult:
        x_train = unit_rows(train_features, "train_features", min_rows=2).double().numpy()
        x_test = unit_rows(test_features, "test_features").double().numpy()
        y_train = _labels(train_labels, len(x_train), "train_labels")
        y_test = _labels(test_labels, len(x_test), "test_labels")
        if len(np.unique(y_train)) < 2:
            raise ValueError("linear probe needs at least 2 classes in the training labels")
        fit_idx, val_idx = self._split(y_train)
        if len(np.unique(y_train[fit_idx])) < 2:
            raise ValueError("linear probe validation split left fewer than 2 classes to fit; use more samples")
        val_scores = [float(self._fit(x_train[fit_idx], y_train[fit_idx], C).score(x_train[val_idx], y_train[val_idx]))
                      for C in self.Cs]
        best = int(np.argmax(val_scores))
        classifier = self._fit(x_train, y_train, self.Cs[best])
        info = {"best_C": self.Cs[best], "val_top1": val_scores[best], "num_train": len(y_train),
                "num_test": len(y_test), "num_classes": int(len(np.unique(y_train))), "seed": self.seed}
        return EvalResult(self.dataset, "linear_probe", {"top1": float(classifier.score(x_test, y_test))}, info)

    def evaluate(self, model: torch.nn.Module, train_images: Images, test_images: Images,
                 train_labels: Any = None, test_labels: Any = None, batch_size: int = 256,
                 device: str | torch.device | None = "cpu") -> EvalResult:
        """Extract frozen features of both splits (labels default to the sets' .targets) and probe them."""
        train_labels = getattr(train_images, "targets", None) if train_labels is None else train_labels
        test_labels = getattr(test_images, "targets", None) if test_labels is None else test_labels
        if train_labels is None or test_labels is None:
            raise ValueError("linear probe needs labels for both splits (or image sets with .targets)")
        train = extract_features(model, train_images, batch_size, device, desc="probe train features")
        test = extract_features(model, test_images, batch_size, device, desc="probe test features")
        return self.evaluate_features(train, train_labels, test, test_labels)
