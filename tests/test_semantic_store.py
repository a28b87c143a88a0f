"""The memory-mapped caption store: lookups against a plain dict, compaction under live readers, format-1 folders,
and `embed-captions` killed mid-way and rerun. Sentence models are deterministic stand-ins (hash -> vector)."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alignclip import semantic
from alignclip.semantic import CaptionStore, SemanticEncoder, caption_key
from alignclip.semantic.model import split_keys
from alignclip.semantic.prefill import prefill_shared

needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
DIM = 8


def vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class HashModel:
    """Deterministic stand-in sentence model; `delay` seconds per batch make a long job to interrupt."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.calls = delay, 0

    def get_sentence_embedding_dimension(self) -> int:
        return DIM

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        self.calls += len(texts)
        time.sleep(self.delay)
        return np.stack([vector(t) for t in texts])


def random_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hi, lo = split_keys(rng.bytes(16 * n))
    return hi, lo, rng.standard_normal((n, DIM)).astype(np.float16)


def test_lookup_matches_a_dict_across_segments_and_compactions(tmp_path: Path) -> None:
    store = CaptionStore(tmp_path, "m", show_progress=False)
    reference: dict[tuple[int, int], np.ndarray] = {}
    for seed, n in enumerate([300, 1, 2000]):
        hi, lo, emb = random_rows(n, seed)
        if seed == 1:  # same high half as an existing key, different low half: the search must compare both
            hi[0] = next(iter(reference))[0]
        store.write_segment(hi, lo, emb)
        reference.update({(int(h), int(l)): e for h, l, e in zip(hi, lo, emb)})
        if seed != 1:
            store.compact()
    hi, lo, emb = random_rows(50, 0)  # a repeat of the first rows, new values: first written wins
    store.write_segment(hi, lo, emb + 1)
    keys = list(reference)
    qhi = np.array([k[0] for k in keys] + [1, 2], np.uint64)
    qlo = np.array([k[1] for k in keys] + [3, 4], np.uint64)
    for view in (store, CaptionStore(tmp_path, "m", show_progress=False)):
        got, found = view.lookup(qhi, qlo)
        assert found.tolist() == [True] * len(keys) + [False, False]
        np.testing.assert_array_equal(got[: len(keys)], np.stack([reference[k] for k in keys]))
        assert not got[-2:].any() and len(view) == len(reference)
    assert store.base_rows == 2301 and len(store.segments()) == 1


def _reader(directory: str, expected: dict, stop: Any, errors: Any) -> None:
    hi = np.array([k[0] for k in expected], np.uint64)
    lo = np.array([k[1] for k in expected], np.uint64)
    want = np.stack(list(expected.values()))
    store, rounds = CaptionStore(directory, "m", show_progress=False), 0
    while not stop.is_set() or rounds < 3:
        for view in (store, CaptionStore(directory, "m", show_progress=False)):  # long-lived and fresh readers
            got, found = view.lookup(hi, lo)
            if not found.all() or not np.array_equal(got, want):
                errors.put(f"round {rounds}: {int((~found).sum())} missing, "
                           f"{int((got != want).any(axis=1).sum())} rows differ")
                return
        store.refresh()
        rounds += 1
    errors.put(f"ok {rounds}")


@needs_fork
def test_readers_during_compaction_see_every_caption(tmp_path: Path) -> None:
    store = CaptionStore(tmp_path, "m", show_progress=False)
    hi, lo, emb = random_rows(5000, 100)
    store.write_segment(hi, lo, emb)
    expected = {(int(h), int(l)): e for h, l, e in zip(hi, lo, emb)}
    ctx = multiprocessing.get_context("fork")
    stop, errors = ctx.Event(), ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(str(tmp_path), expected, stop, errors)) for _ in range(2)]
    for p in readers:
        p.start()
    for seed in range(8):  # every round: a new segment, then a compaction that deletes the old files
        store.write_segment(*random_rows(3000, seed))
        store.compact()
    stop.set()
    for p in readers:
        p.join(60)
    results = [errors.get(timeout=5) for _ in readers]
    assert all(r.startswith("ok") for r in results), results
    assert sorted(p.name for p in tmp_path.glob("base-*")) and len(list(tmp_path.glob("base-*.emb.npy"))) == 1
    assert not store.segments() and len(store) == 5000 + 8 * 3000


