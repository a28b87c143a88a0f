"""Modality-gap measures on paired image/text embeddings (any model: torch or numpy rows, row i of each is a pair).

All pairwise means use identities (sum_{i,j} x_i.x_j = ||sum_i x_i||^2) or blocked products, so 100k x 512 pairs
never materialise an N x N matrix.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]

# Pairwise sums for uniformity are O(N^2 D); above this many rows they run on a fixed-seed subset (U-statistic).
UNIFORMITY_MAX_SAMPLES = 10_000
# The image-vs-text linear classifier trains on at most this many pairs (fixed-seed subset).
SEPARABILITY_MAX_PAIRS = 20_000
SEPARABILITY_TEST_FRACTION = 0.3
RMG_MATCH_FLOOR = 1e-3

# Bootstrap resamples (over pairs) behind the ± of l2m and separability: sampling noise of the evaluated pairs.
BOOTSTRAP_RESAMPLES = 200
SEPARABILITY_CHANCE = 0.5  # both classes equally large: a classifier that cannot tell them apart

GAP_KEYS = ("l2m", "l2m_std", "l2i", "paired_cosine", "unpaired_cosine", "image_cosine", "text_cosine", "rmg",
            "alignment", "uniformity_image", "uniformity_text", "separability", "separability_std")


def as_float_tensor(features: ArrayLike, name: str) -> torch.Tensor:
    """Accept torch or numpy; return a finite 2-D float32 CPU tensor or raise a one-line ValueError."""
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(np.ascontiguousarray(features))
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(features.shape)}")
    if not (features.is_floating_point() or features.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} has unsupported dtype {features.dtype}")
    features = features.detach().to("cpu", torch.float32)
    if not torch.isfinite(features).all():
        bad = int((~torch.isfinite(features)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or inf values in {bad} row(s)")
    return features


def l2_normalize(features: torch.Tensor, name: str = "features") -> torch.Tensor:
    norms = features.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has {int((norms == 0).sum())} all-zero row(s) that cannot be L2-normalised")
    return features / norms


def unit_rows(features: ArrayLike, name: str, min_rows: int = 1) -> torch.Tensor:
    """Validate one embedding matrix and return it L2-normalised as float32."""
    features = as_float_tensor(features, name)
    if features.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {features.shape[0]}")
    return l2_normalize(features, name)


def check_pairs(image_features: ArrayLike, text_features: ArrayLike, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate paired embeddings and return both L2-normalised as float32 tensors."""
    x = as_float_tensor(image_features, "image_features")
    y = as_float_tensor(text_features, "text_features")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"image_features has {x.shape[0]} rows but text_features has {y.shape[0]}; rows must be pairs")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"image_features has dim {x.shape[1]} but text_features has dim {y.shape[1]}")
    if x.shape[0] < min_rows:
        raise ValueError(f"need at least {min_rows} pairs for gap measures, got {x.shape[0]}")
    return l2_normalize(x, "image_features"), l2_normalize(y, "text_features")


def _offdiag_mean_cosine(sum_a: torch.Tensor, sum_b: torch.Tensor, diag_sum: float, n: int) -> float:
    """mean_{i != j} a_i.b_j from column sums: (sum a).(sum b) minus the diagonal terms."""
    return float((sum_a @ sum_b - diag_sum) / (n * (n - 1)))


def _subset(n: int, max_rows: int, seed: int) -> torch.Tensor | None:
    if n <= max_rows:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:max_rows].sort().values


def uniformity(features: torch.Tensor, t: float = 2.0, chunk_size: int = 4096,
               max_samples: int = UNIFORMITY_MAX_SAMPLES, seed: int = 0) -> float:
    """Wang & Isola (2020): log mean_{i != j} exp(-t ||f_i - f_j||^2) for unit rows.

    For unit rows ||f_i - f_j||^2 = 2 - 2 f_i.f_j, so each (chunk x chunk) tile of the upper triangle is one
    matmul and an in-place exp(2t (g - 1)). Every term lies in [exp(-4t), 1], so no logsumexp is needed; tile sums
    are accumulated in float64. Rows above `max_samples` are subsampled with a fixed seed (an unbiased
    U-statistic estimate of the same mean).
    """
    index = _subset(features.shape[0], max_samples, seed)
    f = features if index is None else features[index]
    n = f.shape[0]
    total = 0.0
    for a in range(0, n, chunk_size):
        fa = f[a:a + chunk_size]
        for b in range(a, n, chunk_size):
            block = (fa @ f[b:b + chunk_size].T).clamp_(max=1.0).sub_(1.0).mul_(2.0 * t).exp_()
            if a == b:
                block.fill_diagonal_(0.0)
            total += (1.0 if a == b else 2.0) * float(block.sum(dtype=torch.float64))
    return math.log(total / (n * (n - 1)))


