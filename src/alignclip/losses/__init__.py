"""Losses are nn.Modules returning a dict of named scalar terms, the total under "loss" (open_clip's convention)."""
from .accumulation import accumulated_backward
from .alignclip_loss import AlignCLIPLoss
from .clip_loss import ClipLoss
from .sigmoid_loss import SigLipIMSepLoss, SigLipLoss

__all__ = ["AlignCLIPLoss", "ClipLoss", "SigLipIMSepLoss", "SigLipLoss", "accumulated_backward"]
