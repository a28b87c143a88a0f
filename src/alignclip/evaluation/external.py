"""Evaluate models we did not train: an open_clip model behind the encode_image/encode_text interface we use."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from alignclip.evaluation.features import TokenizeFn


class OpenClipAdapter(nn.Module):
    """Expose image_size / context_length / encode_*(normalize=True) like alignclip models do."""

    def __init__(self, model: nn.Module, image_size: int, context_length: int) -> None:
        super().__init__()
        self.model, self.image_size, self.context_length = model, image_size, context_length
        self.embed_dim = getattr(model, "embed_dim", None)
        self.architecture = "open_clip"

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.model.encode_image(images, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=normalize)


def load_open_clip(model_name: str, weights: str | Path | None,
                   device: str | torch.device = "cpu") -> tuple[OpenClipAdapter, TokenizeFn]:
    """open_clip.create_model(model_name, pretrained=weights) + its tokenizer; open_clip is an optional dependency.

    Images are preprocessed with alignclip's EvalTransform (OpenAI CLIP mean/std) at the model's image size.
    """
    try:
        import open_clip
    except ImportError:
        raise ValueError("--open-clip needs the optional open_clip package (pip install open_clip_torch); "
                         "alternatively import the .pt with alignclip.load_checkpoint") from None
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"open_clip weights not found: {weights}")
    model = open_clip.create_model(model_name, pretrained=str(weights) if weights else None, device=device)
    size = getattr(model.visual, "image_size", 224)
    image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
    context_length = int(getattr(model, "context_length", 77))
    return OpenClipAdapter(model, image_size, context_length).eval(), open_clip.get_tokenizer(model_name)
