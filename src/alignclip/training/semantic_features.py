"""Caption sentence embeddings for AlignCLIP's separation weights, computed once per unique caption.

When the dataset can list its captions without decoding images (synthetic, CSV, folders), every rank encodes its
share of the captions the run will read and waits for the others' on a polled file barrier, never in a collective
(semantic/prefill.py says why); then all ranks map the one merged store. Otherwise (shards) captions are encoded the
first time they are seen, unless `alignclip data embed-captions` stored them beforehand. Either way a training step
costs one hash per caption and a memory-mapped lookup, never a sentence-model forward for a caption seen before.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import can_list_captions, caption_of, planned_indices
from .distributed import DistInfo

if TYPE_CHECKING:  # a type only: importing semantic.py at run time is deferred to for_config
    from alignclip.semantic import CaptionEncoder


class CaptionFeatures:
    def __init__(self, encoder: CaptionEncoder, device: torch.device) -> None:
        self.encoder, self.device = encoder, device

    @classmethod
    def for_config(cls, config: TrainConfig, dataset: Dataset, device: torch.device, info: DistInfo, epoch: int,
                   batch_in_epoch: int, remaining_steps: int) -> "CaptionFeatures":
        from alignclip.semantic import SemanticEncoder
        from alignclip.semantic.prefill import flush_interval, prefill_shared, stall_bound

        show = info.is_main and config.logging.progress
        stall_s = stall_bound(config.runtime.dist_timeout_s)
        encoder = SemanticEncoder(config.loss.semantic_model, config.loss.semantic_cache_dir, device=str(device),
                                  show_progress=show, flush_interval_s=flush_interval(stall_s))
        if can_list_captions(dataset):
            indices = planned_indices(dataset, config, epoch, batch_in_epoch, remaining_steps)
            captions = (caption_of(dataset, i) for i in tqdm(indices, desc="listing captions", unit="sample",
                                                             disable=not show, leave=False))
            prefill_shared(encoder, (c for c in captions if c), info.rank, info.world_size, stall_s, show)
        encoder.flush_interval_s = None  # during training: flush at checkpoints only
        return cls(encoder, device)

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(captions).to(self.device, non_blocking=True)

    @property
    def num_encoded(self) -> int:
        return int(self.encoder.num_encoded)

    def flush(self) -> None:
        self.encoder.flush()
