"""The clip-art benchmark: the split builder on a fake Debian tree, and the demo on real-data pair files."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from alignclip.demo.clipart import benchmark_settings, build_clipart, clean_title, is_heldout, svg_title
from alignclip.demo.run import DemoSettings, run_demo

SVG = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:cc="http://web.resource.org/cc/"
     xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
    <dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>
  </cc:Work></rdf:RDF></metadata>
  <rect width="10" height="10"/>
</svg>
"""


def _clipart(root: Path, relative: str, title: str | None, creator: str = "Jane Artist", svg: str | None = None,
             color: tuple[int, int, int] = (200, 0, 0)) -> None:
    """root/png/RELATIVE.png, 40x20 RGBA (left half opaque `color`, right half transparent), and its SVG."""
    png = root / "png" / f"{relative}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    image.paste((*color, 255), (0, 0, 20, 20))
    image.save(png)
    path = root / "svg" / f"{relative}.svg"
    path.parent.mkdir(parents=True, exist_ok=True)
    if svg is not None:
        path.write_text(svg)
    elif title is not None:
        path.write_text(SVG.format(title=title, creator=creator))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "openclipart"
    _clipart(root, "animals/red_fox_01", "  A red\n   fox ")
    _clipart(root, "animals/blue_whale", "Blue whale", color=(0, 0, 200))
    _clipart(root, "food/apple_a", None, svg="<svg xmlns='http://www.w3.org/2000/svg'><title>Green apple"
             "</title></svg>", color=(0, 200, 0))
    _clipart(root, "food/pear", "Untitled")
    _clipart(root, "food/plum", "drawing-2.svg")
    _clipart(root, "food/big_cake_01", "Big cake 01")
    _clipart(root, "food/kiwi", "Jane Artist")  # the author's name as the title
    _clipart(root, "food/bread", "   ")
    _clipart(root, "food/nosvg", None)  # a PNG without an SVG
    _clipart(root, "misc/broken", None, svg="<svg><cc:Work><dc:title>Broken &nbsp; sign</dc:title>")
    for i in range(3):
        _clipart(root, f"icons/icon{i}", "Some Icon Collection")
    return root


def test_svg_title_takes_the_works_title_not_the_agents(tree: Path) -> None:
    assert svg_title(tree / "svg" / "animals" / "blue_whale.svg") == ("Blue whale", "Jane Artist")
    assert svg_title(tree / "svg" / "food" / "apple_a.svg") == ("Green apple", None)
    assert svg_title(tree / "svg" / "misc" / "broken.svg") == ("Broken \xa0 sign", None)  # not XML: regex


@pytest.mark.parametrize("title, creator, expected", [
    ("  A red\n  fox\t", None, ("A red fox", None)),
    ("", None, (None, "no title")),
    (None, None, (None, "no title")),
    ("Untitled", None, (None, "placeholder title")),
    ("untitled-3", None, (None, "placeholder title")),
    ("Layer 1", None, (None, "placeholder title")),
    ("fox.svg", None, (None, "file name as title")),
    ("Hot_Dog", None, ("Hot Dog", None)),
    ("Red fox 01", None, ("Red fox 01", None)),  # the file's stem (red_fox_01): Debian named files after titles
    ("Jane  Artist", "Jane Artist", (None, "author name as title")),
    ("2004-08-25", None, (None, "no letters")),
    ("Untitled fox", None, ("Untitled fox", None)),  # a placeholder word inside a real title is kept
])
def test_clean_title_edge_cases(title, creator, expected) -> None:
    assert clean_title(title, creator) == expected


def test_build_clipart_writes_a_split_the_csv_reader_reads(tree: Path, tmp_path: Path) -> None:
    from alignclip.data.sources import create_dataset

    split = build_clipart(tmp_path / "out", tree, heldout_fraction=0.5, image_size=16, max_title_share=0.2)
    assert split.dropped == {"placeholder title": 1, "file name as title": 1, "author name as title": 1,
                             "no title": 1, "no SVG": 1, "collection title (on > 20% of the images)": 3}
    assert split.counts["png"] == 13 and split.counts["dropped"] == 8
    rows = {}
    for name in ("train", "heldout"):
        with open(tmp_path / "out" / f"{name}.tsv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                rows[row["title"]] = (name, row["filepath"])
    assert set(rows) == {"A red fox", "Blue whale", "Green apple", "Big cake 01", "Broken sign"}
    for title, (side, file) in rows.items():  # the side is sha1(relative png path) < 0.5, computed here by hand
        relative = file.removeprefix("images-16/")
        bucket = int(hashlib.sha1(relative.encode()).hexdigest()[:16], 16) / 2 ** 64
        assert side == ("heldout" if bucket < 0.5 else "train"), title
    dataset = create_dataset(f"tsv:{split.train}", image_size=16, train=False)
    image = dataset.raw(0)[0]
    assert image.size == (16, 16) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)  # padding, and transparency flattened onto white
    assert image.getpixel((15, 8)) == (255, 255, 255) and image.getpixel((4, 8)) != (255, 255, 255)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == split.counts and "8 dropped" in (tmp_path / "out" / "README.md").read_text()