def _write_format1(directory: Path, captions: list[str], per_shard: int) -> None:
    """A cache folder as the earlier format wrote it: meta.json format 1 + shard-*.npz (hashes, embeddings)."""
    directory.mkdir()
    (directory / "meta.json").write_text(json.dumps({"model": "hash-model", "dim": DIM, "format": 1}))
    for i in range(0, len(captions), per_shard):
        chunk = captions[i : i + per_shard]
        hashes = np.frombuffer(b"".join(caption_key(c) for c in chunk), np.uint8).reshape(-1, 16)
        emb = np.stack([vector(c) for c in chunk]).astype(np.float16)
        with open(directory / f"shard-{i:08x}-1-abc.npz", "wb") as f:
            np.savez(f, hashes=hashes, embeddings=emb)


def test_old_cache_folder_still_works_and_converts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    captions = [f"an old caption {i}" for i in range(900)]
    _write_format1(tmp_path / "old", captions, per_shard=200)
    monkeypatch.setattr(semantic, "load_sentence_model", lambda name, device: pytest.fail("model loaded"))
    small = SemanticEncoder("hash-model", cache_dir=tmp_path / "old", show_progress=False)  # read as segments
    want = np.stack([vector(c) for c in captions])
    np.testing.assert_allclose(small.encode(captions).numpy(), want, atol=2e-3)
    assert len(small.store.segments()) == 5 and small.store.base_rows == 0

    monkeypatch.setattr(semantic.store, "COMPACT_BYTES", 1000)
    converted = SemanticEncoder("hash-model", cache_dir=tmp_path / "old", show_progress=False)
    assert "converting the format-1 cache (5 files, 900 new captions)" in capsys.readouterr().out
    assert converted.store.base_rows == 900 and not converted.store.segments()
    assert json.loads((tmp_path / "old" / "meta.json").read_text())["format"] == 2
    np.testing.assert_allclose(converted.encode(captions).numpy(), want, atol=2e-3)
    np.testing.assert_array_equal(small.encode(captions).numpy(), converted.encode(captions).numpy())  # old view
    assert converted.num_encoded == small.num_encoded == 0
    SemanticEncoder("hash-model", cache_dir=tmp_path / "old", show_progress=False)
    assert "converting" not in capsys.readouterr().out  # once


def _write_csv(path: Path, captions: list[str]) -> None:
    path.write_text("filepath,title\n" + "".join(f"img{i}.jpg,{c}\n" for i, c in enumerate(captions)))


def _embed(csv: Path, cache: Path, flush_every: int) -> int:
    from alignclip.semantic.embed import embed_captions

    return embed_captions(f"csv:{csv}", "hash-model", str(cache), "cpu", 16, flush_every=flush_every)


@needs_fork
def test_embed_captions_killed_and_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    captions = [f"caption number {i}" for i in range(480)] + ["caption number 7"] * 5  # duplicates count once
    _write_csv(tmp_path / "train.csv", captions)
    model = HashModel(delay=0.03)
    monkeypatch.setattr(semantic, "load_sentence_model", lambda name, device: model)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_embed, args=(tmp_path / "train.csv", tmp_path / "killed", 32))
    child.start()
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "killed").glob("shard-*.npz"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)  # no chance to flush: what is on disk is all that survives
    child.join(10)
    stored = len(CaptionStore(tmp_path / "killed", "hash-model", show_progress=False))
    assert 0 < stored < 480

    model.delay = 0.0
    assert _embed(tmp_path / "train.csv", tmp_path / "killed", 32) == 0
    assert model.calls == 480 - stored  # the rerun encoded exactly what was missing
    assert _embed(tmp_path / "train.csv", tmp_path / "whole", 10_000) == 0  # uninterrupted, for comparison
    resumed = SemanticEncoder("hash-model", cache_dir=tmp_path / "killed", show_progress=False)
    whole = SemanticEncoder("hash-model", cache_dir=tmp_path / "whole", show_progress=False)
    assert len(resumed) == len(whole) == 480
    np.testing.assert_array_equal(resumed.encode(captions).numpy(), whole.encode(captions).numpy())
    assert resumed.num_encoded == whole.num_encoded == 0
    assert _embed(tmp_path / "train.csv", tmp_path / "killed", 32) == 0 and model.calls == 480 * 2 - stored


