"""Precompute the caption embeddings of a dataset: data-parallel, resumable, and with no collective to time out.

`alignclip data embed-captions` and the trainer's own prefill both run `prefill_shared`. The design, and why:

- **Shares without talking.** Rank r of W encodes the missing captions whose key satisfies ``hi % W == r`` (keys
  are uniform blake2b hashes, so the shares are equal). Every rank computes the same partition from the captions
  alone, whatever part of the store it has seen so far, so no rank waits for another to hand out work, and a
  caption is encoded by exactly one rank.
- **Resumable.** While encoding, a rank flushes a segment every `flush_interval_s` seconds (and on Ctrl-C/SIGTERM,
  see cli/data.py). A rerun first looks every caption up in the store, so nothing flushed is encoded again, and a
  kill at any moment (even SIGKILL) loses at most the last interval's work, never a flushed segment.
- **A file barrier, not a collective.** A rank that finished its share waits until every caption the run needs is
  on disk, polling the store's segments (their keys only) and printing how many are missing. It gives up when *no*
  caption arrived for `stall_s`: the bound measures a stalled or dead rank, not the size of the job, so a first run
  of 10M captions is never ended by runtime.dist_timeout_s, and nobody sits idle while one rank encodes everything.
- **Merged once.** After the barrier every rank reopens the store; the first to take the compaction lock merges all
  segments into one memory-mapped base, the others wait on the lock (with its own progress line and bound) and then
  map that base, so every rank ends up sharing one page-cache copy.
- **Streams** (tar shards) cannot be listed without reading them: rank r reads shards r::W and encodes what is
  missing there; rank 0 merges once every rank has left a done-marker (`embed_shards`). The trainer encodes
  streamed captions lazily instead (one batch at a time, nothing to wait for).
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from .encoder import SCAN_CHUNK, SemanticEncoder
from .model import caption_keys
from .search import search
from .store import CaptionStore, base_keys, read_segment_keys

MIN_STALL_S = 120.0  # a rank still loading its sentence model, or encoding a first batch on a busy CPU, adds nothing


def stall_bound(dist_timeout_s: float) -> float:
    """How long a rank waits without any new caption from the others: the DDP timeout, but never under 2 minutes."""
    return max(float(dist_timeout_s), MIN_STALL_S)


def flush_interval(stall_s: float) -> float:
    """Flush often enough that a waiting rank sees progress several times within its stall bound."""
    return min(30.0, stall_s / 4)


def scan_share(encoder: SemanticEncoder, captions: Iterable[str], rank: int, world_size: int,
               keep_keys: bool = True) -> tuple[dict[bytes, str], np.ndarray, np.ndarray, int]:
    """(this rank's missing captions, sorted unique keys of all captions (hi, lo), number of captions seen)."""
    mine: dict[bytes, str] = {}
    his, los, seen, chunk = [], [], 0, []
    store = encoder.store

    def scan(chunk: list[str]) -> None:
        digests, hi, lo = caption_keys(chunk)
        if keep_keys:
            his.append(hi)
            los.append(lo)
        for i in np.flatnonzero((hi % np.uint64(world_size) == rank) & ~store.contains(hi, lo)):
            mine.setdefault(digests[i], chunk[i])

    for caption in captions:
        if caption:
            chunk.append(caption)
            seen += 1
            if len(chunk) == SCAN_CHUNK:
                scan(chunk)
                chunk = []
    if chunk:
        scan(chunk)
    hi = np.concatenate(his) if his else np.zeros(0, np.uint64)
    lo = np.concatenate(los) if los else np.zeros(0, np.uint64)
    order = np.lexsort((lo, hi))
    hi, lo = hi[order], lo[order]
    first = np.ones(len(hi), bool)
    first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    return mine, hi[first], lo[first], seen


def wait_for_captions(store: CaptionStore, hi: np.ndarray, lo: np.ndarray, stall_s: float, rank: int,
                      show: bool = True, poll_s: float = 0.5, note_every_s: float = 15.0) -> None:
    """Block until every key (sorted, unique) is in the store, reading only segment keys; see the module doc."""
    present = store.contains(hi, lo)
    seen: set[str] = set()
    base, start = store.current_base(), time.monotonic()
    last_change = last_note = start
    last_missing = int((~present).sum())
    while not present.all():
        manifest = store.manifest()
        if manifest.get("base") != base:  # compacted meanwhile: the new base holds what was in the segments
            base = manifest.get("base")
            try:
                bhi, blo, index, steps = base_keys(store.dir, manifest)
                present |= search(bhi, blo, hi, lo, index, steps)[1]
            except FileNotFoundError:
                base = None  # compacted again while opening: next poll
        for path in store.segments():
            if path.name in seen:
                continue
            try:
                shi, slo = read_segment_keys(path)
            except FileNotFoundError:
                continue  # absorbed into a new base: seen next poll
            except Exception as e:
                warnings.warn(f"skipping unreadable semantic cache shard {path}: {e}", RuntimeWarning, stacklevel=2)
                shi, slo = np.zeros(0, np.uint64), np.zeros(0, np.uint64)
            seen.add(path.name)
            rows, found = search(hi, lo, shi, slo)
            present[rows[found]] = True
        now, missing = time.monotonic(), int((~present).sum())
        if missing < last_missing:
            last_missing, last_change = missing, now
        if not missing:
            break
        if now - last_change > stall_s:
            raise TimeoutError(f"rank {rank}: {missing} of {len(hi)} captions are still missing from the semantic "
                               f"store {store.dir} and none arrived for {stall_s:.0f}s: another rank stalled or "
                               "died (its log says why); rerun, and what was encoded is reused")
        if show and now - last_note >= note_every_s:
            print(f"rank {rank}: waiting for the other ranks' caption embeddings: {missing} of {len(hi)} missing "
                  f"({now - start:.0f}s)", flush=True)
            last_note = now
        time.sleep(poll_s)


def prefill_shared(encoder: SemanticEncoder, captions: Iterable[str], rank: int = 0, world_size: int = 1,
                   stall_s: float = MIN_STALL_S, show: bool = True) -> dict[str, int]:
    """Encode this rank's share of the missing captions, wait (file barrier) for the others', then merge and map
    the store. Every rank of a run calls it with the same captions. Returns counts for a summary line."""
    mine, hi, lo, seen = scan_share(encoder, captions, rank, world_size, keep_keys=world_size > 1)
    if mine:
        encoder.load_model()  # before the clock: the summary line's rate is the encoding's
    before, start = encoder.num_encoded, time.monotonic()
    desc = "caption embeddings" if world_size == 1 else f"caption embeddings (rank {rank}/{world_size})"
    encoder.encode_missing(mine, desc=desc)
    encoder.flush()
    encoded, waited = time.monotonic() - start, time.monotonic()
    if world_size > 1:
        wait_for_captions(encoder.store, hi, lo, stall_s, rank, show)
    waited = time.monotonic() - waited
    encoder.refresh()  # compacts (or waits for the rank that does) when the new segments are many
    if mine:  # once per run that had to encode: what this rank did, and how long it waited for the others
        others = f"waited {waited:.1f}s for the other ranks, " if world_size > 1 else ""
        print(f"rank {rank}/{world_size}: encoded {len(mine)} new captions in {encoded:.1f}s "
              f"({len(mine) / max(encoded, 1e-9):.0f}/s); {others}"
              f"{time.monotonic() - start - encoded - waited:.1f}s merging", flush=True)
    return {"captions": seen, "unique": len(hi) if world_size > 1 else len(encoder), "encoded":
            encoder.num_encoded - before}


def _done_marker(store: CaptionStore, job: str, rank: int) -> Path:
    return store.dir / f".embed-done-{job}-{rank}"


def embed_shards(encoder: SemanticEncoder, shard_captions: Iterable[str], rank: int, world_size: int, job: str,
                 stall_s: float, show: bool = True) -> dict[str, int]:
    """Streams: encode the missing captions of this rank's shards; rank 0 then waits for every rank's done-marker
    (polled, bounded by `stall_s` without a new marker or segment) and merges all segments into the base."""
    mine, _, _, seen = scan_share(encoder, shard_captions, 0, 1, keep_keys=False)
    before = encoder.num_encoded
    encoder.encode_missing(mine, desc="caption embeddings" if world_size == 1 else f"caption embeddings (rank {rank})")
    encoder.flush()
    store = encoder.store
    _done_marker(store, job, rank).touch()
    if rank == 0:
        markers = [_done_marker(store, job, r) for r in range(world_size)]
        start = last_change = last_note = time.monotonic()
        state = None
        while not all(m.exists() for m in markers):
            now = time.monotonic()
            current = (sum(m.exists() for m in markers), len(store.segments()))
            if current != state:
                state, last_change = current, now
            if now - last_change > stall_s:
                raise TimeoutError(f"rank 0: only {state[0]} of {world_size} ranks finished and nothing new was "
                                   f"written to {store.dir} for {stall_s:.0f}s; rerun to finish (nothing is lost)")
            if show and now - last_note >= 15:
                print(f"rank 0: {state[0]} of {world_size} ranks done ({now - start:.0f}s)", flush=True)
                last_note = now
            time.sleep(0.5)
        encoder.store.compact()
        for m in markers:
            m.unlink(missing_ok=True)
    return {"captions": seen, "unique": len(encoder), "encoded": encoder.num_encoded - before}


def job_id() -> str:
    """What tells this torchrun job's done-markers from another's: its run id, else its rendezvous address."""
    env = os.environ
    raw = env.get("TORCHELASTIC_RUN_ID") or f"{env.get('MASTER_ADDR', '')}-{env.get('MASTER_PORT', '')}"
    return "".join(c if c.isalnum() else "_" for c in raw) or "local"
