"""Background warm-up of a memory-mapped base: map its pages into this process before lookups fault them in.

A lookup that touches a page this process has not mapped yet takes a page fault (a disk read if the page is not in
the page cache either): a 4,096-caption lookup in a 10M-caption store took 14.9 ms on a fresh mapping and 8.8 ms
once the pages were mapped (benchmarks/README.md). Opening stays instant; a daemon thread asks the kernel to map
the keys, then the embeddings (MADV_POPULATE_READ, Linux >= 5.14; elsewhere MADV_WILLNEED, which only reads
ahead), 16 MiB at a time so it never holds the interpreter for long. The pages are the page cache's, shared by
every process that maps the store: warming costs no private memory.
"""
from __future__ import annotations

import mmap
import threading

import numpy as np

MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # the Linux value; Python < 3.13 lacks the name
CHUNK = 16 * 2**20


def map_of(array: np.ndarray) -> mmap.mmap | None:
    """The mmap behind a (view of a) np.load(mmap_mode=...) array, if there is one."""
    while array is not None:
        found = getattr(array, "_mmap", None)
        if isinstance(found, mmap.mmap):
            return found
        array = getattr(array, "base", None)  # type: ignore[assignment]
    return None


def _populate(maps: list[mmap.mmap]) -> None:
    advice = MADV_POPULATE_READ
    for m in maps:
        for start in range(0, len(m), CHUNK):
            try:
                m.madvise(advice, start, min(CHUNK, len(m) - start))
            except OSError:  # kernel without MADV_POPULATE_READ: read ahead instead
                if advice == mmap.MADV_WILLNEED:
                    return
                advice = mmap.MADV_WILLNEED
            except ValueError:  # closed (the base was replaced and dropped): nothing left to warm
                return


def warm(*arrays: np.ndarray) -> threading.Thread | None:
    """Start mapping the arrays' pages in the background (in the order given); None if none is memory-mapped."""
    maps = [m for m in (map_of(a) for a in arrays) if m is not None and len(m)]
    if not maps or not hasattr(maps[0], "madvise"):
        return None
    thread = threading.Thread(target=_populate, args=(maps,), name="semantic-store-warm", daemon=True)
    thread.start()
    return thread
