"""`alignclip data embed-captions`: precompute a dataset's caption embeddings into the store, alone or under torchrun.

Map-style specs (csv/tsv, caption folders, synthetic) are listed without decoding an image and split by caption key
(prefill.prefill_shared); tar shards are split by shard (prefill.embed_shards). Ctrl-C or SIGTERM flushes what was
encoded before exiting, so a rerun continues where the run stopped.
"""
from __future__ import annotations

import signal
import time
from typing import Iterable, Iterator

from .encoder import SemanticEncoder
from .prefill import MIN_STALL_S, embed_shards, flush_interval, job_id, prefill_shared


def _shard_captions(shards: list[str]) -> Iterator[str]:
    from alignclip.data.shards import BadSample, decode_caption, iter_tar_groups

    for url in shards:
        for raw in iter_tar_groups(url):
            if not isinstance(raw, BadSample) and raw.caption is not None:
                text = decode_caption(raw.caption, raw.name)
                if isinstance(text, str):
                    yield text


def list_captions(spec: object, rank: int, world_size: int, num_samples: int | None = None,
                  seed: int = 0) -> tuple[Iterable[str], list[str] | None]:
    """(captions, None) for a map-style spec (all ranks list all of them); (this rank's captions, its shards) for
    tar shards."""
    from alignclip.data.sources import create_dataset
    from alignclip.training.data import can_list_captions, caption_of

    dataset = create_dataset(spec, image_size=32, train=True, num_samples=num_samples, seed=seed)  # type: ignore
    if can_list_captions(dataset):
        return (c for c in (caption_of(dataset, i) for i in range(len(dataset))) if c), None  # type: ignore
    shards = list(dataset.shards)[rank::world_size]  # type: ignore[attr-defined]
    return _shard_captions(shards), shards


def embed_captions(spec: object, model: str | None, cache_dir: str | None, device: str, batch_size: int,
                   num_samples: int | None = None, seed: int = 0, stall_s: float = MIN_STALL_S,
                   flush_every: int = 50_000) -> int:
    from alignclip.training.distributed import device_for_rank, env_info

    info = env_info()
    torch_device = device_for_rank(device, info)
    show = info.is_main
    encoder = SemanticEncoder(model, cache_dir, device=str(torch_device), batch_size=batch_size, show_progress=show,
                              flush_every=flush_every, flush_interval_s=flush_interval(stall_s))
    captions, shards = list_captions(spec, info.rank, info.world_size, num_samples, seed)
    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: flush, like Ctrl-C
    try:
        if shards is None:
            counts = prefill_shared(encoder, captions, info.rank, info.world_size, stall_s, show)
            if encoder.store.segments():  # the command's product is one mapped base, however few captions were new
                encoder.store.compact()
        else:
            counts = embed_shards(encoder, captions, info.rank, info.world_size, job_id(), stall_s, show)
    except KeyboardInterrupt:
        encoder.flush()
        print(f"rank {info.rank}: interrupted; {encoder.num_encoded} captions encoded by this run are stored in "
              f"{encoder.cache_dir}: rerun the same command to continue", flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - start
    if show:
        where = f"{len(shards)} shards on rank 0" if shards is not None else f"{counts['captions']} captions"
        print(f"{spec}: {where}, {counts['encoded']} encoded now on rank {info.rank} of {info.world_size} "
              f"({counts['encoded'] / max(seconds, 1e-9):.0f} captions/s), {len(encoder)} in the store "
              f"{encoder.cache_dir} ({seconds:.1f}s)")
    return 0
