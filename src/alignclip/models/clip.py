"""The standard two-tower CLIP (OpenAI / open_clip ViT), with open_clip's parameter names.

The same class is SigLIP when its config says so: no class token and no ln_pre, a patch-convolution bias, MAP pooling
and no image projection; a bidirectional text tower pooled at the last token with a biased Linear head; a logit bias
(models/config.py's options)."""
from __future__ import annotations

import torch
from torch import nn

from .base import ContrastiveModel
from .config import ModelConfig, TextConfig, VisionConfig
from .transformer import AttentionPool, ImageEmbedding, TextEmbedding, Transformer, check_tokens, text_pool


class VisionTransformer(ImageEmbedding):
    """ViT image tower: the input embedding plus its own transformer, ln_post, pooling (class token or MAP) and
    projection (or none)."""

    def __init__(self, v: VisionConfig, output_dim: int, activation: str = "gelu") -> None:
        super().__init__(v.image_size, v.patch_size, v.width, v.layer_norm_eps, v.class_token, v.pre_norm,
                         v.patch_bias)
        activation = v.activation or activation
        self.transformer = Transformer(v.width, v.layers, v.heads, v.mlp_ratio, activation, v.layer_norm_eps,
                                       v.ls_init_value)
        self.ln_post = nn.LayerNorm(v.width, eps=v.layer_norm_eps)
        self.attn_pool = AttentionPool(v.width, v.heads, v.mlp_ratio, activation, v.layer_norm_eps) \
            if v.pool_type == "map" else None
        self.proj = nn.Parameter((v.width ** -0.5) * torch.randn(v.width, output_dim)) \
            if v.proj_type == "linear" else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.embed(images), causal=False)
        x = self.attn_pool(self.ln_post(x)) if self.attn_pool is not None else self.ln_post(x[:, 0])
        return x @ self.proj if self.proj is not None else x


def text_head(t: TextConfig, output_dim: int) -> nn.Module | nn.Parameter | None:
    """open_clip's text projection: a [width, D] matrix, a Linear with a bias (SigLIP), or none."""
    if t.proj_type == "none":
        return None
    if t.proj_bias:
        return nn.Linear(t.width, output_dim)
    projection = nn.Parameter(torch.empty(t.width, output_dim))
    nn.init.normal_(projection, std=t.width ** -0.5)
    return projection


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
        self.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio, t.activation or config.activation,
                                       t.layer_norm_eps, t.ls_init_value)
        self.ln_final = nn.LayerNorm(t.width, eps=t.layer_norm_eps)
        self.text_projection = text_head(t, config.embed_dim)
        self.transformer.init_openai()

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.context_length)
        t = self.config.text_cfg
        x = self.token_embedding(tokens) + self.positional_embedding
        x = text_pool(self.ln_final(self.transformer(x, causal=t.causal)), tokens, t.pool_type, t.eos_id)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection if self.text_projection is not None else x
