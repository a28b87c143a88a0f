from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from alignclip.cli.main import main
from alignclip.demo.run import DemoSettings, new_demo_dir
from alignclip.demo.table import COLUMNS


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out), "--workers", "0"]) == 0
    (run,) = list(out.iterdir())
    return run


def test_quick_demo_writes_a_full_report(quick_demo: Path) -> None:
    for name in ("table.md", "table.csv", "metrics.json", "index.html", "overview.png"):
        assert (quick_demo / name).is_file(), name
    methods = ["untrained", "clip", "sharedclip", "alignclip", "alignclip-nw"]
    for method in methods[1:]:
        assert list((quick_demo / method / "checkpoints").glob("step_*/model.safetensors"))
    for method in methods:
        for figure in ("projection.png", "sphere.png", "cosines.png"):
            image = Image.open(quick_demo / method / "eval" / figure)
            assert image.size[0] > 300 and image.size[1] > 200
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 20  # drawn, not blank
    page = (quick_demo / "index.html").read_text()
    assert all(f"{m}/eval/projection.png" in page for m in methods)


def test_table_numbers_equal_metrics_json(quick_demo: Path) -> None:
    document = json.loads((quick_demo / "metrics.json").read_text())
    with (quick_demo / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == list(document["methods"])
    assert len(rows[0]) - 1 == len(COLUMNS)  # every column present
    for row in rows:
        metrics = document["methods"][row["method"]]["metrics"]
        for key, value in row.items():
            if key != "method":
                assert float(value) == metrics[key], (row["method"], key)
    markdown = (quick_demo / "table.md").read_text()
    clip = document["methods"]["clip"]["metrics"]
    assert f"{clip['synthetic/modality_gap/l2m']:.3f}" in markdown.split("| clip |")[1].splitlines()[0]


def test_demo_never_clobbers_a_previous_report(tmp_path: Path) -> None:
    first, second = new_demo_dir(tmp_path), new_demo_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_demo_settings_errors() -> None:
    with pytest.raises(ValueError, match="unknown demo method 'vit'"):
        DemoSettings(methods=("clip", "vit")).validate()
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        DemoSettings(batch_size=1).validate()
    assert main(["demo", "--methods", "nope"]) == 2
