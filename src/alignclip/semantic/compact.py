"""Compaction: merge every segment of a store into one new sorted, memory-mappable base (under the store's lock).

It streams: only the keys (16 bytes a caption) and one segment's embeddings are in memory at a time, and the new
embedding file is filled through a writable memory map, so merging 10M captions needs about 0.5 GB, not 8.
Nothing a reader may be using is touched until store.json names the new base.
"""
from __future__ import annotations

import json
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from alignclip.fileio import atomic_write

from .search import bucket_index, search, unique_new
from .store import FORMAT, META_FILE, base_keys, read_segment

if TYPE_CHECKING:
    from .store import CaptionStore

CHUNK_ROWS = 1 << 18


def insertion_points(hi: np.ndarray, lo: np.ndarray, qhi: np.ndarray, qlo: np.ndarray) -> np.ndarray:
    """For each query, how many sorted (hi, lo) keys are smaller (queries are never equal to a key)."""
    points = np.searchsorted(hi, qhi, side="left")
    while True:  # equal `hi` halves (about 1 in 10^12 pairs): step past the smaller `lo`s
        at = np.minimum(points, max(len(hi) - 1, 0))
        step = (points < len(hi)) & (hi[at] == qhi) & (lo[at] < qlo) if len(hi) else np.zeros(len(qhi), bool)
        if not step.any():
            return points
        points = points + step


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def merge_into_base(store: "CaptionStore", manifest: dict, segments: list[Path]) -> None:
    names, parts, sources = [], [], []
    for path in segments:
        try:
            hi, lo, emb = read_segment(path, store.dim)
        except Exception as e:
            warnings.warn(f"skipping unreadable semantic cache shard {path}: {e}", RuntimeWarning, stacklevel=4)
            continue
        if store.dim is None:
            store.dim = int(emb.shape[1])
        sources.append(np.stack([np.full(len(hi), len(names)), np.arange(len(hi))]))
        names.append(path.name)
        parts.append((hi, lo))
    if not names:
        return
    dim, old = int(store.dim), manifest.get("base")  # type: ignore[arg-type]
    bhi, blo, bindex, bsteps = base_keys(store.dir, manifest)
    bemb = np.load(store.dir / f"{old}.emb.npy", mmap_mode="r") if old is not None else None
    hi, lo = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    src = np.concatenate(sources, axis=1)
    keep = unique_new(hi, lo, lambda h, l: search(bhi, blo, h, l, bindex, bsteps)[1])
    nhi, nlo, src = hi[keep], lo[keep], src[:, keep]
    del hi, lo, parts
    n, m = len(bhi), len(nhi)
    legacy = old is None and json.loads((store.dir / META_FILE).read_text()).get("format", 1) < FORMAT
    if legacy or store.show_progress:
        what = "converting the format-1 cache" if legacy else "merging segments"
        print(f"semantic store {store.dir}: {what} ({len(names)} files, {m} new captions) into a memory-mapped "
              f"base of {n + m} captions", flush=True)
    pos = insertion_points(bhi, blo, nhi, nlo)
    dest_new = np.arange(m) + pos
    name = f"base-{time.time_ns():x}-{uuid.uuid4().hex[:8]}"

    def write_emb(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n + m, dim))
        for a in range(0, n, CHUNK_ROWS):
            b = min(a + CHUNK_ROWS, n)
            out[np.arange(a, b) + insertion_points(nhi, nlo, bhi[a:b], blo[a:b])] = bemb[a:b]  # type: ignore
        for s, seg in enumerate(names):
            rows = np.flatnonzero(src[0] == s)
            if len(rows):
                out[dest_new[rows]] = read_segment(store.dir / seg, dim)[2][src[1, rows]]
        out.flush()
        del out

    mhi, mlo = np.insert(np.asarray(bhi), pos, nhi), np.insert(np.asarray(blo), pos, nlo)
    index = bucket_index(mhi)
    atomic_write(store.dir / f"{name}.emb.npy", write_emb)
    atomic_write(store.dir / f"{name}.keys.npy", lambda tmp: _save(tmp, np.stack([mhi, mlo])))
    atomic_write(store.dir / f"{name}.index.npy", lambda tmp: _save(tmp, index))
    store._write_meta()
    store.write_manifest({"base": name, "rows": n + m, "max_bucket": int(np.diff(index).max()), "absorbed": names})
    for seg in names:  # only now: a reader that lists a segment and then misses it re-reads store.json
        (store.dir / seg).unlink(missing_ok=True)
    for stale in store.dir.glob("base-*.npy"):
        if not stale.name.startswith(name + "."):
            stale.unlink(missing_ok=True)
