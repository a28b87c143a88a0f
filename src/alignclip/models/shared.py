"""SharedCLIP (AlignCLIP's architecture): one transformer, one final LayerNorm and one projection serve both
modalities; only the input embeddings are per-modality. Parameter names follow the official AlignCLIP code."""
from __future__ import annotations

import torch
from torch import nn

from .base import ContrastiveModel
from .config import ModelConfig
from .transformer import ImageEmbedding, TextEmbedding, Transformer, text_pool


class SharedCLIP(ContrastiveModel):
    architecture = "shared"

    def __init__(self, config: ModelConfig) -> None:
        config.validate_shared()
        super().__init__(config)
        v, t = config.vision_cfg, config.text_cfg
        self.visual = ImageEmbedding(v.image_size, v.patch_size, v.width, v.layer_norm_eps)
        self.text = TextEmbedding(t.vocab_size, t.context_length, t.width)
        self.transformer = Transformer(v.width, v.layers, v.heads, v.mlp_ratio, config.activation, v.layer_norm_eps,
                                       v.ls_init_value)
        self.ln_post = nn.LayerNorm(v.width, eps=v.layer_norm_eps)
        self.projection = nn.Parameter(torch.empty(v.width, config.embed_dim))
        nn.init.normal_(self.projection, std=v.width ** -0.5)
        self.transformer.init_openai()

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        x = self.ln_post(self.transformer(self.visual.embed(images), causal=False))
        return x[:, 0] @ self.projection

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.config.text_cfg
        x = self.ln_post(self.transformer(self.text.embed(tokens), causal=True))
        return text_pool(x, tokens, t.pool_type, t.eos_id) @ self.projection
