"""Figures of the modality gap. matplotlib is imported lazily and used through Figure + Agg only (no pyplot state)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from alignclip.evaluation.gap import GAP_KEYS, ArrayLike, check_pairs, gap_metrics

DPI = 100
IMAGE_COLOR, TEXT_COLOR = "#1f77b4", "#ff7f0e"
# Pixel sizes (width, height) of each figure, so tests and HTML can rely on them; pages show them at >= 600 px.
FIGURE_SIZES = {"projection": (900, 760), "sphere": (800, 800), "cosines": (900, 560), "shift_sweep": (900, 560)}
PANEL_SIZE = 430  # pixels per panel of plot_projection_panels
FONT = {"font.size": 14, "legend.fontsize": 13, "axes.titlesize": 15}  # readable when the page scales a figure down
# Histogram name -> the gap_metrics key whose value (a mean over all pairs) its legend shows.
COSINE_KEYS = {"paired": "paired_cosine", "unpaired": "unpaired_cosine", "image-image": "image_cosine",
               "text-text": "text_cosine"}


def _styled(plot: Callable[..., Path]) -> Callable[..., Path]:
    """Run a plot function under FONT: matplotlib reads font sizes when each artist is created."""
    @functools.wraps(plot)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        from matplotlib import rc_context

        with rc_context(FONT):
            return plot(*args, **kwargs)
    return wrapper


def _figure(kind: str, size: tuple[int, int] | None = None) -> Any:
    from matplotlib.figure import Figure

    width, height = size or FIGURE_SIZES[kind]
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")  # no bbox_inches="tight": keeps the pixel size exact
    return path


def _sample_pairs(x: torch.Tensor, y: torch.Tensor, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(n, size=max_pairs, replace=False)) if n > max_pairs else np.arange(n)
    return x[index].double().numpy(), y[index].double().numpy()


def _pca_basis(data: np.ndarray, dims: int) -> np.ndarray:
    """Top principal directions [D, dims] of the centred rows (zero-padded when D < dims)."""
    _, _, vt = np.linalg.svd(data - data.mean(0), full_matrices=False)
    basis = vt[:dims].T
    if basis.shape[1] < dims:
        basis = np.pad(basis, ((0, 0), (0, dims - basis.shape[1])))
    return basis


def _embed_2d(data: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "pca":
        return (data - data.mean(0)) @ _pca_basis(data, 2)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30, max(2, (len(data) - 1) // 3)))
        # Single-threaded: a few hundred points need no threads, and sklearn's OpenMP pool next to torch's own
        # libgomp made each of the 1000 iterations crawl (measured 0.2 s -> 20 s on 2 shared cores).
        with threadpool_limits(limits=1):
            return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(data)
    if method == "umap":
        try:
            import umap  # optional dependency
        except ImportError:
            raise ValueError("projection 'umap' needs the umap-learn package, which is not installed") from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(data)
    raise ValueError(f"unknown projection {method!r}: expected pca, tsne or umap")


def project_pairs(image_features: ArrayLike, text_features: ArrayLike, method: str = "pca", max_pairs: int = 200,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D points ([n, 2] images, [n, 2] texts) of up to max_pairs pairs, projected jointly (PCA/t-SNE/UMAP)."""
    x, y = _sample_pairs(*check_pairs(image_features, text_features), max_pairs, seed)
    points = _embed_2d(np.concatenate([x, y]), method, seed)
    return points[: len(x)], points[len(x):]


def _draw_pairs(ax: Any, px: np.ndarray, py: np.ndarray, text_label: str) -> None:
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(np.stack([px, py], axis=1), colors="0.6", linewidths=0.4, alpha=0.6))
    ax.scatter(px[:, 0], px[:, 1], s=16, c=IMAGE_COLOR, label="image", edgecolors="none")
    ax.scatter(py[:, 0], py[:, 1], s=16, c=TEXT_COLOR, label=text_label, edgecolors="none", marker="^")


@_styled
def plot_projection(image_features: ArrayLike, text_features: ArrayLike, path: str | Path, method: str = "pca",
                    max_pairs: int = 200, seed: int = 0, title: str = "", text_label: str = "text") -> Path:
    """Both modalities in 2-D (PCA/t-SNE/UMAP of the joint sample), coloured by modality, thin lines join pairs."""
    px, py = project_pairs(image_features, text_features, method, max_pairs, seed)
    fig = _figure("projection")
    ax = fig.add_subplot()
    _draw_pairs(ax, px, py, text_label)
    ax.set_aspect("equal", adjustable="datalim")  # distances read the same along both axes
    ax.autoscale()
    ax.set_title(title or f"{method.upper()} of {len(px)} image-{text_label} pairs (lines join pairs)")
    ax.legend(loc="best", markerscale=2)
    return _save(fig, path)