def _rank(cache: str, captions: list[str], rank: int, out: Any) -> None:
    encoder = SemanticEncoder("hash-model", cache_dir=cache, show_progress=False)
    counts = prefill_shared(encoder, captions, rank, 2, stall_s=30, show=False)
    out.put((rank, counts["encoded"], len(encoder), encoder.store.base_rows))


@needs_fork
def test_two_ranks_split_the_work_and_wait_on_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank encodes about half; the faster one waits (polling files) for the other; both end on one base."""
    captions = [f"shared caption {i}" for i in range(400)]
    monkeypatch.setattr(semantic, "load_sentence_model", lambda name, device: HashModel(delay=0.02))
    monkeypatch.setattr(semantic.store, "COMPACT_BYTES", 1000)  # compact after the barrier
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    ranks = [ctx.Process(target=_rank, args=(str(tmp_path), captions, r, out)) for r in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(120)
    assert [p.exitcode for p in ranks] == [0, 0]
    results = sorted(out.get(timeout=5) for _ in ranks)
    assert sum(r[1] for r in results) == 400 and all(150 < r[1] < 250 for r in results)  # halves, none twice
    assert [r[2:] for r in results] == [(400, 400), (400, 400)]
    whole = SemanticEncoder("hash-model", cache_dir=tmp_path, show_progress=False)
    np.testing.assert_allclose(whole.encode(captions).numpy(), np.stack([vector(c) for c in captions]), atol=2e-3)


def test_embed_captions_command_csv_and_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    import tarfile

    from alignclip.cli.main import main
    from alignclip.data.pack import pack

    model = HashModel()
    monkeypatch.setattr(semantic, "load_sentence_model", lambda name, device: model)
    captions = [f"row {i}, with a comma" for i in range(50)]
    _write_csv(tmp_path / "t.csv", [f'"{c}"' for c in captions])
    flags = ["--semantic-model", "hash-model", "--device", "cpu", "--batch-size", "7"]
    assert main(["data", "embed-captions", f"csv:{tmp_path / 't.csv'}", "--cache-dir", str(tmp_path / "c"),
                 *flags]) == 0
    assert "50 captions, 50 encoded now" in capsys.readouterr().out and model.calls == 50
    store = SemanticEncoder("hash-model", cache_dir=tmp_path / "c", show_progress=False)
    np.testing.assert_allclose(store.encode(captions).numpy(), np.stack([vector(c) for c in captions]), atol=2e-3)

    pack("synthetic:30", str(tmp_path / "shards"), samples_per_shard=10, image_size=16, progress=False)
    assert main(["data", "embed-captions", f"wds:{tmp_path / 'shards'}/shard-{{000000..000002}}.tar",
                 "--cache-dir", str(tmp_path / "c"), *flags]) == 0
    texts = []
    for path in sorted((tmp_path / "shards").glob("shard-*.tar")):
        with tarfile.open(path) as tar:
            texts += [tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".txt")]  # type: ignore
    assert len(texts) == 30
    whole = SemanticEncoder("hash-model", cache_dir=tmp_path / "c", show_progress=False)
    assert all(t in whole for t in texts) and len(whole) == 50 + len(set(texts))
    assert not list((tmp_path / "c").glob(".embed-done-*"))  # rank 0 cleaned its markers up

    assert main(["data", "embed-captions", f"csv:{tmp_path / 't.csv'}", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
