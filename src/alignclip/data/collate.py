"""Batch assembly in the DataLoader worker: drop bad (None) samples, count them, tokenize captions."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

from .shards import BadSample, is_bad

if TYPE_CHECKING:  # a type only: importing the tokenizer module loads ftfy and the BPE regex
    from alignclip.tokenizer import TokenizeFn


@dataclass
class Batch:
    """What one DataLoader step hands the trainer: typed, so the step reads `batch.images`, not a guessed key.

    `num_skipped` counts the bad samples the collate dropped, `bad_samples` names them (source, reason) so the main
    process can record them even when a worker loaded them, and `trimmed` counts rows cut by the distributed sync
    (see `trim`).
    """

    images: torch.Tensor  # [n, 3, H, W]
    tokens: torch.Tensor  # [n, context_length] token ids
    captions: list[str]
    num_skipped: int = 0
    bad_samples: list[tuple[str, str]] = field(default_factory=list)
    labels: dict[str, torch.Tensor] | None = None  # synthetic / packed-with-labels data only
    trimmed: int = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def trim(self, n: int) -> "Batch":
        """The first n rows, counting the rest as trimmed (every rank must see the same shapes in the all-gathers)."""
        if n >= len(self):
            return self
        labels = {k: v[:n] for k, v in self.labels.items()} if self.labels is not None else None
        return dataclasses.replace(self, images=self.images[:n], tokens=self.tokens[:n], captions=self.captions[:n],
                                   labels=labels, trimmed=self.trimmed + len(self) - n)

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True), which only knows how to pin tensors inside built-in containers."""
        labels = {k: v.pin_memory() for k, v in self.labels.items()} if self.labels is not None else None
        return dataclasses.replace(self, images=self.images.pin_memory(), tokens=self.tokens.pin_memory(),
                                   labels=labels)


class Collate:
    """samples (some bad) -> a `Batch` of the kept samples.

    Tokenizing here keeps the main process free for the model step. A batch whose samples were all bad comes back
    with zero rows (and the right trailing shapes when known) so the trainer can skip it and still count the loss.
    Picklable as long as the tokenizer is, so it works with multi-process DataLoaders.
    """

    def __init__(self, tokenizer: TokenizeFn, image_size: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.image_size = image_size

    def __call__(self, samples: Sequence[dict | BadSample | None]) -> Batch:
        kept = [s for s in samples if not is_bad(s)]
        num_skipped = len(samples) - len(kept)
        bad = [tuple(s) for s in samples if isinstance(s, BadSample)]
        if not kept:
            size = self.image_size or 0
            return Batch(images=torch.zeros(0, 3, size, size), tokens=self.tokenizer([""])[:0], captions=[],
                         num_skipped=num_skipped, bad_samples=bad)
        captions = [s["caption"] for s in kept]
        labels = None
        if all("labels" in s for s in kept):
            names = kept[0]["labels"].keys()
            labels = {n: torch.tensor([s["labels"][n] for s in kept], dtype=torch.long) for n in names}
        return Batch(images=torch.stack([s["image"] for s in kept]), tokens=self.tokenizer(captions),
                     captions=captions, num_skipped=num_skipped, bad_samples=bad, labels=labels)
