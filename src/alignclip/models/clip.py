"""The standard two-tower CLIP (OpenAI / open_clip ViT), with open_clip's parameter names."""
from __future__ import annotations

import torch
from torch import nn

from .base import ContrastiveModel
from .config import ModelConfig, VisionConfig
from .transformer import ImageEmbedding, TextEmbedding, Transformer, check_tokens, text_pool


class VisionTransformer(ImageEmbedding):
    """ViT image tower: the input embedding plus its own transformer, ln_post, CLS pooling and projection."""

    def __init__(self, v: VisionConfig, output_dim: int, activation: str = "gelu") -> None:
        super().__init__(v.image_size, v.patch_size, v.width, v.layer_norm_eps)
        self.transformer = Transformer(v.width, v.layers, v.heads, v.mlp_ratio, activation, v.layer_norm_eps,
                                       v.ls_init_value)
        self.ln_post = nn.LayerNorm(v.width, eps=v.layer_norm_eps)
        self.proj = nn.Parameter((v.width ** -0.5) * torch.randn(v.width, output_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.embed(images), causal=False)
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(ContrastiveModel):
    architecture = "clip"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        t = config.text_cfg
        self.visual = VisionTransformer(config.vision_cfg, config.embed_dim, config.activation)
        # Text parameters sit at the top level, as in OpenAI's and open_clip's CLIP.
        text_embedding = TextEmbedding(t.vocab_size, t.context_length, t.width)
        self.token_embedding = text_embedding.token_embedding
        self.positional_embedding = text_embedding.positional_embedding
        self.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio, config.activation, t.layer_norm_eps,
                                       t.ls_init_value)
        self.ln_final = nn.LayerNorm(t.width, eps=t.layer_norm_eps)
        self.text_projection = nn.Parameter(torch.empty(t.width, config.embed_dim))
        nn.init.normal_(self.text_projection, std=t.width ** -0.5)
        self.transformer.init_openai()

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.context_length)
        t = self.config.text_cfg
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, causal=True))
        return text_pool(x, tokens, t.pool_type, t.eos_id) @ self.text_projection
