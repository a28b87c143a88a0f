from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

from alignclip.cli.main import main
from alignclip.demo.curves import QUANTITIES, collapse_diagnosis, read_curves
from alignclip.demo.run import DemoSettings, new_demo_dir
from alignclip.demo.table import COLUMNS, Column, cell

METHODS = ["untrained", "clip", "clip+imsep-nw"]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out), "--workers", "0", "--seeds", "2",
                 "--methods", "clip", "--posttrain", "clip+imsep-nw"]) == 0
    (run,) = list(out.iterdir())
    return run


@pytest.mark.slow
def test_quick_demo_writes_a_full_report(quick_demo: Path) -> None:
    for name in ("table.md", "table.csv", "metrics.json", "index.html", "overview.png"):
        assert (quick_demo / name).is_file(), name
    for method in METHODS[1:]:
        for seed in (0, 1):
            assert list((quick_demo / method / f"seed-{seed}" / "checkpoints").glob("step_*/model.safetensors"))
    for method in METHODS:
        for figure in ("projection.png", "sphere.png", "cosines.png"):
            image = Image.open(quick_demo / method / "seed-0" / "eval" / figure)
            assert image.size[0] > 300 and image.size[1] > 200
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 20  # drawn, not blank
    page = (quick_demo / "index.html").read_text()
    assert all(f"{m}/seed-0/eval/projection.png" in page for m in METHODS)
    for _, file, _ in QUANTITIES:
        assert f"src=\"{file}\"" in page
        assert len(Image.open(quick_demo / file).convert("RGB").getcolors(maxcolors=1 << 20)) > 20


@pytest.mark.slow
def test_table_cells_are_mean_and_std_of_the_seeds(quick_demo: Path) -> None:
    document = json.loads((quick_demo / "metrics.json").read_text())
    with (quick_demo / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["seed"]) for r in rows] == [("untrained", "0")] + [
        (m, s) for m in METHODS[1:] for s in ("0", "1")]
    assert len(rows[0]) - 2 == len(COLUMNS)  # every column present
    for row in rows:
        entry = document["methods"][row["method"]]
        metrics = entry["metrics"][entry["seeds"].index(int(row["seed"]))]
        for key, value in row.items():
            if key not in ("method", "seed") and value:
                assert float(value) == metrics[key], (row["method"], key)
    l2m = [m["synthetic/modality_gap/l2m"] for m in document["methods"]["clip"]["metrics"]]
    line = (quick_demo / "table.md").read_text().split("| clip |")[1].splitlines()[0]
    assert f"{statistics.mean(l2m):.3f} ± {statistics.stdev(l2m):.3f}" in line.split("|")[0]
    collapsed = sum(m["train/collapsed"] for m in document["methods"]["clip+imsep-nw"]["metrics"])
    line = (quick_demo / "table.md").read_text().split("| clip+imsep-nw |")[1].splitlines()[0]
    assert f" {collapsed:.0f}/2 " in line


@pytest.mark.slow
def test_posttraining_rows_start_from_the_same_seeds_clip(quick_demo: Path) -> None:
    for seed in (0, 1):
        run = quick_demo / "clip+imsep-nw" / f"seed-{seed}"
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["method"] == "alignclip" and config["loss"]["weighting"] == "negatives"
        start = Path(config["model"]["init_from"])
        assert start.parent.parent == quick_demo / "clip" / f"seed-{seed}"
        (end,) = (run / "checkpoints").glob("step_*")
        assert json.loads((end / "config.json").read_text())["architecture"] == "clip"
        before, after = load_file(start / "model.safetensors"), load_file(end / "model.safetensors")
        assert before.keys() == after.keys()
        assert any(not (before[k] == after[k]).all() for k in before)  # it trained


def test_curves_read_the_logged_values(tmp_path: Path) -> None:
    """Both losses log the mean of the two directions, so the curves are the logged values (hand-made logs)."""
    lines = [{"step": 10, "contrastive_loss": math.log(128), "l2m": 0.5, "image_cosine": 0.99, "text_cosine": 0.5},
             {"step": 20, "contrastive_loss": 3.0, "image_cosine": 0.2, "text_cosine": 0.95},
             {"step": 25, "contrastive_loss": 1.0, "image_cosine": 0.1, "text_cosine": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    curves = read_curves(tmp_path, step_offset=100)
    assert curves["contrastive_loss"][0] == pytest.approx(math.log(128)) and curves["l2m"][0] == 0.5
    assert list(curves["step"]) == [110, 120, 125] and math.isnan(curves["l2m"][1])
    assert read_curves(tmp_path)["contrastive_loss"][1] == 3.0
    assert math.isnan(curves["separation_loss"][0])
    assert collapse_diagnosis(tmp_path, 0.9) == {"train/collapsed": 0.0, "train/steps_collapsed": 20.0}
    assert collapse_diagnosis(tmp_path, 0.1)["train/collapsed"] == 1.0


def test_cells_hand_worked() -> None:
    column = Column("x", "k", "lower")
    assert cell([{"k": 0.1}, {"k": 0.3}], column) == "0.200 ± 0.141"
    assert cell([{"k": 0.1}], column) == "0.100"
    assert cell([{}], column) == "-"
    assert cell([{"c": 1.0}, {"c": 0.0}, {"c": 1.0}], Column("c", "c", "", count=True)) == "2/3"


def test_html_table_marks_the_best_trained_method() -> None:
    """Through the reports' one table helper: best mean bold (never the untrained reference row), keys as tooltips."""
    from alignclip.demo.table import html_table

    rows = {"untrained": [{"k": 0.0}], "a": [{"k": 0.5}, {"k": 0.7}], "b": [{"k": 0.2}]}
    page = html_table(rows, columns=(Column("l2m", "k", "lower"),))
    assert '<td class="best">0.200</td>' in page and page.count('class="best"') == 1
    assert '<th title="k">l2m</th>' in page and "0.600 ± 0.141" in page


def test_demo_never_clobbers_a_previous_report(tmp_path: Path) -> None:
    first, second = new_demo_dir(tmp_path), new_demo_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_demo_settings_errors() -> None:
    with pytest.raises(ValueError, match="unknown demo method 'vit'"):
        DemoSettings(methods=("clip", "vit")).validate()
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        DemoSettings(batch_size=1).validate()
    with pytest.raises(ValueError, match="add clip to the methods"):
        DemoSettings(methods=("alignclip",)).validate()
    with pytest.raises(ValueError, match="unknown post-training row 'clip\\+x'"):
        DemoSettings(posttrain=("clip+x",)).validate()
    assert main(["demo", "--methods", "nope"]) == 2
