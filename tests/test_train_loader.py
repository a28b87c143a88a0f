"""The training loader: map-style data keeps one set of worker processes for the whole run, and every sample is
still read knowing its epoch (augmentation is a function of (seed, epoch, index))."""
from __future__ import annotations

import os

from torch.utils.data import Dataset

from alignclip.training.config import TrainConfig
from alignclip.training.data import EpochBatchSampler, TrainLoader
from alignclip.training.distributed import DistInfo


class _Recorder(Dataset):
    """Returns (worker pid, the epoch its copy was told, index) for each read."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        return os.getpid(), self.epoch, index


def _config(workers: int) -> TrainConfig:
    config = TrainConfig()
    config.data.workers, config.optim.batch_size, config.runtime.seed = workers, 4, 3
    return config


def test_workers_persist_across_epochs_and_know_the_epoch() -> None:
    info = DistInfo(rank=0, world_size=1, local_rank=0)
    loader = TrainLoader(_Recorder(12), _config(2), info, lambda items: items, pin_memory=False)
    seen = {epoch: [item for batch in loader.epoch(epoch, start) for item in batch]
            for epoch, start in ((0, 0), (1, 1), (2, 0))}
    loader.close()
    pids = {epoch: {pid for pid, _, _ in items} for epoch, items in seen.items()}
    assert os.getpid() not in pids[0] and pids[1] <= pids[0] and pids[2] <= pids[0]  # the same workers throughout
    for epoch, items in seen.items():
        assert {told for _, told, _ in items} == {epoch}
    # the order is the sampler's own (seed + epoch), from start_batch on: the same as without workers
    for epoch, start in ((0, 0), (1, 1), (2, 0)):
        expected = [i for rows in EpochBatchSampler(12, 4, 0, 1, 3, epoch, start) for i in rows]
        assert [index for _, _, index in seen[epoch]] == expected


def test_without_workers_reads_in_process() -> None:
    info = DistInfo(rank=0, world_size=1, local_rank=0)
    loader = TrainLoader(_Recorder(8), _config(0), info, lambda items: items, pin_memory=False)
    items = [item for batch in loader.epoch(1, 0) for item in batch]
    assert {pid for pid, _, _ in items} == {os.getpid()} and {told for _, told, _ in items} == {1}
