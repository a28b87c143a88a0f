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
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn
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


def create_train_dataset(config: TrainConfig, image_size: int, info: DistInfo) -> Dataset:
    from alignclip.data.sources import create_dataset
    from alignclip.data.spec import with_csv_settings

    d = config.data  # csv_separator null/"auto": tsv reads tabs, csv detects (the one rule: data.spec.csv_separator)
    spec = with_csv_settings(d.train, d.csv_image_key, d.csv_caption_key, d.csv_separator)
    kind = spec.kind
    seed = d.synthetic_seed if kind == "synthetic" else config.runtime.seed
    return create_dataset(spec, image_size=image_size, train=True,
                         num_samples=SYNTHETIC_SIZE if kind == "synthetic" and d.num_samples is None else d.num_samples,
                         seed=seed, rank=info.rank, world_size=info.world_size)


MIN_SAMPLES_FOR_SKIP_CHECK = 256  # judge the unreadable fraction only once it means something


def check_skip_fraction(skipped: int, attempted: int, limit: float, listed: Path | None = None) -> None:
    """Stop a run whose data is mostly unreadable (all ranks' counts): one line saying what to check, and where
    the skipped samples are named (`listed`, the run's bad_samples.tsv)."""
    if attempted >= MIN_SAMPLES_FOR_SKIP_CHECK and skipped / attempted > limit:
        where = f"; each one is named in {listed}" if listed is not None else ""
        raise ValueError(f"{skipped} of {attempted} samples ({skipped / attempted:.1%}) were unreadable, above "
                         f"data.max_skip_fraction={limit}{where}: check the dataset (paths, corrupt files, empty "
                         "captions) or raise the limit")


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
        bad = _bad_samples(dataset, size) if is_map_style(dataset) else []
        named = (f" ({len(bad)} of them unreadable, e.g. {bad[0].source}: {bad[0].reason})" if bad else "")
        raise ValueError(f"the dataset has {size} samples{named}, fewer than one batch "
                         f"(optim.batch_size={global_batch})")
    return size // global_batch


def _bad_samples(dataset: Dataset, size: int) -> list:
    """The unreadable samples of a dataset smaller than one batch (cheap: fewer than a batch are read)."""
    from alignclip.data.shards import BadSample

    return [s for i in range(size) if isinstance(s := dataset[i], BadSample)]


class _EpochIndexed(Dataset):
    """A map-style dataset read at (epoch, index) keys: each worker's copy learns the epoch from the key, so one set
    of persistent workers serves every epoch and augmentation stays a function of (seed, epoch, index)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        return self.dataset[index]


class _KeyedBatches(Sampler[list[tuple[int, int]]]):
    """EpochBatchSampler's batches as (epoch, index) keys; epoch and start_batch are set before each epoch."""

    def __init__(self, sampler: EpochBatchSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        for rows in self.sampler:
            yield [(epoch, i) for i in rows]


class TrainLoader:
    """This rank's batches, one epoch at a time (`epoch(e, start_batch)`, from optimizer step start_batch on).

    Map-style data: one DataLoader for the whole run, with persistent workers (restarting them every epoch costs
    more than a short epoch takes). Iterable data (shards): a loader per epoch, since each worker's shard order
    is fixed when its iterator starts."""

    def __init__(self, dataset: Dataset, config: TrainConfig, info: DistInfo, collate: Any, pin_memory: bool) -> None:
        self.dataset, self.config, self.info = dataset, config, info
        workers = config.data.workers
        self.common = dict(collate_fn=collate, num_workers=workers, pin_memory=pin_memory,
                           prefetch_factor=4 if workers else None, worker_init_fn=_worker_init if workers else None)
        self.sampler: EpochBatchSampler | None = None
        self.loader: DataLoader | None = None
        if is_map_style(dataset):
            self.sampler = EpochBatchSampler(len(dataset), config.optim.batch_size, info.rank,  # type: ignore
                                             info.world_size, config.runtime.seed, 0, 0)
            # Own generator: building an iterator must not draw from the global torch RNG (resume exactness).
            self.loader = DataLoader(_EpochIndexed(dataset), batch_sampler=_KeyedBatches(self.sampler),
                                     persistent_workers=workers > 0, generator=self._generator(0), **self.common)

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.runtime.seed * 100_003 + epoch)

    def epoch(self, epoch: int, start_batch: int) -> Iterable[Any]:
        if self.loader is not None and self.sampler is not None:
            self.sampler.epoch, self.sampler.start_batch = epoch, start_batch
            return self.loader
        if hasattr(self.dataset, "set_epoch"):  # before the workers start: each holds a copy made now
            self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        loader = DataLoader(self.dataset, batch_size=self.config.optim.batch_size // self.info.world_size,
                            drop_last=True, generator=self._generator(epoch), **self.common)
        return itertools.islice(loader, start_batch, batches_per_epoch(self.dataset, self.config))

    def close(self) -> None:
        """Stop the persistent workers now, not when the loader is garbage-collected."""
        self.loader = None


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


def create_collate(model: nn.Module) -> Any:
    """Batches tokenized with the model's own vocabulary (a SigLIP folder's files), else alignclip's CLIP BPE."""
    from alignclip.data.collate import Collate
    from alignclip.evaluation.features import default_tokenizer

    return Collate(default_tokenizer(model), image_size=model.image_size)
