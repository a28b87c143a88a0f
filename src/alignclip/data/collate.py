"""Batch assembly in the DataLoader worker: drop bad (None) samples, count them, tokenize captions."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .shards import BadSample, is_bad

Tokenizer = Callable[[list[str]], torch.Tensor]


class Collate:
    """samples (some bad) -> {"images", "tokens", "captions", "num_skipped", "bad_samples"[, "labels"]}.

    "bad_samples" lists (source, reason) of each BadSample in the batch, so the main process can name them (e.g. in
    the run folder) even when a DataLoader worker loaded them.

    Tokenizing here keeps the main process free for the model step. A batch whose samples were all bad comes back
    with zero rows (and the right trailing shapes when known) so the trainer can skip it and still count the loss.
    Picklable as long as the tokenizer is, so it works with multi-process DataLoaders.
    """

    def __init__(self, tokenizer: Tokenizer, image_size: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.image_size = image_size

    def __call__(self, samples: Sequence[dict | BadSample | None]) -> dict:
        kept = [s for s in samples if not is_bad(s)]
        num_skipped = len(samples) - len(kept)
        bad = [tuple(s) for s in samples if isinstance(s, BadSample)]
        if not kept:
            size = self.image_size or 0
            return {"images": torch.zeros(0, 3, size, size), "tokens": self.tokenizer([""])[:0],
                    "captions": [], "num_skipped": num_skipped, "bad_samples": bad}
        captions = [s["caption"] for s in kept]
        batch = {"images": torch.stack([s["image"] for s in kept]), "tokens": self.tokenizer(captions),
                 "captions": captions, "num_skipped": num_skipped, "bad_samples": bad}
        if all("labels" in s for s in kept):
            names = kept[0]["labels"].keys()
            batch["labels"] = {n: torch.tensor([s["labels"][n] for s in kept], dtype=torch.long) for n in names}
        return batch