def _held_out_correct(image_features: torch.Tensor, text_features: torch.Tensor, test_fraction: float,
                      max_pairs: int, seed: int, C: float) -> np.ndarray:
    """Per held-out pair: the fraction (0, 0.5, 1) of its image and caption the image-vs-text classifier gets right."""
    from sklearn.linear_model import LogisticRegression

    n = image_features.shape[0]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)[:max_pairs]
    n_test = min(max(1, round(test_fraction * len(order))), len(order) - 1)
    test, train = order[:n_test], order[n_test:]

    def stack(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        data = torch.cat([image_features[rows], text_features[rows]]).double().numpy()
        labels = np.r_[np.zeros(len(rows), dtype=np.int64), np.ones(len(rows), dtype=np.int64)]
        return data, labels

    x_train, y_train = stack(train)
    x_test, y_test = stack(test)
    classifier = LogisticRegression(C=C, max_iter=1000)
    classifier.fit(x_train, y_train)
    correct = (classifier.predict(x_test) == y_test).astype(np.float64)
    return (correct[:n_test] + correct[n_test:]) / 2


def separability(image_features: torch.Tensor, text_features: torch.Tensor,
                 test_fraction: float = SEPARABILITY_TEST_FRACTION,
                 max_pairs: int = SEPARABILITY_MAX_PAIRS, seed: int = 0, C: float = 1.0) -> float:
    """Held-out accuracy of a logistic regression telling image from text embeddings.

    Split by pair, so a pair's image and text sit on the same side and the classifier cannot exploit pair
    identity; both classes are equally large, so 0.5 (SEPARABILITY_CHANCE) means the modalities overlap and 1.0
    means separated. At a few hundred held-out pairs its sampling noise is a few hundredths (gap_metrics reports
    it as separability_std), so a value slightly below 0.5 is chance, not anti-separation.
    """
    return float(_held_out_correct(image_features, text_features, test_fraction, max_pairs, seed, C).mean())


def bootstrap_std(values: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> float:
    """Standard deviation of the mean of `values` over resamples with replacement (the mean's sampling noise)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(resamples, len(values)))
    return float(values[draws].mean(axis=1).std(ddof=1))


def l2m_bootstrap_std(x: torch.Tensor, y: torch.Tensor, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                      chunk: int = 25) -> float:
    """Bootstrap std of l2m over pairs: each resample's centroids are counts @ rows, so no pair matrix is built."""
    generator = torch.Generator().manual_seed(seed)
    n, diff = x.shape[0], (x.double() - y.double())
    values = []
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        draws = torch.randint(0, n, (rows, n), generator=generator)
        counts = torch.zeros(rows, n, dtype=torch.float64)
        counts.scatter_add_(1, draws, torch.ones(rows, n, dtype=torch.float64))
        values.append((counts @ diff / n).norm(dim=1))
    return float(torch.cat(values).std())


def gap_metrics(image_features: ArrayLike, text_features: ArrayLike, chunk_size: int = 4096,
                seed: int = 0) -> dict[str, float]:
    """Every gap measure on paired rows (x_i, y_i), both L2-normalised first; means over i != j exclude pairs.

    l2m = ||mean x - mean y|| (Liang et al. 2022); l2i = mean ||x_i - y_i||; paired_cosine = mean x_i.y_i;
    unpaired/image/text_cosine = mean over i != j of x_i.y_j, x_i.x_j, y_i.y_j; rmg (Schrodi et al.) =
    d_m / (d_m + (d_x + d_y) / 2) with d_m = max((1 - paired)/2, 1e-3), d_x = (1 - image)/2, d_y = (1 - text)/2;
    alignment = mean ||x_i - y_i||^2 and uniformity_* (Wang & Isola 2020, t = 2, see `uniformity`);
    separability = held-out accuracy of a linear image-vs-text classifier (see `separability`; chance 0.5).
    l2m_std and separability_std: bootstrap standard deviations over the pairs (the held-out pairs for
    separability), the sampling noise to read a difference between two models against.
    """
    x, y = check_pairs(image_features, text_features)
    n = x.shape[0]
    sum_x = torch.zeros(x.shape[1], dtype=torch.float64)
    sum_y = torch.zeros_like(sum_x)
    paired = l2_pairs = sq_pairs = norm_x = norm_y = 0.0
    for start in range(0, n, chunk_size):
        xc, yc = x[start:start + chunk_size].double(), y[start:start + chunk_size].double()
        sum_x += xc.sum(0)
        sum_y += yc.sum(0)
        diff_sq = (xc - yc).pow(2).sum(1)
        paired += float((xc * yc).sum())
        l2_pairs += float(diff_sq.sqrt().sum())
        sq_pairs += float(diff_sq.sum())
        norm_x += float(xc.pow(2).sum())
        norm_y += float(yc.pow(2).sum())

    paired_cosine = paired / n
    image_cosine = _offdiag_mean_cosine(sum_x, sum_x, norm_x, n)
    text_cosine = _offdiag_mean_cosine(sum_y, sum_y, norm_y, n)
    d_match = max((1.0 - paired_cosine) / 2.0, RMG_MATCH_FLOOR)
    d_intra = ((1.0 - image_cosine) / 2.0 + (1.0 - text_cosine) / 2.0) / 2.0
    held_out = _held_out_correct(x, y, SEPARABILITY_TEST_FRACTION, SEPARABILITY_MAX_PAIRS, seed, C=1.0)
    return {
        "l2m": float((sum_x / n - sum_y / n).norm()),
        "l2m_std": l2m_bootstrap_std(x, y, seed),
        "l2i": l2_pairs / n,
        "paired_cosine": paired_cosine,
        "unpaired_cosine": _offdiag_mean_cosine(sum_x, sum_y, paired, n),
        "image_cosine": image_cosine,
        "text_cosine": text_cosine,
        "rmg": d_match / (d_match + d_intra),
        "alignment": sq_pairs / n,
        "uniformity_image": uniformity(x, chunk_size=chunk_size, seed=seed),
        "uniformity_text": uniformity(y, chunk_size=chunk_size, seed=seed),
        "separability": float(held_out.mean()),
        "separability_std": bootstrap_std(held_out, seed),
    }


def shift_modalities(image_features: ArrayLike, text_features: ArrayLike, lam: float) -> tuple[ArrayLike, ArrayLike]:
    """Post-hoc baseline: move both modalities towards each other along the centroid difference and re-project.

    With D = mean(x) - mean(y): x <- normalise(x - lam D), y <- normalise(y + lam D); lam = 0.5 closes the centroid
    difference to first order. Returns the input's type (numpy in -> numpy out).
    """
    x, y = check_pairs(image_features, text_features)
    delta = x.double().mean(0) - y.double().mean(0)
    shifted_x = l2_normalize((x.double() - lam * delta).float(), "shifted image_features")
    shifted_y = l2_normalize((y.double() + lam * delta).float(), "shifted text_features")
    if isinstance(image_features, np.ndarray):
        return shifted_x.numpy(), shifted_y.numpy()
    return shifted_x, shifted_y


def gap_shift_sweep(image_features: ArrayLike, text_features: ArrayLike, lambdas: Sequence[float],
                    evaluate_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None,
                    chunk_size: int = 4096) -> list[dict[str, float]]:
    """How every gap measure (and optional downstream scores from `evaluate_fn(x, y)`) moves with the shift lam."""
    if len(lambdas) == 0:
        raise ValueError("gap_shift_sweep needs at least one lambda")
    x, y = check_pairs(image_features, text_features)
    rows = []
    for lam in lambdas:
        shifted_x, shifted_y = shift_modalities(x, y, float(lam))
        row = {"lambda": float(lam), **gap_metrics(shifted_x, shifted_y, chunk_size=chunk_size)}
        if evaluate_fn is not None:
            row.update({key: float(value) for key, value in evaluate_fn(shifted_x, shifted_y).items()})
        rows.append(row)
    return rows
