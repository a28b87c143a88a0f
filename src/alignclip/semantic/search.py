"""Finding caption keys in sorted (hi, lo) uint64 arrays: the only index the store has, and the reason it needs no
dict. Keys are uniform hashes, so a table of where each bucket of the top key bits starts (built at compaction,
memory-mapped) narrows a query to about eight rows; a vectorised binary search finishes it in a few numpy calls."""
from __future__ import annotations

from typing import Callable

import numpy as np


def search(hi: np.ndarray, lo: np.ndarray, qhi: np.ndarray, qlo: np.ndarray,
           index: np.ndarray | None = None, steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row of each query key in the sorted (hi, lo) arrays, and whether it is there. With a bucket `index` each
    query searches only its bucket (`steps` = ceil(log2(largest bucket + 1)) halvings)."""
    n = len(hi)
    if n == 0 or len(qhi) == 0:
        return np.zeros(len(qhi), np.int64), np.zeros(len(qhi), bool)
    if index is None:
        left, right, steps = np.zeros(len(qhi), np.int64), np.full(len(qhi), n, np.int64), int(n).bit_length()
    else:
        bucket = (qhi >> np.uint64(64 - (len(index) - 1).bit_length() + 1)).astype(np.int64)
        left, right = index[bucket].astype(np.int64), index[bucket + 1].astype(np.int64)
    for _ in range(steps or 0):
        active = left < right
        mid = (left + right) >> 1
        at = np.minimum(mid, n - 1)
        kh, kl = hi[at], lo[at]
        less = active & ((kh < qhi) | ((kh == qhi) & (kl < qlo)))
        left = np.where(less, mid + 1, left)
        right = np.where(active & ~less, mid, right)
    at = np.minimum(left, n - 1)
    return at, (left < n) & (hi[at] == qhi) & (lo[at] == qlo)


def bucket_index(hi: np.ndarray) -> np.ndarray:
    """Start row of each bucket of the top `bits` key bits (about 8 keys per bucket), plus the end."""
    bits = max(1, min(24, int(len(hi)).bit_length() - 3))
    bounds = np.arange(2**bits + 1, dtype=np.uint64) << np.uint64(64 - bits)
    index = np.searchsorted(hi, bounds[:-1]).astype(np.int64)
    return np.append(index, len(hi))


def unique_new(hi: np.ndarray, lo: np.ndarray, known: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Positions of the first occurrence of each key not `known`, in sorted key order."""
    fresh = np.flatnonzero(~known(hi, lo))
    order = fresh[np.lexsort((lo[fresh], hi[fresh]))]
    keep = np.ones(len(order), bool)
    keep[1:] = (hi[order][1:] != hi[order][:-1]) | (lo[order][1:] != lo[order][:-1])
    return order[keep]  # lexsort is stable: the first occurrence of a key comes first
