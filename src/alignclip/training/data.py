"""Training data: the dataset from the config, and a data order that is a pure function of (seed, epoch, position).

Map-style datasets: each epoch is a permutation drawn from a generator seeded with seed + epoch (as
DistributedSampler does). Optimizer step b of the epoch consumes global rows [b*B, (b+1)*B) of it, and rank r takes
the r-th contiguous slice of those rows. So the global batch of every step is the same for any world size, and a run
resumed at (epoch, b) sees exactly the batches the uninterrupted run would have seen. Their random augmentation is
a pure function of (seed, epoch, index) too (set_epoch + data.transforms.sample_seed), whatever the worker count.

Iterable datasets (WebDataset shards) are split per rank and per worker by the dataset itself; resuming skips the
consumed batches of the epoch by reading past them.
"""
from __future__ import annotations

import itertools
import signal
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from .config import TrainConfig
from .distributed import DistInfo


SYNTHETIC_SIZE = 8192  # the built-in dataset's size when data.num_samples is null


class EpochBatchSampler(Sampler[list[int]]):
    """Yields this rank's indices for each optimizer step of one epoch, from step `start_batch` on."""

    def __init__(self, num_samples: int, global_batch: int, rank: int, world_size: int, seed: int, epoch: int,
                 start_batch: int = 0) -> None:
        if global_batch % world_size:
            raise ValueError(f"optim.batch_size {global_batch} is not divisible by the world size {world_size}")
        self.num_samples, self.global_batch, self.seed, self.epoch = num_samples, global_batch, seed, epoch
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.local_batch = global_batch // world_size

    @property
    def num_batches(self) -> int:
        return self.num_samples // self.global_batch  # drop_last, like open_clip

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)

    def global_order(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.global_order()
        lo = self.rank * self.local_batch
        for b in range(self.start_batch, self.num_batches):
            rows = order[b * self.global_batch:(b + 1) * self.global_batch]
            yield rows[lo:lo + self.local_batch].tolist()


def _worker_init(worker_id: int) -> None:
    """Workers leave SIGINT/SIGTERM to the main process, which stops at a step boundary and then shuts them
    down; a worker killed by Ctrl-C in the terminal would otherwise crash the loader before the checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_train_dataset(config: TrainConfig, image_size: int, info: DistInfo) -> Dataset:
    from alignclip.data.sources import build_dataset
    from alignclip.data.spec import with_csv_settings

    d = config.data  # csv_separator null/"auto": tsv reads tabs, csv detects (the one rule: data.spec.csv_separator)
    spec = with_csv_settings(d.train, d.csv_image_key, d.csv_caption_key, d.csv_separator)
    kind = spec.kind
    seed = d.synthetic_seed if kind == "synthetic" else config.runtime.seed
    return build_dataset(spec, image_size=image_size, train=True,
                         num_samples=SYNTHETIC_SIZE if kind == "synthetic" and d.num_samples is None else d.num_samples,
                         seed=seed, rank=info.rank, world_size=info.world_size)


MIN_SAMPLES_FOR_SKIP_CHECK = 256  # judge the unreadable fraction only once it means something


def check_skip_fraction(skipped: int, attempted: int, limit: float) -> None:
    """Stop a run whose data is mostly unreadable (all ranks' counts): one line saying what to check."""
    if attempted >= MIN_SAMPLES_FOR_SKIP_CHECK and skipped / attempted > limit:
        raise ValueError(f"{skipped} of {attempted} samples ({skipped / attempted:.1%}) were unreadable, above "
                         f"data.max_skip_fraction={limit}: check the dataset (paths, corrupt files, empty captions) "
                         "or raise the limit")


def is_map_style(dataset: Dataset) -> bool:
    return not isinstance(dataset, IterableDataset)


def batches_per_epoch(dataset: Dataset, config: TrainConfig) -> int | None:
    """Optimizer steps per epoch; None for an iterable dataset of unknown size (then optim.steps is required)."""
    global_batch = config.optim.batch_size
    if is_map_style(dataset):
        size = len(dataset)  # type: ignore[arg-type]
    else:
        size = getattr(dataset, "num_samples", None) or config.data.num_samples
        if size is None:
            return None
    if size < global_batch:
        raise ValueError(f"the dataset has {size} samples, fewer than one batch (optim.batch_size={global_batch})")
    return size // global_batch


def epoch_loader(dataset: Dataset, config: TrainConfig, info: DistInfo, collate: Any, epoch: int,
                 start_batch: int, pin_memory: bool) -> Iterable[dict]:
    """This rank's batches of `epoch`, beginning at optimizer step `start_batch` of that epoch."""
    workers = config.data.workers
    local_batch = config.optim.batch_size // info.world_size
    # Own generator: building an iterator must not draw from the global torch RNG (resume exactness).
    generator = torch.Generator().manual_seed(config.runtime.seed * 100_003 + epoch)
    common = dict(collate_fn=collate, num_workers=workers, pin_memory=pin_memory, generator=generator,
                  persistent_workers=False, prefetch_factor=4 if workers else None,
                  worker_init_fn=_worker_init if workers else None)
    if hasattr(dataset, "set_epoch"):  # before the workers start: each holds a copy made now
        dataset.set_epoch(epoch)  # type: ignore[attr-defined]
    if is_map_style(dataset):
        sampler = EpochBatchSampler(len(dataset), config.optim.batch_size, info.rank,  # type: ignore[arg-type]
                                    info.world_size, config.runtime.seed, epoch, start_batch)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    loader = DataLoader(dataset, batch_size=local_batch, drop_last=True, **common)
    limit = batches_per_epoch(dataset, config)
    return itertools.islice(loader, start_batch, limit)


def caption_of(dataset: Dataset, index: int) -> str | None:
    """A map-style dataset's caption for `index` without decoding the image, if the dataset can say."""
    if hasattr(dataset, "captions_for"):  # SyntheticShapes: the first paraphrase is the training caption
        return dataset.captions_for(index, 1)[0]  # type: ignore[attr-defined]
    if hasattr(dataset, "caption"):
        return dataset.caption(index)  # type: ignore[attr-defined]
    return None


def can_list_captions(dataset: Dataset) -> bool:
    return is_map_style(dataset) and (hasattr(dataset, "captions_for") or hasattr(dataset, "caption"))


def planned_indices(dataset: Dataset, config: TrainConfig, start_epoch: int, start_batch: int,
                    remaining_steps: int) -> list[int]:
    """Every dataset index the remaining steps will read (all ranks), in order of first use."""
    num = len(dataset)  # type: ignore[arg-type]
    seen: dict[int, None] = {}
    epoch, batch, left = start_epoch, start_batch, remaining_steps
    while left > 0 and len(seen) < num:
        sampler = EpochBatchSampler(num, config.optim.batch_size, 0, 1, config.runtime.seed, epoch, batch)
        order = sampler.global_order()
        take = min(left, len(sampler))
        rows = order[batch * config.optim.batch_size:(batch + take) * config.optim.batch_size]
        seen.update(dict.fromkeys(rows.tolist()))
        left -= take
        epoch, batch = epoch + 1, 0
    return list(seen)
