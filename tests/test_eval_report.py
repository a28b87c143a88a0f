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
from alignclip.evaluation.compare import write_comparison
from alignclip.evaluation.report import flatten_metrics, write_report
from alignclip.evaluation.result import EvalResult


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
    assert "Toy &lt;report&gt;" in page and "modality gap (image vs its own caption)" in page
    assert f"<td>{gap['l2m']:.4f}</td>" in page and 'title="l2m">l2m ↓</th>' in page  # short name, key as tooltip
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == ["cosines.png", "projection.png", "shift_sweep.png", "sphere.png"]
    assert all((tmp_path / "out" / s).is_file() for s in sources)


def test_write_report_without_features_and_bad_call(tmp_path: Path) -> None:
    paths = write_report(tmp_path, {"a": {"b": 1.5}})
    assert set(paths) == {"metrics", "index"} and "a/b" in paths["index"].read_text()
    with pytest.raises(ValueError, match="both image_features and text_features"):
        write_report(tmp_path, {}, image_features=torch.ones(3, 2))


def test_flatten_metrics() -> None:
    """Scores only, keyed dataset/task/metric; run-level values and each result's info are not metrics."""
    results = [EvalResult("synthetic/shape", "zeroshot_classification", {"top1": 0.5}, {"num_samples": 7})]
    assert flatten_metrics(results) == {"synthetic/shape/zeroshot_classification/top1": 0.5}
    document = {"results": [r.to_dict() for r in results], "gap": {"l2m": 1}, "seed": 3}
    assert flatten_metrics(document) == {"synthetic/shape/zeroshot_classification/top1": 0.5}


def test_result_round_trips_through_its_record() -> None:
    result = EvalResult("classes/pets", "modality_gap", {"l2m": 1.2}, {"pairs": "image, class prompt"})
    assert EvalResult.from_dict(result.to_dict()) == result and not hasattr(result, "__getitem__")
    with pytest.raises(ValueError, match="not an evaluation result"):
        EvalResult.from_dict({"dataset": "d"})


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
    assert ["d/t/top1", "0.2500", "0.5000"] in rows and ["d/t/l2m", "1.0000", ""] in rows
    assert "| d/t/top1 | 0.2500 | **0.5000** |" in paths["markdown"].read_text()  # the best run in bold
    page = paths["index"].read_text()
    assert '<img src="../clip/sphere.png"' in page and '<img src="projection.png"' in page  # shared-axes panels
    with pytest.raises(FileNotFoundError, match="no metrics.json for run"):
        write_comparison([tmp_path / "nothing"], tmp_path / "cmp")
    with pytest.raises(ValueError, match="at least one run"):
        write_comparison([], tmp_path / "cmp")


def _capture_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Keep each saved matplotlib figure (by file name) so a test can read its legend and axes."""
    figures: dict[str, object] = {}
    save = plots._save

    def keep(fig: object, path: str | Path) -> Path:
        figures[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_cosine_legend_shows_the_means_in_metrics_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The histogram legend shows metrics.json's means, not those of the 5000-pair sample it draws."""
    figures = _capture_figures(monkeypatch)
    x, y = gapped_pairs(300)
    result = EvalResult("toy", "modality_gap", gap_metrics(x, y))
    paths = write_report(tmp_path, {"results": [result]}, x, y)
    stored = json.loads(paths["metrics"].read_text())["results"][0]["metrics"]
    legend = [t.get_text() for t in figures["cosines.png"].axes[0].get_legend().get_texts()]
    assert legend == [f"{name} (mean {stored[key]:.4f})" for name, key in plots.COSINE_KEYS.items()]
    sampled = plots.cosine_samples(x, y, max_samples=5000)["unpaired"].mean()
    assert abs(sampled - stored["unpaired_cosine"]) > 5e-5  # the sample's mean would have printed differently


def test_report_keeps_bookkeeping_apart_and_labels_the_run(tmp_path: Path) -> None:
    results = [EvalResult("synthetic/shape", "linear_probe", {"top1": 0.75}, {"best_C": 10.0, "num_train": 143}),
               EvalResult("pets", "class_prompt_gap", {"l2m": 1.2}, {"pairs": "image, the prompt of its class"})]
    document = {"model": "ckpt", "method": "alignclip (IMSep)", "architecture": "shared", "seed": 4,
                "num_samples": 153, "results": results}
    page = write_report(tmp_path, document)["index"].read_text()
    scores, run_info = page.split('id="run-info"')
    assert "<b>alignclip (IMSep) · shared architecture</b>" in scores and "num_samples 153" in scores
    assert "best_C" not in scores and "num_train" not in scores and "best_C=10, num_train=143" in run_info
    assert "image-to-class-prompt gap (not the pair gap" in scores and "modality gap" not in scores


