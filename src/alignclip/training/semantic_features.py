"""Caption sentence embeddings for AlignCLIP's separation weights, computed once per unique caption.

When the dataset can list its captions without decoding images (synthetic, CSV, folders), rank 0 prefills the
disk cache with every caption the run will read, in large batches, before step 1; the other ranks then load the
cache. Otherwise (shards) captions are encoded the first time they are seen. Either way a training step costs
dictionary lookups and one gather, never a sentence-model forward for a caption seen before.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import can_list_captions, caption_of, planned_indices
from .distributed import DistInfo, broadcast_object

if TYPE_CHECKING:  # a type only: importing semantic.py at run time is deferred to for_config
    from alignclip.semantic import CaptionEncoder


class CaptionFeatures:
    def __init__(self, encoder: CaptionEncoder, device: torch.device) -> None:
        self.encoder, self.device = encoder, device

    @classmethod
    def for_config(cls, config: TrainConfig, dataset: Dataset, device: torch.device, info: DistInfo, epoch: int,
                   batch_in_epoch: int, remaining_steps: int) -> "CaptionFeatures":
        from alignclip.semantic import SemanticEncoder

        show = info.is_main and config.logging.progress
        kwargs = dict(model_name_or_path=config.loss.semantic_model, cache_dir=config.loss.semantic_cache_dir,
                      device=str(device), show_progress=show)
        if not can_list_captions(dataset):
            return cls(SemanticEncoder(**kwargs), device)
        encoder, error = None, None
        if info.is_main:
            try:
                encoder = SemanticEncoder(**kwargs)
                indices = planned_indices(dataset, config, epoch, batch_in_epoch, remaining_steps)
                captions = (caption_of(dataset, i) for i in tqdm(indices, desc="listing captions", unit="sample",
                                                                 disable=not show, leave=False))
                encoder.prefill(c for c in captions if c)
            except (ValueError, FileNotFoundError) as e:
                error = e
        # Doubles as the barrier; a failure on rank 0 fails every rank instead of leaving them waiting.
        message = broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if message is not None:
            raise ValueError(f"rank 0 failed to prepare caption embeddings ({message})")
        if encoder is None:
            encoder = SemanticEncoder(**kwargs)  # reads the shards rank 0 just flushed
        return cls(encoder, device)

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(captions).to(self.device, non_blocking=True)

    @property
    def num_encoded(self) -> int:
        return int(self.encoder.num_encoded)

    def flush(self) -> None:
        self.encoder.flush()
