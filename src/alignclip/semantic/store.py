"""The on-disk caption-embedding store of one sentence model, memory-mapped read-only by every process.

Layout of a store folder:
    meta.json              {"model": identity, "dim": D, "format": 2}; a different model or dim is refused
    store.json             {"base": NAME, "rows": n, "absorbed": [segment names]}: which base is current
    NAME.keys.npy          uint64[2, n]: the (hi, lo) halves of the sorted 16-byte caption keys
    NAME.emb.npy           float16[n, D], L2-normalised; row i belongs to key i
    NAME.index.npy         int64[2**bits + 1]: where each bucket of the top `bits` key bits starts
    shard-*.npz            append-only segments: "hashes" uint8[m, 16] + "embeddings" float16[m, D]

Why: the base is opened with ``np.load(mmap_mode="r")``, so opening costs three header reads whatever its size,
and every rank and DataLoader worker on a node shares one page-cache copy instead of a private array plus a dict.
Keys are uniform hashes, so a bucket table over their top bits narrows each lookup to a dozen rows; a vectorised
binary search there answers a batch in a few numpy calls. New captions go into segments (written to a temp file,
then ``os.replace``d, named by time+pid+uuid: any number of processes may write at once); a segment is exactly the
format-1 cache shard, so an old cache folder is a store with no base yet. Compaction merges the segments into a new
base under an flock: it writes new files, replaces store.json atomically, and only then deletes what it absorbed.
A reader that still maps the old base keeps valid data (an unlinked file lives on while mapped); a reader that
finds a file gone re-reads store.json, whose base already holds the missing rows.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from alignclip.fileio import atomic_write

from .model import join_keys, split_keys
from .search import search, unique_new
from .warm import warm as warm_pages

META_FILE, MANIFEST, LOCK_FILE = "meta.json", "store.json", ".compact.lock"
SEGMENT_PREFIX = "shard-"
FORMAT = 2
COMPACT_BYTES = 64 * 2**20  # unabsorbed segments above this are compacted on open (a reader holds them in memory)
COMPACT_WAIT_S = 3600.0  # how long a process waits for another one's compaction before it gives up


def _empty(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros((0, dim), np.float16)


def read_segment(path: Path, dim: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hi, lo, embeddings) of one segment; raises on anything torn, corrupt or of another dim."""
    with np.load(path, allow_pickle=False) as z:
        hashes, emb = z["hashes"], z["embeddings"]
    if hashes.dtype != np.uint8 or hashes.ndim != 2 or hashes.shape[1] != 16:
        raise ValueError(f"bad 'hashes' array {hashes.dtype}{hashes.shape}")
    if emb.ndim != 2 or emb.shape[0] != hashes.shape[0]:
        raise ValueError(f"'embeddings' shape {emb.shape} does not match {hashes.shape[0]} hashes")
    if dim is not None and emb.shape[1] != dim:
        raise ValueError(f"embedding dim {emb.shape[1]} != store dim {dim}")
    hi, lo = split_keys(np.ascontiguousarray(hashes).tobytes())
    return hi, lo, emb.astype(np.float16, copy=False)


