"""Caption -> sentence embedding, each unique caption computed once ever and kept in the caption store.

AlignCLIP's separation loss weighs in-batch negatives by the semantic distance of their captions, measured by a frozen
sentence model (the paper used all-mpnet-base-v2; our offline default is all-MiniLM-L6-v2). Those embeddings never
change, so a training step costs one hash per caption and one memory-mapped lookup (store.py), and the sentence model
is loaded only when a caption is missing, so a run whose captions were all precomputed never imports it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .model import SentenceModel, caption_keys, default_cache_dir, model_identity, split_keys
from .store import CaptionStore

SCAN_CHUNK = 1 << 16  # captions hashed and looked up at a time while scanning for missing ones


def _load(name: str | os.PathLike | None, device: str) -> SentenceModel:
    from alignclip import semantic  # looked up on the package: one patch point for tests and embedders

    return semantic.load_sentence_model(name, device)


class SemanticEncoder:
    """Sentence embeddings of captions from the store, encoding (and later flushing) the ones it lacks.

    flush_every: new captions kept in memory before an automatic flush; flush_interval_s: flush at least this often
    while encoding (None: never by time), so a long job killed at any moment loses at most that much work.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 256,
        show_progress: bool = True,
        flush_every: int = 50_000,
        flush_interval_s: float | None = None,
    ) -> None:
        if batch_size < 1 or flush_every < 1:
            raise ValueError(f"batch_size and flush_every must be >= 1, got {batch_size} and {flush_every}")
        self.model_name_or_path = model_name_or_path
        self.model_id = model_identity(model_name_or_path)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(self.model_id)
        self.device, self.batch_size, self.show_progress = device, batch_size, show_progress
        self.flush_every, self.flush_interval_s = flush_every, flush_interval_s
        self.num_encoded = 0  # captions that actually ran through the sentence model
        self._model: SentenceModel | None = None
        self._pending: dict[bytes, int] = {}  # keys encoded since the last flush -> row of _pending_emb
        self._pending_emb = np.zeros((0, 0), dtype=np.float16)
        self._last_flush = time.monotonic()
        self.store = CaptionStore(self.cache_dir, self.model_id, show_progress=show_progress)

    # ---- public API -------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Embedding width; read from the store when possible, else from the (then loaded) model."""
        if self.store.dim is None:
            self._get_model()
        assert self.store.dim is not None
        return self.store.dim

    def load_model(self) -> None:
        """Load the sentence model now (it is otherwise loaded by the first caption the store lacks)."""
        self._get_model()

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """``FloatTensor[N, dim]`` (CPU, float32, L2-normalised); unseen captions are encoded once, duplicates too."""
        if isinstance(captions, str):
            captions = [captions]
        if not len(captions):
            return torch.zeros(0, self.dim)
        digests, hi, lo = caption_keys(captions)
        emb, found = self.store.lookup(hi, lo)
        if not found.all():
            rest = np.flatnonzero(~found)
            new = {digests[i]: captions[i] for i in rest if digests[i] not in self._pending}  # dedup, keep order
            if new:
                self._encode_new(list(new), list(new.values()), progress=len(new) > self.batch_size)
            if emb.shape[1] != self.dim:
                emb = np.zeros((len(captions), self.dim), np.float16)
            rows = [self._pending.get(digests[i]) for i in rest]
            if None in rows:  # flushed meanwhile: the store has them now
                emb[rest] = self.store.lookup(hi[rest], lo[rest])[0]
            else:
                emb[rest] = self._pending_emb[np.asarray(rows, dtype=np.int64)]
        out = emb.astype(np.float32)
        out /= np.maximum(np.sqrt(np.einsum("ij,ij->i", out, out)), 1e-12)[:, None]  # undo fp16 rounding of the norm
        return torch.from_numpy(out)  # numpy, not torch.nn.functional.normalize: no thread pool for a small job

    def missing(self, captions: Iterable[str]) -> dict[bytes, str]:
        """The unique captions neither in the store nor pending, keyed by their digest, in order of first sight."""
        out: dict[bytes, str] = {}
        chunk: list[str] = []
        for caption in captions:
            chunk.append(caption)
            if len(chunk) == SCAN_CHUNK:
                self._scan(chunk, out)
                chunk = []
        self._scan(chunk, out)
        return out

    def prefill(self, captions: Iterable[str]) -> None:
        """Encode every unseen unique caption in batches (progress bar), then flush to disk."""
        self.encode_missing(self.missing(captions))
        self.flush()

    def encode_missing(self, missing: dict[bytes, str], desc: str = "semantic encode") -> None:
        """Encode captions already known to be missing (`missing()`'s result), flushing as configured."""
        if missing:
            self._encode_new(list(missing), list(missing.values()), progress=True, desc=desc)

    def flush(self) -> None:
        """Persist entries encoded since the last flush as one new segment (atomic; safe across processes)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        hi, lo = split_keys(b"".join(self._pending))
        self.store.write_segment(hi, lo, self._pending_emb[: len(self._pending)].copy())
        self._pending = {}

    def refresh(self) -> int:
        """Pick up what other processes wrote since (new segments, a new base); returns how many captions were added."""
        return self.store.refresh()

    def __len__(self) -> int:
        return len(self.store) + len(self._pending)

    def __contains__(self, caption: object) -> bool:
        if not isinstance(caption, str):
            return False
        digests, hi, lo = caption_keys([caption])
        return digests[0] in self._pending or bool(self.store.contains(hi, lo)[0])

    def __enter__(self) -> SemanticEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    def __repr__(self) -> str:
        return (f"SemanticEncoder(model={self.model_id!r}, dim={self.store.dim}, cached={len(self)}, "
                f"cache_dir='{self.cache_dir}')")

    # ---- internals ------------------------------------------------------------------------------------------
    def _scan(self, chunk: list[str], out: dict[bytes, str]) -> None:
        if not chunk:
            return
        digests, hi, lo = caption_keys(chunk)
        for i in np.flatnonzero(~self.store.contains(hi, lo)):
            k = digests[i]
            if k not in self._pending and k not in out:
                out[k] = chunk[i]

    def _get_model(self) -> SentenceModel:
        if self._model is None:
            model = _load(self.model_name_or_path, self.device)
            get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            dim = int(get_dim())
            if self.store.dim is not None and dim != self.store.dim:
                raise ValueError(f"sentence model {self.model_id!r} gives dim {dim} but cache dir {self.cache_dir} "
                                 f"holds dim {self.store.dim}; use another cache_dir")
            self.store.dim = dim
            self._model = model
        return self._model

    def _encode_new(self, keys: list[bytes], texts: list[str], progress: bool, desc: str = "semantic encode") -> None:
        model, bs, dim = self._get_model(), self.batch_size, self.dim
        with tqdm(total=len(texts), desc=desc, unit="caption", dynamic_ncols=True, smoothing=0.05,
                  disable=not (self.show_progress and progress)) as bar:
            for start in range(0, len(texts), bs):
                chunk = texts[start : start + bs]
                emb = model.encode(chunk, batch_size=bs, convert_to_numpy=True, normalize_embeddings=True,
                                   show_progress_bar=False)
                emb = np.asarray(emb, dtype=np.float32)
                if emb.shape != (len(chunk), dim):
                    raise ValueError(f"sentence model returned shape {emb.shape}, expected ({len(chunk)}, {dim})")
                self._add_pending(keys[start : start + bs], emb.astype(np.float16))
                self.num_encoded += len(chunk)
                bar.update(len(chunk))
                late = self.flush_interval_s is not None and time.monotonic() - self._last_flush > self.flush_interval_s
                if late or (self.flush_interval_s is not None and len(self._pending) >= self.flush_every):
                    self.flush()
        if len(self._pending) >= self.flush_every:
            self.flush()

    def _add_pending(self, keys: list[bytes], emb: np.ndarray) -> None:
        size, need = len(self._pending), len(self._pending) + len(keys)
        if need > self._pending_emb.shape[0] or self._pending_emb.shape[1] != emb.shape[1]:
            grown = np.zeros((max(need, 2 * self._pending_emb.shape[0], 1024), emb.shape[1]), dtype=np.float16)
            if size:
                grown[:size] = self._pending_emb[:size]
            self._pending_emb = grown
        self._pending_emb[size:need] = emb
        self._pending.update(zip(keys, range(size, need)))