def test_shift_sweep_is_one_small_table(tmp_path: Path) -> None:
    x, y = gapped_pairs(60)
    sweep = gap_shift_sweep(x, y, [0.0, 0.25, 0.5])
    page = write_report(tmp_path, {"results": []}, sweep=sweep)["index"].read_text()
    table = page.split("post-hoc shift sweep</h3>")[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 3 and table.count("<th") == 1 + 5  # λ + the five main measures
    assert "shift_sweep/" not in page and f"{sweep[2]['l2m']:.4f}" in table


def test_comparison_marks_the_best_run_per_column(tmp_path: Path) -> None:
    for name, l2m, top1, cos in (("a", 1.0, 0.5, 0.9), ("b", 0.5, 0.25, 0.1)):
        (tmp_path / name).mkdir()
        results = [EvalResult("d", "modality_gap", {"l2m": l2m, "image_cosine": cos}),
                   EvalResult("d", "zeroshot_classification", {"top1": top1})]
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"method": "clip", "architecture": "clip", "results": [r.to_dict() for r in results]}))
    page = write_comparison([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")["index"].read_text()
    best = re.findall(r'<td class="best">([^<]+)</td>', page)
    assert best == ["0.5000", "0.5000"]  # b's l2m (lower is better), a's top-1; intra-modal cosine: no best
    assert "a · clip/clip" in page and "b · clip/clip" in page


def test_projection_panels_share_their_axes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = _capture_figures(monkeypatch)
    small, large = gapped_pairs(40, seed=1), gapped_pairs(40, seed=2)
    panels = {"small": plots.project_pairs(*small), "large": plots.project_pairs(large[0] * 1, large[1] + 5.0)}
    plots.plot_projection_panels(panels, tmp_path / "p.png")
    first, second = figures["p.png"].axes[:2]
    assert first.get_xlim() == second.get_xlim() and first.get_ylim() == second.get_ylim()
    with Image.open(tmp_path / "p.png") as image:
        assert image.size[0] >= 800


def test_figures_are_wide_with_readable_legends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = _capture_figures(monkeypatch)
    x, y = gapped_pairs(50)
    write_report(tmp_path, {"results": []}, x, y, sweep=gap_shift_sweep(x, y, [0.0, 0.5]))
    assert min(width for width, _ in plots.FIGURE_SIZES.values()) >= 800
    for name, fig in figures.items():
        legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
        assert min(t.get_fontsize() for t in legend.get_texts()) >= 12, name


def test_comparison_bolds_only_beyond_the_noise_and_labels_post_training(tmp_path: Path) -> None:
    """Separability 0.63 ± 0.02 vs 0.65 ± 0.02 is a tie (no bold); 0.50 ± 0.02 vs 0.90 is not. A post-trained control
    keeps its method's name and says it was post-trained."""
    runs = {"base": ("clip", 0.65, 0.90), "post": ("clip, post-trained from runs/base", 0.63, 0.50)}
    for name, (method, tied, apart) in runs.items():
        (tmp_path / name).mkdir()
        results = [EvalResult("d", "modality_gap", {"separability": tied, "separability_std": 0.02}),
                   EvalResult("e", "modality_gap", {"separability": apart, "separability_std": 0.02})]
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"method": method, "architecture": "clip", "results": [r.to_dict() for r in results]}))
    paths = write_comparison([tmp_path / "base", tmp_path / "post"], tmp_path / "cmp")
    page = paths["index"].read_text()
    assert re.findall(r'<td class="best">([^<]+)</td>', page) == ["0.5000 ± 0.0200"]
    assert "0.6300 ± 0.0200" in page and "separability_std" not in page.split("<h3>")[1]  # folded into the cell
    assert "post · clip post-trained/clip" in page and "clip,/clip" not in page and "base · clip/clip" in page
    markdown = paths["markdown"].read_text()
    assert "| d/modality_gap/separability | 0.6500 | 0.6300 |" in markdown
    assert "| e/modality_gap/separability | 0.9000 | **0.5000** |" in markdown