def read_segment_keys(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Only the (hi, lo) keys of a segment (an .npz member is read on access: the embeddings stay on disk)."""
    with np.load(path, allow_pickle=False) as z:
        hashes = z["hashes"]
    if hashes.dtype != np.uint8 or hashes.ndim != 2 or hashes.shape[1] != 16:
        raise ValueError(f"bad 'hashes' array {hashes.dtype}{hashes.shape}")
    return split_keys(np.ascontiguousarray(hashes).tobytes())


def base_keys(directory: Path, manifest: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int | None]:
    """(hi, lo, bucket index, search steps) of the base store.json names, memory-mapped; empty if none."""
    name = manifest.get("base")
    if name is None:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), None, None
    keys = np.load(directory / f"{name}.keys.npy", mmap_mode="r").view(np.ndarray)
    index = np.load(directory / f"{name}.index.npy", mmap_mode="r").view(np.ndarray)
    return keys[0], keys[1], index, int(manifest.get("max_bucket", keys.shape[1])).bit_length()


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a temp file's name
        np.savez(f, **arrays)


class CaptionStore:
    """Read side (base + loaded segments) and write side (segments, compaction) of one store folder."""

    def __init__(self, directory: str | os.PathLike, model_id: str, show_progress: bool = True,
                 compact_bytes: int | None = None, warm: bool = True) -> None:
        self.dir, self.model_id, self.show_progress = Path(directory), model_id, show_progress
        self.warm, self.warming = warm, None  # warming: the thread mapping the base's pages (warm.py)
        self.compact_bytes = COMPACT_BYTES if compact_bytes is None else compact_bytes  # read now: tests lower it
        self.dim: int | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_meta()
        self._base: str | None = None
        self._seen: set[str] = set()
        self.refresh()

    # ---- reading ----------------------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Pick up a new base and segments written since (compacting first if they are many); returns rows added."""
        before = len(self)
        unseen = [p for p in self.segments() if p.name not in self._seen]
        held = len(getattr(self, "_ohi", ())) * (16 + 2 * (self.dim or 0))  # segments this reader holds in memory
        if held + sum(_size(p) for p in unseen) > self.compact_bytes:
            try:
                self.compact()
            except OSError as e:  # e.g. a read-only folder: read the segments into memory instead
                warnings.warn(f"could not compact the semantic store {self.dir} ({e}); reading its segments into "
                              "memory", RuntimeWarning, stacklevel=2)
        for _ in range(100):  # a compaction elsewhere may delete a file between listing and reading it
            try:
                self._reload()
                return len(self) - before
            except FileNotFoundError:
                time.sleep(0.05)
        raise RuntimeError(f"semantic store {self.dir} kept changing while it was read; try again")

    def _reload(self) -> None:
        manifest = self.manifest()
        if manifest.get("base") != self._base or not hasattr(self, "hi"):
            self._open_base(manifest)
            self._seen = set(manifest.get("absorbed", []))
            self._ohi, self._olo, self._oemb = _empty(self.dim or 0)
        skip = set(manifest.get("absorbed", []))
        for path in self.segments():
            if path.name in self._seen or path.name in skip:
                continue
            try:
                hi, lo, emb = read_segment(path, self.dim)
            except FileNotFoundError:
                raise
            except Exception as e:  # a torn/corrupt segment must not take the others (or the run) down
                warnings.warn(f"skipping unreadable semantic cache shard {path}: {e}", RuntimeWarning, stacklevel=3)
                self._seen.add(path.name)
                continue
            self._seen.add(path.name)
            self._add_overlay(hi, lo, emb)

    def _open_base(self, manifest: dict) -> None:
        self.hi, self.lo, self.index, self.steps = base_keys(self.dir, manifest)
        name = manifest.get("base")
        self.emb = np.zeros((0, self.dim or 0), np.float16) if name is None else \
            np.load(self.dir / f"{name}.emb.npy", mmap_mode="r").view(np.ndarray)  # plain view: no memmap overhead
        self._base = name
        if self.warm and name is not None:
            self.warming = warm_pages(self.index, self.hi, self.emb)  # type: ignore[arg-type]

    def _add_overlay(self, hi: np.ndarray, lo: np.ndarray, emb: np.ndarray) -> None:
        """Merge rows into the in-memory sorted overlay (keys already in the base or overlay keep their row)."""
        if self.dim is None:
            self.dim = int(emb.shape[1])
        if not len(self._oemb):
            self._oemb = self._oemb.reshape(0, emb.shape[1])
        keep = unique_new(hi, lo, self._known_on_disk)
        if not len(keep):
            return
        hi, lo, emb = np.concatenate([self._ohi, hi[keep]]), np.concatenate([self._olo, lo[keep]]), \
            np.concatenate([self._oemb, emb[keep]])
        order = np.lexsort((lo, hi))
        self._ohi, self._olo, self._oemb = hi[order], lo[order], emb[order]

    def _known_on_disk(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        return self.contains(hi, lo)

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        return search(self.hi, self.lo, hi, lo, self.index, self.steps)[1] | search(self._ohi, self._olo, hi, lo)[1]

    def lookup(self, hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float16[n, dim] embeddings, found[n]); rows of keys not found are zero."""
        rows, found = search(self.hi, self.lo, hi, lo, self.index, self.steps)
        if found.all():  # the common case: one gather, no scatter
            return np.asarray(self.emb[rows]), found
        out = np.zeros((len(hi), self.dim or 0), np.float16)
        if found.any():
            out[found] = self.emb[rows[found]]
        rest = np.flatnonzero(~found)
        if len(rest) and len(self._ohi):
            orows, ofound = search(self._ohi, self._olo, hi[rest], lo[rest])
            out[rest[ofound]] = self._oemb[orows[ofound]]
            found[rest[ofound]] = True
        return out, found

    def __len__(self) -> int:
        return len(getattr(self, "hi", ())) + len(getattr(self, "_ohi", ()))

    def current_base(self) -> str | None:
        return self._base

    @property
    def base_rows(self) -> int:
        return len(self.hi)

    # ---- writing ----------------------------------------------------------------------------------------------
    def write_segment(self, hi: np.ndarray, lo: np.ndarray, emb: np.ndarray) -> str:
        """Persist rows as one new segment (atomic; safe across processes) and add them to this reader's view."""
        if self.dim is None:
            self.dim = int(emb.shape[1])
        self._write_meta()
        name = f"{SEGMENT_PREFIX}{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:12]}.npz"
        atomic_write(self.dir / name, lambda tmp: _save_npz(tmp, hashes=join_keys(hi, lo), embeddings=emb))
        self._seen.add(name)
        self._add_overlay(hi, lo, emb)
        return name

    def compact(self, wait: bool = True, wait_s: float = COMPACT_WAIT_S) -> bool:
        """Merge every segment into a new base. False if another process holds the lock and `wait` is False."""
        with self._lock(wait, wait_s) as held:
            if not held:
                return False
            from .compact import merge_into_base

            merge_into_base(self, self.manifest(), self.segments())
        self._base = None  # reopen whatever is current now
        self._reload()
        return True

    @contextlib.contextmanager
    def _lock(self, wait: bool, wait_s: float) -> Iterator[bool]:
        """flock on .compact.lock: released by the kernel if its holder dies, so a crash never blocks the store."""
        with open(self.dir / LOCK_FILE, "a") as f:
            start = last_note = time.monotonic()
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        yield False
                        return
                    now = time.monotonic()
                    if now - start > wait_s:
                        raise TimeoutError(f"another process has been compacting the semantic store {self.dir} for "
                                           f"over {wait_s:.0f}s; if none is running, retry") from None
                    if self.show_progress and now - last_note > 15:
                        print(f"waiting for another process to finish compacting {self.dir} "
                              f"({now - start:.0f}s so far)", flush=True)
                        last_note = now
                    time.sleep(0.2)
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- metadata ---------------------------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        return sorted(self.dir.glob(f"{SEGMENT_PREFIX}*.npz"))

    def manifest(self) -> dict:
        path = self.dir / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise ValueError(f"unreadable semantic store manifest {path}: {e}") from None

    def write_manifest(self, manifest: dict) -> None:
        atomic_write(self.dir / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))

    def _check_meta(self) -> None:
        path = self.dir / META_FILE
        if not path.exists():
            return
        try:
            meta = json.loads(path.read_text())
            model, dim = str(meta["model"]), int(meta["dim"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"unreadable semantic cache meta {path}: {e}") from None
        if model != self.model_id:
            raise ValueError(f"semantic cache dir {self.dir} was made by model {model!r} (dim {dim}), "
                             f"not {self.model_id!r}; use another cache_dir")
        self.dim = dim

    def _write_meta(self, fmt: int = FORMAT) -> None:
        path = self.dir / META_FILE
        if path.exists():  # may have been written by another process since __init__: must still agree with us
            meta = json.loads(path.read_text())
            if (meta.get("model"), meta.get("dim")) != (self.model_id, self.dim):
                raise ValueError(f"semantic cache dir {self.dir} now belongs to model {meta.get('model')!r} "
                                 f"(dim {meta.get('dim')}), not {self.model_id!r} (dim {self.dim}); not flushing")
            if meta.get("format", 1) >= fmt:
                return
        text = json.dumps({"model": self.model_id, "dim": self.dim, "format": fmt}, indent=1)
        atomic_write(path, lambda tmp: tmp.write_text(text))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
