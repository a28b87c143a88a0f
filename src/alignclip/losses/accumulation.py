"""Gradient accumulation that equals one big batch, for any loss (open_clip's feature-caching approach).

Contrastive losses couple every row of a batch, so summing per-micro-batch losses is NOT the big-batch loss.
Instead: embed all k micro-batches without a graph, then for each micro-batch re-embed it with a graph, splice
its features into the cached full set, and backpropagate the full-batch loss; each pass carries the gradient of
exactly its own rows, so the k passes add up to the big-batch gradient.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch import nn

from .sigmoid_loss import logit_bias_of


@dataclass
class MicroBatch:
    images: torch.Tensor
    tokens: torch.Tensor
    semantic_features: torch.Tensor | None = None  # AlignCLIPLoss's caption embeddings, row for row


def _forward(model: nn.Module, batch: MicroBatch) -> dict[str, Any]:
    return model(batch.images, batch.tokens)


def accumulated_backward(model: nn.Module, loss_fn: nn.Module, micro_batches: Sequence[MicroBatch],
                         backward: Callable[[torch.Tensor], None] | None = None,
                         autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                         outputs: Sequence[str] = (),
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Backpropagate the loss of the concatenated micro-batches; returns (detached loss terms, the whole batch's
    detached output: image_features and text_features of every micro-batch, logit_scale and a logit_bias).

    `model` may be DDP-wrapped: gradient sync is skipped on all but the last pass. `backward` replaces
    `loss.backward()` (e.g. a GradScaler's scale), `autocast` wraps the forward passes. `outputs`: further
    per-row model outputs the loss takes by name (spliced like the features, e.g. unnormalised projections).
    """
    if not micro_batches:
        raise ValueError("accumulated_backward needs at least one micro-batch")
    backward = backward or (lambda loss: loss.backward())
    with torch.no_grad(), autocast():
        cached = [_forward(model, mb) for mb in micro_batches]
    images = [out["image_features"] for out in cached]
    texts = [out["text_features"] for out in cached]
    extras = {key: [out[key] for out in cached] for key in outputs}
    semantic = None
    if micro_batches[0].semantic_features is not None:
        semantic = torch.cat([mb.semantic_features for mb in micro_batches])  # type: ignore[misc]

    last = len(micro_batches) - 1
    for j, mb in enumerate(micro_batches):
        sync = contextlib.nullcontext() if j == last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast():
                out = _forward(model, mb)
                all_images = torch.cat(images[:j] + [out["image_features"]] + images[j + 1:])
                all_texts = torch.cat(texts[:j] + [out["text_features"]] + texts[j + 1:])
                # The temperature is shared by all passes: let only the last carry its gradient, so it counts once.
                logit_scale = out["logit_scale"] if j == last else out["logit_scale"].detach()
                spliced = {key: torch.cat(rows[:j] + [out[key]] + rows[j + 1:]) for key, rows in extras.items()}
                terms = loss_fn(all_images, all_texts, logit_scale, semantic_features=semantic, **spliced,
                                **logit_bias_of(out, detach=j != last))
            backward(terms["loss"])
    whole = {"image_features": all_images.detach(), "text_features": all_texts.detach(),
             "logit_scale": out["logit_scale"].detach(), **logit_bias_of(out, detach=True)}
    return {name: value.detach() for name, value in terms.items()}, whole
