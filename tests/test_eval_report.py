"""Report figures (pixel size, non-blank, both modality colours), metrics.json, index.html and run comparison."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignclip.evaluation import plots
from alignclip.evaluation.gap import gap_metrics, gap_shift_sweep
from alignclip.evaluation.report import flatten_metrics, write_comparison, write_report


def gapped_pairs(n: int = 120, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, dim, generator=g)
    x, y = shared + 0.3 * torch.randn(n, dim, generator=g), shared + 0.3 * torch.randn(n, dim, generator=g)
    x[:, 0] += 3.0
    y[:, 0] -= 3.0
    return x, y


def has_colour(pixels: np.ndarray, hex_colour: str, tolerance: int = 40, alpha: float = 1.0) -> bool:
    """At least a few pixels of `hex_colour` (drawn with `alpha` over white)."""
    rgb = alpha * np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) + (1 - alpha) * 255
    return bool((np.abs(pixels[..., :3].astype(int) - rgb).max(axis=-1) < tolerance).sum() > 20)


def check_png(path: Path, kind: str, colours: tuple[str, ...] = (plots.IMAGE_COLOR, plots.TEXT_COLOR),
              alpha: float = 1.0) -> None:
    with Image.open(path) as image:
        assert image.size == plots.FIGURE_SIZES[kind], kind
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10, f"{kind} looks blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, f"{kind} has too few colours"
    for colour in colours:
        assert has_colour(pixels, colour, alpha=alpha), f"{kind} lacks {colour}"


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_plot(tmp_path: Path, method: str) -> None:
    x, y = gapped_pairs(60)
    path = plots.plot_projection(x, y, tmp_path / f"{method}.png", method=method, max_pairs=30)
    check_png(path, "projection")


def test_sphere_and_cosine_plots(tmp_path: Path) -> None:
    x, y = gapped_pairs()
    check_png(plots.plot_sphere(x.numpy(), y.numpy(), tmp_path / "s.png"), "sphere")
    # histogram bars are drawn with alpha 0.45; the paired (green) and unpaired (red) bars barely overlap here
    check_png(plots.plot_cosine_histograms(x, y, tmp_path / "c.png"), "cosines", ("#2ca02c", "#d62728"), alpha=0.45)


def test_cosine_samples_agree_with_gap_metrics() -> None:
    x, y = gapped_pairs(200)
    samples = plots.cosine_samples(x, y, max_samples=20000, seed=1)
    m = gap_metrics(x, y)
    assert samples["paired"].mean() == pytest.approx(m["paired_cosine"], abs=1e-5)  # all 200 pairs
    assert samples["unpaired"].mean() == pytest.approx(m["unpaired_cosine"], abs=0.02)
    assert samples["image-image"].mean() == pytest.approx(m["image_cosine"], abs=0.02)


def test_unknown_projection_and_missing_umap(tmp_path: Path) -> None:
    x, y = gapped_pairs(10)
    with pytest.raises(ValueError, match="unknown projection 'mds'"):
        plots.plot_projection(x, y, tmp_path / "p.png", method="mds")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="umap-learn"):
            plots.plot_projection(x, y, tmp_path / "p.png", method="umap")


def test_write_report(tmp_path: Path) -> None:
    x, y = gapped_pairs()
    gap = gap_metrics(x, y)
    sweep = gap_shift_sweep(x, y, [0.0, 0.5])
    metrics = {"model": "toy", "results": [{"dataset": "toy", "task": "modality_gap", "metrics": gap}],
               "nan_value": float("nan")}
    paths = write_report(tmp_path / "out", metrics, x, y, title="Toy <report>", sweep=sweep)
    stored = json.loads(paths["metrics"].read_text())
    assert stored["results"][0]["metrics"]["l2m"] == pytest.approx(gap["l2m"]) and stored["nan_value"] is None
    for kind in ("projection", "sphere", "cosines"):
        check_png(paths[kind], kind, *((("#2ca02c", "#d62728"), 0.45) if kind == "cosines" else ()))
    check_png(paths["shift_sweep"], "shift_sweep", colours=())
    page = paths["index"].read_text()
    assert "Toy &lt;report&gt;" in page and "toy/modality_gap/l2m" in page and f"{gap['l2m']:.4f}" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == ["cosines.png", "projection.png", "shift_sweep.png", "sphere.png"]
    assert all((tmp_path / "out" / s).is_file() for s in sources)


def test_write_report_without_features_and_bad_call(tmp_path: Path) -> None:
    paths = write_report(tmp_path, {"a": {"b": 1.5}})
    assert set(paths) == {"metrics", "index"} and "a/b" in paths["index"].read_text()
    with pytest.raises(ValueError, match="both image_features and text_features"):
        write_report(tmp_path, {}, image_features=torch.ones(3, 2))


def test_flatten_metrics() -> None:
    metrics = {"results": [{"dataset": "synthetic/shape", "task": "zeroshot_classification",
                            "metrics": {"top1": 0.5}}], "gap": {"l2m": 1}, "name": "x", "flag": True,
               "sweep": [{"lambda": 0.5}]}
    assert flatten_metrics(metrics) == {"results/synthetic/shape/zeroshot_classification/top1": 0.5,
                                        "gap/l2m": 1.0, "sweep/0/lambda": 0.5}


def test_compare_runs(tmp_path: Path) -> None:
    x, y = gapped_pairs(40)
    run_a, run_b = tmp_path / "clip", tmp_path / "alignclip"
    write_report(run_a, {"results": [{"dataset": "d", "task": "t", "metrics": {"top1": 0.25, "l2m": 1.0}}]}, x, y)
    (run_b / "eval").mkdir(parents=True)
    (run_b / "eval" / "metrics.json").write_text(json.dumps({"results": [{"dataset": "d", "task": "t",
                                                                           "metrics": {"top1": 0.5}}]}))
    paths = write_comparison([run_a, run_b], tmp_path / "cmp")
    rows = list(csv.reader(paths["csv"].open()))
    assert rows[0] == ["metric", str(run_a), str(run_b)]
    assert ["results/d/t/top1", "0.2500", "0.5000"] in rows and ["results/d/t/l2m", "1.0000", ""] in rows
    assert "| results/d/t/top1 | 0.2500 | 0.5000 |" in paths["markdown"].read_text()
    page = paths["index"].read_text()
    assert '<img src="../clip/projection.png"' in page
    with pytest.raises(FileNotFoundError, match="no metrics.json for run"):
        write_comparison([tmp_path / "nothing"], tmp_path / "cmp")
    with pytest.raises(ValueError, match="at least one run"):
        write_comparison([], tmp_path / "cmp")
