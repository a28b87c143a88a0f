"""One spec parser and one CSV-delimiter rule, so `train` and `data pack` read a file the same way;
one image reader and extension list; the typed Batch."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignclip.data.collate import Batch, Collate
from alignclip.data.images import IMAGE_EXTENSIONS, UnreadableImage, is_image_file, load_image
from alignclip.data.spec import DataSpec, csv_separator, parse_spec


@pytest.mark.parametrize("header, expected", [("filepath,title", ","), ("filepath\ttitle", "\t"),
                                              ("filepath;title", ";"), ("filepath|title", "|"),
                                              ('"filepath","title"', ","), ("filepath", ",")])
def test_csv_separator_detected_from_the_header(tmp_path: Path, header: str, expected: str) -> None:
    path = tmp_path / "d.csv"
    # Captions full of commas and semicolons must not sway the choice: only the header line is read.
    path.write_text(f"{header}\nx.png{expected}a, b; c, d\n", encoding="utf-8")
    assert csv_separator(str(path)) == expected
    assert csv_separator(str(path), "auto") == expected
    assert csv_separator(str(path), ";") == ";"  # an explicit separator always wins


def test_parse_spec_is_typed_and_checks_options() -> None:
    assert parse_spec("csv:a/b.csv") == DataSpec("csv", "a/b.csv", {})
    assert parse_spec("tsv:a.tsv") == DataSpec("tsv", "a.tsv", {"sep": "\t"})  # tsv: tabs, unless told otherwise
    assert parse_spec("tsv:a.tsv", sep=",").options == {"sep": ","}
    assert parse_spec("csv:a.csv", sep="auto", image_key=None).options == {}  # auto/None: detect / default
    assert parse_spec("captions:imgs/") == DataSpec("captions", "imgs/", {})
    with pytest.raises(ValueError, match="captions:DIR"):
        parse_spec("folder:imgs/")
    assert parse_spec("x.tsv").kind == "csv" and parse_spec("s/{0..3}.tar").scheme == "wds"
    assert parse_spec("synthetic:50") == DataSpec("synthetic", "50", {}) and str(parse_spec("synthetic")) == "synthetic"
    assert parse_spec("synthetic:50").count == 50 and parse_spec("synthetic").count is None
    with pytest.raises(ValueError, match="synthetic:N needs an integer sample count, got 'ten'"):
        parse_spec("synthetic:ten")
    merged = parse_spec(parse_spec("csv:a.csv", caption_key="text"), image_key="file")
    assert merged.options == {"caption_key": "text", "image_key": "file"}
    with pytest.raises(ValueError, match=r"option\(s\) \['sep'\] do not apply to wds"):
        parse_spec("wds:s.tar", sep=",")
    with pytest.raises(ValueError, match="unknown dataset 'nothing'"):
        parse_spec("nothing")


def _comma_csv(folder: Path, count: int = 16) -> tuple[Path, list[str]]:
    """A comma CSV (as spreadsheets write it) whose quoted captions hold commas, tabs would be a wrong guess."""
    rng = np.random.default_rng(0)
    captions = [f"picture {i}, noise; seed {i}" for i in range(count)]
    rows = ["filepath,title"] + [f'{i}.png,"{c}"' for i, c in enumerate(captions)]
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "data.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "data.csv", captions


def _shard_captions(out: Path) -> list[str]:
    captions = []
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            captions += [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")]
    return captions


def test_comma_csv_trains_and_packs_the_same(tmp_path: Path, micro_preset: str) -> None:
    """The defaults (no separator set) train from a comma CSV, and `data pack` reads the same samples."""
    from alignclip.cli.main import main
    from alignclip.training import load_config
    from alignclip.training.data import create_train_dataset
    from alignclip.training.distributed import DistInfo

    path, captions = _comma_csv(tmp_path)
    dataset = create_train_dataset(load_config(overrides=[f"data.train=csv:{path}"]), 16, DistInfo())
    assert len(dataset) == len(captions) and dataset.captions == captions  # type: ignore[attr-defined]

    assert main(["train", "--method", "clip", "--preset", micro_preset, "--device", "cpu", "--workers", "0",
                 "--batch-size", "8", "--steps", "2", "--out", str(tmp_path / "runs"), "--name", "run",
                 "--data", f"csv:{path}", "--set", "optim.warmup_steps=1", "--set", "runtime.threads=1",
                 "--set", "logging.progress=false", "--set", "logging.tensorboard=false"]) == 0
    run = tmp_path / "runs" / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and records[-1]["samples"] == 16 and records[-1]["skipped_samples"] == 0

    assert main(["data", "pack", f"csv:{path}", "--out", str(tmp_path / "shards"), "--samples-per-shard", "5"]) == 0
    assert _shard_captions(tmp_path / "shards") == captions  # same samples, same captions, same order


def test_one_image_reader(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 3), (255, 0, 0, 0))  # fully transparent: flattened onto white
    rgba.save(tmp_path / "t.png")
    image = load_image(tmp_path / "t.png")
    assert image.mode == "RGB" and image.size == (4, 3) and image.getpixel((0, 0)) == (255, 255, 255)
    assert load_image((tmp_path / "t.png").read_bytes()).getpixel((1, 1)) == (255, 255, 255)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UnreadableImage, match=r"cannot read image .*bad.jpg: UnidentifiedImageError"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    assert is_image_file("A/B.JPEG") and is_image_file("x.tiff") and not is_image_file("x.txt")
    assert IMAGE_EXTENSIONS[:4] == ("jpg", "jpeg", "png", "webp")  # shard member preference kept


def test_decompression_bomb_is_an_unreadable_image(tmp_path: Path, monkeypatch) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL errors above 2x this
    with pytest.raises(UnreadableImage, match="DecompressionBombError"):
        load_image(tmp_path / "big.png")


class _Tokens:
    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[len(t), 1] for t in texts], dtype=torch.long).reshape(-1, 2)


def test_batch_is_typed_and_trims() -> None:
    samples = [{"image": torch.full((3, 2, 2), float(i)), "caption": "x" * (i + 1), "labels": {"shape": i}}
               for i in range(4)]
    from alignclip.data.shards import BadSample
    batch = Collate(_Tokens())([*samples[:2], BadSample("f.png", "broken"), None, *samples[2:]])
    assert isinstance(batch, Batch) and len(batch) == 4 and batch.num_skipped == 2
    assert batch.bad_samples == [("f.png", "broken")] and batch.captions == ["x", "xx", "xxx", "xxxx"]
    assert batch.tokens[:, 0].tolist() == [1, 2, 3, 4] and batch.labels["shape"].tolist() == [0, 1, 2, 3]
    assert batch.trimmed == 0 and not hasattr(batch, "keys")  # typed fields only, no mapping interface
    cut = batch.trim(3)
    assert len(cut) == 3 and cut.trimmed == 1 and cut.captions == batch.captions[:3]
    assert cut.labels["shape"].tolist() == [0, 1, 2] and cut.num_skipped == 2 and batch.trim(9) is batch
    empty = Collate(_Tokens(), image_size=8)([None])
    assert empty.images.shape == (0, 3, 8, 8) and empty.tokens.shape == (0, 2) and empty.labels is None


def test_pack_and_inspect_take_the_train_csv_settings(tmp_path: Path, capsys) -> None:
    """Other column names and a forced delimiter: `data pack/inspect --csv-*` as `train --set data.csv_*`."""
    from alignclip.cli.main import main

    Image.new("RGB", (8, 8), "red").save(tmp_path / "r.png")
    (tmp_path / "d.txt").write_text("img|text\nr.png|red, square; small\n", encoding="utf-8")
    options = ["--csv-image-key", "img", "--csv-caption-key", "text", "--csv-separator", "|"]
    assert main(["data", "inspect", f"csv:{tmp_path / 'd.txt'}", "--image-size", "8", *options]) == 0
    assert "'red, square; small'" in capsys.readouterr().out
    assert main(["data", "pack", f"csv:{tmp_path / 'd.txt'}", "--out", str(tmp_path / "s"), *options]) == 0
    assert _shard_captions(tmp_path / "s") == ["red, square; small"]
    capsys.readouterr()
    assert main(["data", "pack", f"csv:{tmp_path / 'd.txt'}", "--out", str(tmp_path / "s2")]) == 2  # bad input
    err = capsys.readouterr().err
    assert err.startswith("alignclip: error: ") and "no column 'filepath', 'title'" in err
    assert "--set data.csv_image_key=COLUMN" in err and "--csv-image-key" in err and "image_key=/" not in err


def test_unique_dir_never_reuses_a_folder(tmp_path: Path) -> None:
    """The one helper behind run folders and demo folders."""
    from alignclip.fileio import timestamp, unique_dir

    made = [unique_dir(tmp_path / "runs", "a") for _ in range(3)]
    assert [p.name for p in made] == ["a", "a-2", "a-3"] and all(p.is_dir() for p in made)
    assert len(timestamp()) == 15 and timestamp()[8] == "-"
