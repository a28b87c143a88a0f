"""Global-batch plumbing for the losses under torch.distributed."""
from __future__ import annotations

import torch
import torch.distributed as dist


def dist_ready() -> bool:
    """Is a torch.distributed process group up? The one check every collective helper makes first."""
    return dist.is_available() and dist.is_initialized()


def world_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised."""
    if dist_ready():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(features: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """All-gather rows from every rank, in rank order.

    with_grad=True uses the autograd-aware all_gather: its backward sums each rank's gradient for every shard, so
    after DDP averages, the gradient equals that of one process holding the whole global batch.
    with_grad=False gathers without graph and puts the local shard back, so only local rows carry gradient
    (open_clip's cheaper default; the gradient is then the global one divided by world size).
    """
    rank, world = world_info()
    if world == 1:
        return features
    if with_grad:
        return _AllGather.apply(features)
    shards = [torch.empty_like(features) for _ in range(world)]
    dist.all_gather(shards, features.contiguous())
    shards[rank] = features
    return torch.cat(shards, dim=0)


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for each shard and hands a rank its own."""

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = world_info()
        ctx.rank, ctx.rows = rank, features.shape[0]
        shards = [torch.empty_like(features) for _ in range(world)]
        dist.all_gather(shards, features.contiguous())
        return torch.cat(shards, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_no_grad(features: torch.Tensor) -> torch.Tensor:
    """All-gather rows that need no gradient (semantic features)."""
    _, world = world_info()
    if world == 1:
        return features
    shards = [torch.empty_like(features) for _ in range(world)]
    dist.all_gather(shards, features.contiguous())
    return torch.cat(shards, dim=0)


class GlobalBatch:
    """The rows a rank scores (queries) against the rows it scores them against (keys), and the label offsets.

    Without local_loss every rank scores the whole global batch; with local_loss only its own rows, against all
    keys, so the positives sit at `offset + arange(n)` (open_clip's local_loss).
    """

    def __init__(self, image_features: torch.Tensor, text_features: torch.Tensor, local_loss: bool,
                 gather_with_grad: bool = True) -> None:
        rank, world = world_info()
        n = image_features.shape[0]
        self.all_image = gather_features(image_features, gather_with_grad)
        self.all_text = gather_features(text_features, gather_with_grad)
        if local_loss and world > 1:
            self.image, self.text, self.offset = image_features, text_features, rank * n
        else:
            self.image, self.text, self.offset = self.all_image, self.all_text, 0
        self.labels = torch.arange(self.image.shape[0], device=image_features.device) + self.offset

    def rows(self, features: torch.Tensor) -> torch.Tensor:
        """Slice a gathered [global, ...] tensor down to the query rows."""
        return features[self.offset:self.offset + self.image.shape[0]]
