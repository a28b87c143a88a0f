"""The standard two-tower CLIP (OpenAI / open_clip ViT), with open_clip's parameter names."""
from __future__ import annotations

import torch
from torch import nn

from .base import ContrastiveModel
from .config import ModelConfig
from .transformer import ImageEmbedding, TextEmbedding, Transformer, check_tokens, eot_pool


class VisionTransformer(ImageEmbedding):
    """ViT image tower: the input embedding plus its own transformer, ln_post, CLS pooling and projection."""

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int,
                 mlp_ratio: float, output_dim: int) -> None:
        super().__init__(image_size, patch_size, width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter((width ** -0.5) * torch.randn(width, output_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.embed(images), causal=False)
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(ContrastiveModel):
    architecture = "clip"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        v, t = config.vision_cfg, config.text_cfg
        self.visual = VisionTransformer(v.image_size, v.patch_size, v.width, v.layers, v.heads, v.mlp_ratio,
                                        config.embed_dim)
        # Text parameters sit at the top level, as in OpenAI's and open_clip's CLIP.
        text_embedding = TextEmbedding(t.vocab_size, t.context_length, t.width)
        self.token_embedding = text_embedding.token_embedding
        self.positional_embedding = text_embedding.positional_embedding
        self.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio)
        self.ln_final = nn.LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, config.embed_dim))
        nn.init.normal_(self.text_projection, std=t.width ** -0.5)
        self.transformer.init_openai()

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.context_length)
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, causal=True))
        return eot_pool(x, tokens) @ self.text_projection
