"""open_clip's timm image towers (SigLIP's `vit_*_siglip_*`) <-> our image tower, without timm at run time.

open_clip wraps a timm VisionTransformer as `visual.trunk`. timm's SigLIP ViTs are our image tower with SigLIP's
options: `pos_embed` [1, patches, D], a biased `patch_embed.proj`, blocks of norm1 / attn.qkv / attn.proj / norm2 /
mlp.fc1 / mlp.fc2 (open_clip's in_proj layout already), the final `norm` (our ln_post) and `attn_pool`, whose
latent query is our probe and whose q + kv Linear layers are nn.MultiheadAttention's in_proj split in two. The
shapes timm builds for each named tower are in `zoo/open_clip.json` ("timm_towers", written by
scripts/make_openclip_goldens.py from timm itself)."""
from __future__ import annotations

from typing import Any

import torch

from .config import ModelConfig, mlp_ratio_of

TRUNK = "visual.trunk."
_RENAMES = {  # timm (under visual.trunk.) -> ours (under visual.), whole keys or key prefixes
    "patch_embed.proj.": "conv1.", "norm.": "ln_post.", "attn_pool.latent": "attn_pool.probe",
    "attn_pool.proj.": "attn_pool.attn.out_proj.", "attn_pool.norm.": "attn_pool.ln.",
    "attn_pool.mlp.fc1.": "attn_pool.mlp.c_fc.", "attn_pool.mlp.fc2.": "attn_pool.mlp.c_proj."}
_BLOCK = {"norm1.": "ln_1.", "norm2.": "ln_2.", "attn.qkv.": "attn.in_proj_", "attn.proj.": "attn.out_proj.",
          "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj."}


def _rename(key: str, table: dict[str, str]) -> str | None:
    for old, new in sorted(table.items(), key=lambda item: -len(item[0])):
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):]  # attn.qkv.weight -> attn.in_proj_ + weight
    return None


def is_timm_state(state: dict[str, Any]) -> bool:
    return any(k.startswith(TRUNK) for k in state)


def from_timm_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's CustomTextCLIP keys with a timm image tower -> ours (the text side is left as it is)."""
    out, pool = {}, {}
    for key, value in state.items():
        if not key.startswith(TRUNK):
            out[key] = value
            continue
        key = key[len(TRUNK):]
        if key == "pos_embed":
            out["visual.positional_embedding"] = value[0] if value.ndim == 3 and len(value) == 1 else value
        elif key.startswith("attn_pool.") and key.split(".")[1] in ("q", "kv"):
            pool[key] = value
        elif key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            out[f"visual.transformer.resblocks.{index}.{_rename(rest, _BLOCK) or rest}"] = value
        else:
            out[f"visual.{_rename(key, _RENAMES) or key}"] = value
    for kind in ("weight", "bias"):
        q, kv = pool.pop(f"attn_pool.q.{kind}", None), pool.pop(f"attn_pool.kv.{kind}", None)
        if q is not None and kv is not None:
            out[f"visual.attn_pool.attn.in_proj_{kind}"] = torch.cat([q, kv])
        else:  # leave what is there for the shape check to name
            out.update({f"{TRUNK}attn_pool.{n}.{kind}": v for n, v in (("q", q), ("kv", kv)) if v is not None})
    out.update({TRUNK + k: v for k, v in pool.items()})
    return out


def to_timm_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ours -> open_clip's keys for a timm image tower (the inverse of from_timm_state)."""
    renames, block = {v: k for k, v in _RENAMES.items()}, {v: k for k, v in _BLOCK.items()}
    out = {}
    for key, value in state.items():
        if not key.startswith("visual."):
            out[key] = value
            continue
        key = key[len("visual."):]
        if key == "positional_embedding":
            out[TRUNK + "pos_embed"] = value[None]
        elif key.startswith("attn_pool.attn.in_proj_"):
            kind = key.rsplit("_", 1)[1]
            width = value.shape[0] // 3
            out[f"{TRUNK}attn_pool.q.{kind}"], out[f"{TRUNK}attn_pool.kv.{kind}"] = value[:width], value[width:]
        elif key.startswith("transformer.resblocks."):
            index, rest = key[len("transformer.resblocks."):].split(".", 1)
            rest = (f"attn.qkv.{rest[len('attn.in_proj_'):]}" if rest.startswith("attn.in_proj_")
                    else _rename(rest, {k: v for k, v in block.items() if not k.endswith("_")}) or rest)
            out[f"{TRUNK}blocks.{index}.{rest}"] = value
        else:
            out[TRUNK + (_rename(key, renames) or key)] = value
    return {k: v.contiguous() for k, v in out.items()}


def vision_from_tower(tower: dict[str, Any]) -> dict[str, Any]:
    """A timm tower's recorded shapes -> our vision_cfg (SigLIP's options)."""
    return {"image_size": tower["image_size"], "patch_size": tower["patch_size"], "width": tower["width"],
            "layers": tower["layers"], "heads": tower["heads"],
            "mlp_ratio": mlp_ratio_of(tower["width"], tower["mlp_hidden"]),
            "layer_norm_eps": tower["layer_norm_eps"], "activation": tower["activation"], "class_token": False,
            "pre_norm": False, "patch_bias": True, "pool_type": "map", "proj_type": "none"}


def tower_name_for(config: ModelConfig, towers: dict[str, dict[str, Any]]) -> str | None:
    """The timm tower (of those recorded) that builds exactly this image tower, if one does."""
    v = config.vision_cfg
    for name, tower in sorted(towers.items()):
        want = vision_from_tower(tower)
        have = {key: getattr(v, key) for key in want}
        have["activation"] = v.activation or config.activation
        have["mlp_ratio"] = mlp_ratio_of(v.width, int(v.width * v.mlp_ratio))
        if have == want:
            return name
    return None
