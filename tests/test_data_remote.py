"""Remote shards (http on 127.0.0.1, pipe:), sample counting, brace caps, and non-UTF-8 captions as named bad samples."""
from __future__ import annotations

import argparse
import functools
import http.server
import io
import os
import tarfile
import threading
import time

import pytest
import torch

from alignclip.cli.data import register
from alignclip.data.pack import BAD_SAMPLES_FILE, pack
from alignclip.data.shards import BadSample, TarShardDataset
from alignclip.data.streams import braceexpand, expand_urls
from alignclip.data.sources import CsvDataset, FolderDataset
from alignclip.data.synthetic import SyntheticShapes
from alignclip.data.transforms import EvalTransform

LATIN1 = "un caf\xe9 cr\xe8me".encode("latin-1")  # not UTF-8: 0xe9 at position 6


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("remote")
    pack("synthetic:12", str(out), samples_per_shard=4, image_size=16, progress=False)  # 3 shards
    return out, [SyntheticShapes(12, image_size=16).raw(i)[1] for i in range(12)]


@pytest.fixture()
def http_root(shard_dir):
    """A real HTTP server on 127.0.0.1 serving the shard folder, in a thread."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shard_dir[0]))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _captions(ds) -> list[str]:
    return [s["caption"] for s in ds]


def test_http_shards_stream_like_local_ones(http_root, shard_dir):
    _, captions = shard_dir
    ds = TarShardDataset(f"{http_root}/shard-{{000000..000002}}.tar", transform=EvalTransform(16),
                         shuffle_shards=False, shuffle_buffer=0, num_samples=12)
    assert _captions(ds) == captions and ds.num_samples == 12
    missing = list(TarShardDataset(f"{http_root}/shard-000009.tar", shuffle_buffer=0))  # HTTP 404: one BadSample
    assert len(missing) == 1 and "404" in missing[0].reason and missing[0].source.endswith("shard-000009.tar")


def test_pipe_shards_and_failing_commands(shard_dir):
    out, captions = shard_dir
    ds = TarShardDataset(f"pipe:cat {out}/shard-{{000000..000002}}.tar", shuffle_shards=False, shuffle_buffer=0)
    assert _captions(ds) == captions
    failed = list(TarShardDataset(f"pipe:cat {out}/nope.tar", shuffle_buffer=0))
    assert len(failed) == 1 and "exited with status 1" in failed[0].reason
    # a command that dies after writing half a shard: the whole samples are kept, then a BadSample
    half = os.path.getsize(out / "shard-000000.tar") // 2
    cut = list(TarShardDataset(f"pipe:head -c {half} {out}/shard-000000.tar", shuffle_buffer=0))
    assert 1 <= len(cut) - 1 < 4 and isinstance(cut[-1], BadSample) and "truncated" in cut[-1].reason


def test_stopping_early_kills_the_command(shard_dir, tmp_path):
    out, _ = shard_dir
    marker = tmp_path / "done"
    ds = TarShardDataset(f"pipe:cat {out}/shard-000000.tar; sleep 30; touch {marker}", shuffle_buffer=0)
    start = time.monotonic()
    it = iter(ds)
    next(it)
    it.close()  # the consumer stops: the command must not keep running (nor block us for 30 s)
    assert time.monotonic() - start < 10 and not marker.exists()


def test_num_samples_is_counted_locally_and_required_remotely(shard_dir):
    out, _ = shard_dir
    assert TarShardDataset(str(out)).num_samples == 12  # tar headers only
    assert TarShardDataset(str(out), num_samples=5).num_samples == 5
    remote = TarShardDataset(f"pipe:cat {out}/shard-000000.tar")
    with pytest.raises(ValueError, match="set data.num_samples .* remote shards"):
        _ = remote.num_samples


def test_huge_brace_patterns_fail_fast_without_expanding():
    start = time.monotonic()
    with pytest.raises(ValueError, match="more than the limit"):
        braceexpand("s-{0..99999999}.tar")
    with pytest.raises(ValueError, match="more than 1,000,000"):
        expand_urls("s-{0..9999}-{0..9999}.tar")  # 10^8 names from two small ranges: stopped at the cap
    assert time.monotonic() - start < 20
    assert braceexpand("pipe:curl -s http://h/s-{0..1}.tar?x=1") == [
        "pipe:curl -s http://h/s-0.tar?x=1", "pipe:curl -s http://h/s-1.tar?x=1"]


def test_non_utf8_captions_are_named_bad_samples(tmp_path, shard_dir):
    image, caption = SyntheticShapes(1, image_size=16).raw(0)
    image.save(tmp_path / "a.png")
    image.save(tmp_path / "b.png")
    (tmp_path / "a.txt").write_text(caption)
    (tmp_path / "b.txt").write_bytes(LATIN1)
    folder = FolderDataset(str(tmp_path), transform=EvalTransform(16))
    assert folder[1] == BadSample(str(tmp_path / "b.txt"), "caption is not valid UTF-8 (byte 0xe9 at position 6)")
    (tmp_path / "d.csv").write_bytes(b"filepath,title\na.png," + caption.encode() + b"\nb.png," + LATIN1 + b"\n")
    csv_data = CsvDataset(str(tmp_path / "d.csv"), transform=EvalTransform(16))
    assert csv_data[0]["caption"] == caption and csv_data.caption(1) is None
    assert csv_data[1] == BadSample(f"{tmp_path / 'd.csv'}:3", "caption is not valid UTF-8 (byte 0xe9 at position 6)")
    # pack keeps the good row and lists the bad one; a shard with a Latin-1 .txt is the same kind of bad sample
    summary = pack(f"csv:{tmp_path / 'd.csv'}", str(tmp_path / "s"), progress=False)
    assert summary.num_written == 1 and "d.csv:3: caption is not valid UTF-8" in str(summary)
    assert (tmp_path / "s" / BAD_SAMPLES_FILE).read_text().startswith(f"{tmp_path / 'd.csv'}:3\t")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    with tarfile.open(tmp_path / "latin.tar", "w") as tar:
        for name, data in (("k.png", buffer.getvalue()), ("k.txt", LATIN1)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert list(TarShardDataset(str(tmp_path / "latin.tar"), shuffle_buffer=0)) == [
        BadSample(f"{tmp_path / 'latin.tar'}#k", "caption is not valid UTF-8 (byte 0xe9 at position 6)")]


def test_cli_inspect_names_each_bad_sample(tmp_path, capsys):
    image, caption = SyntheticShapes(1, image_size=16).raw(0)
    image.save(tmp_path / "a.png")
    (tmp_path / "d.csv").write_bytes(b"filepath,title\na.png,ok\nmissing.png,lost\na.png," + LATIN1 + b"\n")
    parser = argparse.ArgumentParser(prog="alignclip")
    register(parser.add_subparsers())
    args = parser.parse_args(["data", "inspect", f"csv:{tmp_path / 'd.csv'}", "--image-size", "16"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"bad sample {tmp_path / 'missing.png'}: image file not found" in out
    assert f"bad sample {tmp_path / 'd.csv'}:4: caption is not valid UTF-8" in out and "2 bad samples" in out
    assert "[0] (3, 16, 16)" in out
    # without --image-size: the input size of the model that would train on it (train's default preset, tiny)
    from alignclip.models.config import load_model_config

    size = load_model_config("tiny").vision_cfg.image_size
    args = parser.parse_args(["data", "inspect", f"csv:{tmp_path / 'd.csv'}"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"[0] (3, {size}, {size})" in out and f"{size} x {size} px (preset tiny;" in out
    args = parser.parse_args(["data", "inspect", f"csv:{tmp_path / 'd.csv'}", "--preset", "small"])
    assert args.func(args) == 0
    small = load_model_config("small").vision_cfg.image_size
    assert f"[0] (3, {small}, {small})" in capsys.readouterr().out


def test_shard_crops_are_a_function_of_seed_epoch_and_key(shard_dir):
    """The same sample gets the same random crop whatever the worker split, and a new one the next epoch."""
    from alignclip.data.transforms import TrainTransform

    out, _ = shard_dir

    def crops(epoch: int, **kw) -> dict:
        ds = TarShardDataset(str(out), transform=TrainTransform(12, scale=(0.3, 0.5)), seed=3, shuffle_buffer=4, **kw)
        ds.set_epoch(epoch)
        return {s["caption"]: s["image"] for s in ds}

    one = crops(0)
    split = {**crops(0, rank=0, world_size=2), **crops(0, rank=1, world_size=2)}
    assert one.keys() == split.keys() and all(torch.equal(one[k], split[k]) for k in one)
    later = crops(1)
    assert any(not torch.equal(one[k], later[k]) for k in one)
