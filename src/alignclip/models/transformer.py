"""The pre-LN transformer shared by every tower, with open_clip's parameter names so weights load one-to-one."""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter layout, computed by SDPA."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class QuickGELU(nn.Module):
    """OpenAI CLIP's sigmoid approximation of GELU; its released weights were trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATION_LAYERS = {"gelu": nn.GELU, "quick_gelu": QuickGELU, "gelu_tanh": partial(nn.GELU, approximate="tanh")}


def mlp(width: int, hidden: int, activation: str = "gelu") -> nn.Sequential:
    return nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)),
                                      ("gelu", ACTIVATION_LAYERS[activation]()),  # open_clip's name
                                      ("c_proj", nn.Linear(hidden, width))]))


class LayerScale(nn.Module):
    """open_clip's per-channel gain on each residual branch (`ls_init_value`, e.g. ViT-M-16-alt)."""

    def __init__(self, width: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, activation: str = "gelu",
                 eps: float = 1e-5, ls_init_value: float | None = None) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)  # open_clip's rounding (bigG's 4.9231 -> 1664 * 4.9231 -> 8192)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = mlp(width, hidden, activation)
        # nn.Identity holds no parameters, so models without layer scale keep open_clip's exact key set
        self.ls_1 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ls_2 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), causal=causal))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    """A stack of residual blocks; `causal` masks future tokens (the text path) or not (the image path)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, activation: str = "gelu",
                 eps: float = 1e-5, ls_init_value: float | None = None) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio, activation, eps, ls_init_value)
                                       for _ in range(layers))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, causal, use_reentrant=False)
            else:
                x = block(x, causal=causal)
        return x

    def init_openai(self) -> None:
        """OpenAI CLIP's initialisation: std shrinks with width and depth so the residual stream stays O(1)."""
        proj_std = (self.width ** -0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class AttentionPool(nn.Module):
    """SigLIP's multihead attention pooling (MAP): a learned probe attends over every token, then a residual MLP on
    its LayerNorm; the image features are the probe's output (nn.MultiheadAttention's layout, as HF's SigLIP)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, activation: str = "gelu",
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln = nn.LayerNorm(width, eps=eps)
        self.mlp = mlp(width, int(width * mlp_ratio), activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.to(x.dtype).expand(x.shape[0], -1, -1)
        x = self.attn(probe, x, x, need_weights=False)[0]
        return (x + self.mlp(self.ln(x)))[:, 0]


class ImageEmbedding(nn.Module):
    """Patches (+ class token) + learned positions (+ ln_pre): the per-modality input side of a ViT. SigLIP's towers
    have no class token and no ln_pre, and a bias on the patch convolution."""

    def __init__(self, image_size: int, patch_size: int, width: int, eps: float = 1e-5, class_token: bool = True,
                 pre_norm: bool = True, patch_bias: bool = False) -> None:
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        grid = image_size // patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=patch_bias)
        self.class_embedding = nn.Parameter(scale * torch.randn(width)) if class_token else None
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + class_token, width))
        self.ln_pre = nn.LayerNorm(width, eps=eps) if pre_norm else nn.Identity()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != self.image_size \
                or images.shape[-2] != self.image_size:
            raise ValueError(f"expected images of shape [N, 3, {self.image_size}, {self.image_size}], "
                             f"got {list(images.shape)}")
        x = self.conv1(images).flatten(2).transpose(1, 2)  # [N, grid*grid, width]
        if self.class_embedding is not None:
            x = torch.cat([self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        return self.ln_pre(x + self.positional_embedding.to(x.dtype))


class TextEmbedding(nn.Module):
    """Token + learned positional embedding: the per-modality input side of the text path."""

    def __init__(self, vocab_size: int, context_length: int, width: int) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.context_length)
        return self.token_embedding(tokens) + self.positional_embedding


def check_tokens(tokens: torch.Tensor, context_length: int) -> None:
    if tokens.ndim != 2 or tokens.shape[1] != context_length or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"expected integer tokens of shape [N, {context_length}], got "
                         f"{tokens.dtype} {list(tokens.shape)} (use alignclip.get_tokenizer({context_length}))")


def text_pool(x: torch.Tensor, tokens: torch.Tensor, pool_type: str = "argmax", eos_id: int | None = None,
              ) -> torch.Tensor:
    """The caption's features: at its end-of-text token, the largest id in CLIP's vocabulary (argmax); at the
    first `eos_id` (tokenizers whose eos is not the largest id, e.g. open_clip's -worldwide models); or last."""
    if pool_type == "last":
        return x[:, -1]
    index = tokens.argmax(dim=-1) if pool_type == "argmax" else (tokens == eos_id).int().argmax(dim=-1)
    return x[torch.arange(x.shape[0], device=x.device), index]