@_styled
def plot_projection_panels(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                           columns: int = 4, title: str = "") -> Path:
    """One panel per run (name -> 2-D image and text points) on shared, equal axes, so gaps compare by eye."""
    if not panels:
        raise ValueError("no projection panels to plot")
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    size = PANEL_SIZE if len(panels) > 2 else 560  # one or two panels: still a readable figure
    fig = _figure("projection", (size * columns, size * rows + 60))
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    points = np.concatenate([np.concatenate([np.asarray(px), np.asarray(py)]) for px, py in panels.values()])
    centre = (points.max(0) + points.min(0)) / 2
    half = 0.55 * float((points.max(0) - points.min(0)).max()) or 1.0  # one square window for every panel
    for ax, (name, (px, py)) in zip(axes.flat, panels.items()):
        _draw_pairs(ax, np.asarray(px), np.asarray(py), "text")
        ax.set_title(name, fontsize="medium")
        ax.set_aspect("equal", adjustable="box")
    axes.flat[0].set_xlim(centre[0] - half, centre[0] + half)
    axes.flat[0].set_ylim(centre[1] - half, centre[1] + half)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="best", markerscale=2)
    fig.suptitle(title or "each run in 2-D, shared axes")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


@_styled
def plot_sphere(image_features: ArrayLike, text_features: ArrayLike, path: str | Path, max_pairs: int = 200,
                seed: int = 0, title: str = "", text_label: str = "text") -> Path:
    """Top-3 PCA directions, each point re-normalised onto the unit sphere, drawn over a wireframe sphere."""
    x, y = _sample_pairs(*check_pairs(image_features, text_features), max_pairs, seed)
    basis = _pca_basis(np.concatenate([x, y]), 3)  # basis from centred data, but uncentred points keep the offset
    fx, fy = x @ basis, y @ basis
    fx /= np.maximum(np.linalg.norm(fx, axis=1, keepdims=True), 1e-12)
    fy /= np.maximum(np.linalg.norm(fy, axis=1, keepdims=True), 1e-12)
    fig = _figure("sphere")
    ax = fig.add_subplot(projection="3d")
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 24), np.linspace(0, np.pi, 13))
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.8", linewidth=0.4)
    ax.scatter(fx[:, 0], fx[:, 1], fx[:, 2], s=12, c=IMAGE_COLOR, label="image", depthshade=False)
    ax.scatter(fy[:, 0], fy[:, 1], fy[:, 2], s=12, c=TEXT_COLOR, label=text_label, marker="^", depthshade=False)
    ax.set_box_aspect((1, 1, 1))
    ax.set_title(title or "embeddings on the sphere (top-3 PCA directions)")
    ax.legend(loc="upper left", markerscale=2)
    return _save(fig, path)


def cosine_samples(image_features: ArrayLike, text_features: ArrayLike, max_samples: int = 5000,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Samples of paired, unpaired (i != j), image-image and text-text cosines; off-diagonal pairs drawn at random."""
    x, y = check_pairs(image_features, text_features)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    paired = rng.choice(n, size=min(n, max_samples), replace=False)
    i = rng.integers(0, n, size=max_samples)
    j = (i + rng.integers(1, n, size=max_samples)) % n  # uniform over j != i
    return {"paired": (x[paired] * y[paired]).sum(1).numpy(), "unpaired": (x[i] * y[j]).sum(1).numpy(),
            "image-image": (x[i] * x[j]).sum(1).numpy(), "text-text": (y[i] * y[j]).sum(1).numpy()}


def cosine_legend(gap: Mapping[str, float]) -> dict[str, str]:
    """Histogram name -> legend label, with the mean over ALL pairs from `gap` (gap_metrics: what metrics.json
    holds), not the mean of the plotted sample, so the figure and the table never disagree."""
    return {name: f"{name} (mean {gap[key]:.4f})" for name, key in COSINE_KEYS.items()}


@_styled
def plot_cosine_histograms(image_features: ArrayLike, text_features: ArrayLike, path: str | Path,
                           max_samples: int = 5000, seed: int = 0, title: str = "",
                           gap: Mapping[str, float] | None = None) -> Path:
    """Histograms of sampled cosines; legend means from `gap` (computed with gap_metrics when not given)."""
    samples = cosine_samples(image_features, text_features, max_samples, seed)
    labels = cosine_legend(gap if gap is not None else gap_metrics(image_features, text_features))
    fig = _figure("cosines")
    ax = fig.add_subplot()
    bins = np.linspace(-1, 1, 81)
    for (name, values), color in zip(samples.items(), ("#2ca02c", "#d62728", IMAGE_COLOR, TEXT_COLOR)):
        ax.hist(values, bins=bins, density=True, alpha=0.45, color=color, label=labels[name])
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title or f"cosine similarities (histograms: up to {max_samples} sampled pairs; "
                          "means: all pairs)", fontsize="medium")
    ax.legend(loc="upper left")
    return _save(fig, path)


@_styled
def plot_shift_sweep(rows: Sequence[dict[str, float]], path: str | Path,
                     keys: Sequence[str] = ("l2m", "rmg", "paired_cosine", "unpaired_cosine", "separability"),
                     title: str = "") -> Path:
    """Each gap measure (and downstream score) against the post-hoc shift lambda."""
    if not rows:
        raise ValueError("shift sweep has no rows to plot")
    lambdas = [row["lambda"] for row in rows]
    extra = [k for k in rows[0] if k not in GAP_KEYS and k != "lambda"]  # downstream scores from a callback
    fig = _figure("shift_sweep")
    ax = fig.add_subplot()
    for key in [k for k in keys if k in rows[0]] + extra:
        ax.plot(lambdas, [row[key] for row in rows], marker="o", label=key)
    ax.set_xlabel("shift lambda (x - lambda*delta, y + lambda*delta)")
    ax.set_title(title or "post-hoc modality shift")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)
