"""Losses are nn.Modules returning a dict of named scalar terms, the total under "loss" (open_clip's convention)."""
from .accumulation import MicroBatch, accumulated_backward
from .alignclip_loss import AlignCLIPLoss
from .clip_loss import ClipLoss

__all__ = ["AlignCLIPLoss", "ClipLoss", "MicroBatch", "accumulated_backward"]