def test_split_is_stable_when_files_are_added(tree: Path, tmp_path: Path) -> None:
    before = build_clipart(tmp_path / "a", tree, heldout_fraction=0.5, image_size=16)
    _clipart(tree, "animals/zebra", "Zebra")
    after = build_clipart(tmp_path / "b", tree, heldout_fraction=0.5, image_size=16)
    for name in ("train", "heldout"):
        old = getattr(before, name).read_text().splitlines()
        new = getattr(after, name).read_text().splitlines()
        assert set(old) <= set(new) and len(new) - len(old) == (is_heldout("animals/zebra.png", 0.5) == (name == "heldout"))


def test_build_clipart_reuses_a_finished_split_and_names_what_is_missing(tree: Path, tmp_path: Path) -> None:
    first = build_clipart(tmp_path / "out", tree, image_size=16)
    stamp = first.train.stat().st_mtime_ns
    assert build_clipart(tmp_path / "out", tree, image_size=16).counts == first.counts
    assert first.train.stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match="apt-get install openclipart-png openclipart-svg"):
        build_clipart(tmp_path / "x", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="heldout_fraction"):
        build_clipart(tmp_path / "x", tree, heldout_fraction=1.5)


def _pairs(folder: Path, n: int) -> Path:
    """n image-caption pairs (four colours, two captions' worth of wording) as a TSV file with relative paths."""
    colors = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
    folder.mkdir(parents=True)
    with open(folder / "pairs.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["filepath", "title"])
        for i in range(n):
            name, rgb = list(colors.items())[i % 4]
            Image.new("RGB", (20, 20), rgb).save(folder / f"{i}.png")
            writer.writerow([f"{i}.png", f"a {name} square number {i}"])
    return folder / "pairs.tsv"


@pytest.mark.slow
def test_demo_on_real_pairs_measures_the_heldout_pairs(tmp_path: Path, micro_preset: str) -> None:
    """The table's held-out l2m is the gap of the trained model's own held-out embeddings, recomputed here."""
    import alignclip
    from alignclip.evaluation.pairs import embed_pairs

    train, heldout = _pairs(tmp_path / "train", 16), _pairs(tmp_path / "heldout", 8)
    classes = tmp_path / "classes"
    for name, rgb in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (classes / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), rgb).save(classes / name / f"{i}.png")
    settings = DemoSettings(train_data=f"tsv:{train}", eval_data=f"tsv:{heldout}", zeroshot=f"classes:{classes}",
                            methods=("clip",), posttrain=("clip+imsep-nw",), preset=micro_preset, steps=3,
                            batch_size=8, seeds=2, workers=0, baseline=False, out=str(tmp_path / "runs"))
    result = run_demo(settings, log=lambda _: None)
    assert set(result.rows) == {"clip", "clip+imsep-nw"} and len(result.rows["clip"]) == 2
    first = result.rows["clip"][0]
    assert "heldout/retrieval/t2i_recall@10" in first
    assert "classes/classes/zeroshot_classification/top1" in first
    model = alignclip.load_checkpoint(next((result.out_dir / "clip" / "seed-0" / "checkpoints").glob("step_*")))
    pairs = embed_pairs(model, f"tsv:{heldout}")
    images = torch.nn.functional.normalize(pairs.image_features, dim=-1)
    texts = torch.nn.functional.normalize(pairs.paired_text(), dim=-1)
    assert first["heldout/modality_gap/l2m"] == pytest.approx(float((images.mean(0) - texts.mean(0)).norm()), abs=1e-5)
    table = (result.out_dir / "table.md").read_text()
    assert "T→I R@10" in table and "ZS classes/classes" in table and "ZS shape" not in table
    page = (result.out_dir / "index.html").read_text()
    assert f"held-out pairs of tsv:{heldout}" in page and "l2m" in page


def test_demo_real_data_settings_errors(tmp_path: Path, tree: Path) -> None:
    with pytest.raises(ValueError, match="needs held-out pairs"):
        DemoSettings(train_data="tsv:x.tsv").validate()
    with pytest.raises(ValueError, match="must be image-caption pairs"):
        DemoSettings(train_data="tsv:x.tsv", eval_data="fashion-mnist").validate()
    with pytest.raises(ValueError, match="zeroshot is for real-data runs"):
        DemoSettings(zeroshot="fashion-mnist").validate()
    settings = benchmark_settings(tmp_path / "data", root=tree, seeds=1)
    assert settings.train_data == f"tsv:{tmp_path / 'data' / 'train.tsv'}" and settings.seeds == 1
    assert settings.steps == 500 and settings.batch_size == 64 and settings.validate() is settings
    by_budget = benchmark_settings(tmp_path / "data", root=tree, budget=6400)  # --budget replaces the fixed steps
    assert by_budget.steps is None and by_budget.num_steps == 100


def test_benchmark_flag_refuses_data_of_its_own(capsys) -> None:
    from alignclip.cli.main import main

    assert main(["demo", "--benchmark", "clipart", "--data", "tsv:x.tsv", "--eval-data", "tsv:y.tsv"]) == 2
    assert capsys.readouterr().err.startswith("alignclip: error: --benchmark builds its own data")
