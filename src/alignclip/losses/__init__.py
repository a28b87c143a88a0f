"""Losses are nn.Modules returning a dict of named scalar terms, the total under "loss" (open_clip's convention)."""
from .accumulation import MicroBatch, accumulated_backward
from .alignclip_loss import AlignCLIPLoss
from .clip_loss import ClipLoss
from .composite import CompositeLoss
from .distill import HyCDLoss
from .rafa import RaFALoss
from .sigmoid_loss import SigLipIMSepLoss, SigLipLoss

__all__ = ["AlignCLIPLoss", "ClipLoss", "CompositeLoss", "HyCDLoss", "MicroBatch", "RaFALoss", "SigLipIMSepLoss",
           "SigLipLoss", "accumulated_backward"]
