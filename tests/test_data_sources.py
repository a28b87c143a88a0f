"""CSV / folder / WebDataset sources, shard packing, rank+worker splitting, bad-sample handling, CLI."""
from __future__ import annotations

import argparse
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from alignclip.cli.data import register
from alignclip.data.collate import Collate
from alignclip.data.pack import pack
from alignclip.data.shards import BadSample, TarShardDataset, iter_tar_groups
from alignclip.data.streams import braceexpand, expand_urls
from alignclip.data.sources import CsvDataset, FolderDataset, create_dataset
from alignclip.data.synthetic import SyntheticShapes
from alignclip.data.transforms import EvalTransform, TrainTransform


class FakeTokenizer:
    """Picklable stand-in for alignclip.get_tokenizer (one id per word, fixed length)."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), 8, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [1 + sum(map(ord, w)) % 1000 for w in text.split()][:8]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


def _images(tmp: Path, n: int, sub: str = "img") -> list[tuple[str, str]]:
    """n small PNG files from the synthetic set -> [(path, caption)]."""
    ds, out = SyntheticShapes(n, seed=9), []
    (tmp / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, caption = ds.raw(i)
        path = tmp / sub / f"{i:03d}.png"
        image.save(path)
        out.append((str(path), caption))
    return out


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_braceexpand_and_url_lists(tmp_path):
    assert braceexpand("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert braceexpand("{a,b}/{1..2}") == ["a/1", "a/2", "b/1", "b/2"]
    assert braceexpand("x{3..1}") == ["x3", "x2", "x1"] and braceexpand("plain.tar") == ["plain.tar"]
    for name in ("b.tar", "a.tar"):
        (tmp_path / name).write_bytes(b"")
    assert expand_urls(str(tmp_path)) == [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    assert expand_urls(f"{tmp_path}/a.tar::{tmp_path}/b.tar") == [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]


def test_csv_dataset_bad_rows_are_named(tmp_path):
    pairs = _images(tmp_path, 4)
    (tmp_path / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    rows = [(os.path.relpath(p, tmp_path), c) for p, c in pairs]  # relative to the CSV's folder
    rows += [("img/missing.png", "a red circle"), ("img/000.png", "  "), ("img/corrupt.png", "a blue square")]
    (tmp_path / "train.tsv").write_text("filepath\ttitle\n" + "".join(f"{p}\t{c}\n" for p, c in rows))
    ds = CsvDataset(str(tmp_path / "train.tsv"), transform=EvalTransform(32))
    assert len(ds) == 7
    assert [ds[i]["caption"] for i in range(4)] == [c for _, c in pairs]
    assert ds[0]["image"].shape == (3, 32, 32)
    tsv = str(tmp_path / "train.tsv")
    assert ds[4] == BadSample(str(tmp_path / "img" / "missing.png"), "image file not found")
    assert ds[5] == BadSample(f"{tsv}:7", "empty caption")  # CSV line 7 (the header is line 1)
    assert ds[6].source.endswith("corrupt.png") and ds[6].reason.startswith("image cannot be read")
    batch = Collate(FakeTokenizer())([ds[i] for i in range(7)])
    assert batch.num_skipped == 3 and batch.images.shape[0] == 4
    assert batch.bad_samples == [tuple(ds[i]) for i in (4, 5, 6)]  # named across worker processes
    assert len(create_dataset(f"tsv:{tmp_path / 'train.tsv'}", 32, train=True, num_samples=2)) == 2


def test_csv_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        CsvDataset(str(tmp_path / "nope.csv"))
    (tmp_path / "bad.csv").write_text("image,text\na.png,hello\n")
    with pytest.raises(ValueError, match=r"no column 'filepath'.*\['image', 'text'\]"):
        CsvDataset(str(tmp_path / "bad.csv"))
    assert len(CsvDataset(str(tmp_path / "bad.csv"), image_key="image", caption_key="text")) == 1
    (tmp_path / "empty.csv").write_text("filepath,title\n")
    with pytest.raises(ValueError, match="no samples"):
        CsvDataset(str(tmp_path / "empty.csv"))


def test_folder_dataset(tmp_path):
    pairs = _images(tmp_path, 3, "a") + _images(tmp_path, 2, "b/c")
    for path, caption in pairs:
        Path(path).with_suffix(".txt").write_text(caption + "\n")
    Path(pairs[1][0]).with_suffix(".txt").write_text("")  # empty caption -> None
    _images(tmp_path, 1, "unpaired")  # an image with no caption file is left out
    ds = FolderDataset(str(tmp_path), transform=EvalTransform(32))
    assert len(ds) == 5 and ds.num_unpaired == 1
    assert ds[0]["caption"] == pairs[0][1] and ds[4]["caption"] == pairs[4][1]
    assert ds[1] == BadSample(str(Path(pairs[1][0]).with_suffix(".txt")), "empty caption")
    with pytest.raises(FileNotFoundError):
        FolderDataset(str(tmp_path / "missing"))
    (tmp_path / "void").mkdir()
    with pytest.raises(ValueError, match="no images"):
        FolderDataset(str(tmp_path / "void"))
    with pytest.raises(ValueError, match="none has a caption"):
        FolderDataset(str(tmp_path / "unpaired"))


def test_pack_synthetic_round_trip(tmp_path):
    summary = pack("synthetic:10", str(tmp_path / "s"), samples_per_shard=4, image_format="png", image_size=32,
                   progress=False)
    assert summary.num_written == 10 and summary.num_skipped == 0 and len(summary.shards) == 3
    assert sorted(os.listdir(tmp_path / "s")) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    reader = TarShardDataset(str(tmp_path / "s" / "shard-{000000..000002}.tar"), shuffle_shards=False,
                             shuffle_buffer=0)
    samples = list(reader)
    source = SyntheticShapes(10, image_size=32)
    assert [s["caption"] for s in samples] == [source.raw(i)[1] for i in range(10)]
    assert [s["labels"] for s in samples] == [source.labels_for(i) for i in range(10)]
    assert np.array_equal(np.asarray(samples[3]["image"]), np.asarray(source.raw(3)[0]))  # PNG is lossless
    with pytest.raises(ValueError, match="--overwrite"):
        pack("synthetic:2", str(tmp_path / "s"), progress=False)
    assert len(pack("synthetic:2", str(tmp_path / "s"), overwrite=True, progress=False).shards) == 1
    assert sorted(os.listdir(tmp_path / "s")) == ["shard-000000.tar"]  # stale shards gone, no temp files


def test_pack_csv_and_folder_sources(tmp_path):
    pairs = _images(tmp_path, 5)
    lines = "".join(f"{p},{c}\n" for p, c in pairs) + "img/missing.png,lost\n"
    (tmp_path / "d.csv").write_text("filepath,title\n" + lines)
    summary = pack(f"csv:{tmp_path / 'd.csv'}", str(tmp_path / "csv_shards"), samples_per_shard=2, progress=False)
    assert (summary.num_written, summary.num_skipped, len(summary.shards)) == (5, 1, 3)
    assert "skipped 1 bad samples" in str(summary)
    back = list(create_dataset(f"wds:{tmp_path / 'csv_shards'}", 32, train=False))
    assert [s["caption"] for s in back] == [c for _, c in pairs] and back[0]["image"].shape == (3, 32, 32)
    for path, caption in pairs:
        Path(path).with_suffix(".txt").write_text(caption)
    summary = pack(f"captions:{tmp_path / 'img'}", str(tmp_path / "f"), image_format="png", progress=False)
    back = list(TarShardDataset(str(tmp_path / "f"), shuffle_buffer=0))
    assert summary.num_written == 5 and sorted(s["caption"] for s in back) == sorted(c for _, c in pairs)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[str, list[str]]:
    out = tmp_path_factory.mktemp("shards")
    pack("synthetic:30", str(out), samples_per_shard=4, image_size=16, progress=False)  # 8 shards
    return str(out / "shard-{000000..000007}.tar"), [SyntheticShapes(30, image_size=16).raw(i)[1] for i in range(30)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_and_workers_cover_every_sample_once(shards, shuffle):
    pattern, captions = shards
    seen = []
    for rank in range(2):
        ds = TarShardDataset(pattern, transform=EvalTransform(16), shuffle_shards=shuffle,
                             shuffle_buffer=8 if shuffle else 0, rank=rank, world_size=2, seed=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, collate_fn=Collate(FakeTokenizer()))
        seen += [c for batch in loader for c in batch.captions]
    assert sorted(seen) == sorted(captions)


def test_fewer_shards_than_readers_splits_samples(shards, monkeypatch):
    pattern, captions = shards
    two_shards = pattern.replace("{000000..000007}", "{000000..000001}")
    seen = []
    for rank in range(2):
        for worker in range(3):  # 6 readers, 2 shards
            info = type("Info", (), {"id": worker, "num_workers": 3})()
            monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
            seen += [s["caption"] for s in TarShardDataset(two_shards, rank=rank, world_size=2, shuffle_buffer=3)]
    assert sorted(seen) == sorted(captions[:8])


def test_epochs_reshuffle_and_resampling(shards):
    pattern, captions = shards
    ds = TarShardDataset(pattern, shuffle_buffer=10, seed=0)
    first = [s["caption"] for s in ds]
    ds.set_epoch(1)
    second = [s["caption"] for s in ds]
    assert first != second and sorted(first) == sorted(second) == sorted(captions)
    assert first == [s["caption"] for s in TarShardDataset(pattern, shuffle_buffer=10, seed=0)]
    endless = iter(TarShardDataset(pattern, resampled=True))
    assert len([next(endless) for _ in range(100)]) == 100  # more than the 30 stored: sampled with replacement
    assert len(list(TarShardDataset(pattern, resampled=True, num_samples=12))) == 12


def test_bad_members_and_truncated_shard_are_named(tmp_path, shards):
    pattern, captions = shards
    first_shard = expand_urls(pattern)[0]
    with tarfile.open(first_shard) as tar:
        good_image = tar.extractfile("000000000.jpg").read()
    _tar(tmp_path / "bad.tar", [("a.jpg", good_image), ("a.txt", b"fine"),
                                ("b.jpg", b"garbage bytes"), ("b.txt", b"corrupt image"),
                                ("c.jpg", good_image), ("c.txt", b"   "),  # empty caption
                                ("d.jpg", good_image),  # no caption at all
                                ("e.txt", b"caption without image")])
    data = Path(first_shard).read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])  # truncated mid-shard
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar file")
    ds = TarShardDataset([str(tmp_path / n) for n in ("bad.tar", "cut.tar", "junk.tar")], transform=EvalTransform(16),
                         shuffle_shards=False, shuffle_buffer=0)
    samples = list(ds)
    bad_tar = str(tmp_path / "bad.tar")
    assert samples[0]["caption"] == "fine" and samples[1:5] == [
        BadSample(f"{bad_tar}#b", "image cannot be decoded"), BadSample(f"{bad_tar}#c", "empty caption"),
        BadSample(f"{bad_tar}#d", "no .txt caption member"), BadSample(f"{bad_tar}#e", "no image member (jpg, jpeg, "
                                                                                   "png, webp, bmp, gif, tif, tiff)")]
    cut = samples[5:-1]  # what was readable from the truncated shard, then a BadSample marker
    readable = [s["caption"] for s in cut if isinstance(s, dict)]
    assert 1 <= len(readable) < 4 and readable == captions[: len(readable)]
    assert cut[-1].source == str(tmp_path / "cut.tar") and "truncated" in cut[-1].reason
    assert isinstance(samples[-1], BadSample)  # the non-tar file: one BadSample, no crash
    bad = 4 + sum(isinstance(s, BadSample) for s in cut) + 1
    batch = Collate(FakeTokenizer())(samples)
    assert batch.num_skipped == bad and batch.images.shape[0] == len(samples) - bad


def test_truncation_anywhere_is_reported(tmp_path, shards):
    """Cut a shard at every 256 bytes (inside data, inside headers, on block edges): never raises, always ends
    with a BadSample marker, and every complete sample before the cut is kept."""
    pattern, captions = shards
    path = expand_urls(pattern)[0]
    with tarfile.open(path) as tar:  # a sample is whole once its caption (stored after the image) is whole
        caption_ends = [m.offset_data + m.size for m in tar.getmembers() if m.name.endswith(".txt")]
        archive_end = tar.offset
    data = Path(path).read_bytes()
    for cut in range(0, archive_end, 256):
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        groups = list(iter_tar_groups(str(tmp_path / "cut.tar")))
        assert isinstance(groups[-1], BadSample), cut
        complete = [g.caption.decode() for g in groups if not isinstance(g, BadSample) and g.image and g.caption]
        assert complete == captions[: sum(end <= cut for end in caption_ends)], cut


def test_build_dataset_specs_and_errors(tmp_path, shards):
    pattern, _ = shards
    train = create_dataset("synthetic", 32, train=True, seed=1)
    assert isinstance(train, SyntheticShapes) and len(train) == 100_000 and train.train
    assert len(create_dataset("synthetic:77", 32, train=False)) == 77
    assert len(create_dataset("synthetic", 32, train=False, num_samples=5)) == 5
    wds = create_dataset(f"wds:{pattern}", 24, train=True, rank=1, world_size=2, resampled=None)
    assert isinstance(wds, TarShardDataset) and isinstance(wds.transform, TrainTransform) and wds.rank == 1
    assert isinstance(create_dataset(pattern, 24, train=False).transform, EvalTransform)  # bare pattern
    with pytest.raises(ValueError, match="unknown dataset"):
        create_dataset("imagenet", 32, train=True)
    with pytest.raises(ValueError, match="do not apply"):
        create_dataset("synthetic", 32, train=True, shuffle_buffer=10)
    with pytest.raises(ValueError, match="no tar shards matched"):
        create_dataset(f"wds:{tmp_path}/*.tar", 32, train=True)
    with pytest.raises(FileNotFoundError, match="shards not found"):
        create_dataset(f"wds:{tmp_path}/x-{{0..3}}.tar", 32, train=True)
    with pytest.raises(FileNotFoundError):
        create_dataset(f"captions:{tmp_path}/none", 32, train=True)


def test_cli_data_pack(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="alignclip")
    register(parser.add_subparsers())
    args = parser.parse_args(["data", "pack", "synthetic", "--out", str(tmp_path / "o"), "--num-samples", "7",
                              "--samples-per-shard", "5", "--image-size", "16"])
    assert args.func(args) == 0
    assert "wrote 7 samples in 2 shards" in capsys.readouterr().out
    from alignclip.cli.main import main
    # shards exist and no --overwrite: bad input, so one line and exit 2 (the CLI error policy, cli/errors.py)
    assert main(["data", "pack", "synthetic", "--out", str(tmp_path / "o"), "--num-samples", "7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignclip: error: ") and "--overwrite" in err and err.count("\n") == 1
    args = parser.parse_args(["data", "inspect", f"wds:{tmp_path / 'o'}", "-n", "3", "--image-size", "16"])
    assert args.func(args) == 0 and "0 bad samples" in capsys.readouterr().out
