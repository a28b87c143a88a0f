from __future__ import annotations

import json

import pytest
import torch

import alignclip
from alignclip.models.config import list_presets, load_model_config


def _tokens(n: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(2, length - 1, (1,), generator=g))
        tokens[i, 0] = 49406
        tokens[i, 1:k] = torch.randint(1, 49000, (k - 1,), generator=g)
        tokens[i, k] = 49407
    return tokens


@pytest.mark.parametrize("arch", ["clip", "shared"])
def test_shapes_and_normalisation(arch: str) -> None:
    model = alignclip.create_model("tiny", arch, seed=0)
    images = torch.randn(5, 3, model.image_size, model.image_size)
    tokens = _tokens(5, model.context_length)
    out = model(images, tokens)
    assert out["image_features"].shape == (5, model.embed_dim)
    assert out["text_features"].shape == (5, model.embed_dim)
    assert torch.allclose(out["image_features"].norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(out["text_features"].norm(dim=-1), torch.ones(5), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.encode_image(images, normalize=False).norm(dim=-1).std() > 0  # really unnormalised
    # pure: the gap diagnostics are the step's; the unnormalised projections feed RaFA, the bias a sigmoid loss
    assert set(out) == {"image_features", "text_features", "logit_scale", "logit_bias", "image_unnormalized",
                        "text_unnormalized"}
    assert out["logit_bias"] is None  # a CLIP has no logit bias
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(images, tokens)["logit_scale"].item() == pytest.approx(100.0)


def test_shared_really_shares() -> None:
    clip = alignclip.create_model("tiny", "clip")
    shared = alignclip.create_model("tiny", "shared")
    assert not hasattr(shared, "ln_final") and not hasattr(shared, "text_projection")
    transformers = [m for m in shared.modules() if isinstance(m, alignclip.models.transformer.Transformer)]
    assert len(transformers) == 1
    # Both encoders route through the same transformer object: a hook sees both modalities.
    calls: list[int] = []
    shared.transformer.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[1]))
    shared(torch.randn(2, 3, 32, 32), _tokens(2, shared.context_length))
    tokens = (shared.image_size // shared.config.vision_cfg.patch_size) ** 2 + 1  # patches + class token
    assert sorted(calls) == sorted([tokens, shared.context_length])
    count = lambda m: sum(p.numel() for p in m.parameters())
    transformer_params = count(clip.transformer)
    ln_and_proj = count(clip.ln_final) + clip.text_projection.numel()
    assert count(clip) - count(shared) == transformer_params + ln_and_proj


@pytest.mark.parametrize("arch", ["clip", "shared"])
def test_causal_mask_on_text_only(arch: str) -> None:
    model = alignclip.create_model("tiny", arch, seed=0).eval()
    tokens = _tokens(1, model.context_length)
    eot = int(tokens.argmax())
    changed = tokens.clone()
    changed[0, eot + 1:] = 123  # tokens after EOT must not influence the EOT feature (causal)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(tokens), model.encode_text(changed), atol=1e-6)
        # Images attend bidirectionally: changing the last patch changes the CLS output.
        images = torch.randn(1, 3, 32, 32)
        other = images.clone()
        other[..., -4:, -4:] += 1.0
        assert not torch.allclose(model.encode_image(images), model.encode_image(other), atol=1e-4)


def test_causal_attention_matches_explicit_mask() -> None:
    from alignclip.models.transformer import Attention
    attn = Attention(16, 2)
    x = torch.randn(2, 5, 16)
    q, k, v = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    split = lambda t: t.view(2, 5, 2, 8).transpose(1, 2)
    scores = split(q) @ split(k).transpose(-1, -2) / 8 ** 0.5
    scores = scores.masked_fill(torch.ones(5, 5).triu(1).bool(), float("-inf"))
    ref = attn.out_proj((scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(2, 5, 16))
    assert torch.allclose(attn(x, causal=True), ref, atol=1e-5)


def test_presets() -> None:
    assert {"tiny", "small", "ViT-B-16", "ViT-B-16-512", "ViT-L-16"} <= set(list_presets())
    b16 = load_model_config("ViT-B-16")
    assert (b16.vision_cfg.layers, b16.vision_cfg.width, b16.vision_cfg.heads, b16.embed_dim) == (12, 768, 12, 768)
    assert (b16.vision_cfg.patch_size, b16.vision_cfg.image_size) == (16, 224)
    assert (b16.text_cfg.context_length, b16.text_cfg.vocab_size) == (77, 49408)
    assert load_model_config("ViT-B-16-512").embed_dim == 512
    assert load_model_config("ViT-L-16").vision_cfg.layers == 16


def test_user_json_config(tmp_path) -> None:
    cfg = load_model_config("tiny").to_dict()
    cfg["embed_dim"] = 64
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(cfg))
    assert alignclip.create_model(str(path), "shared").embed_dim == 64


def test_bad_configs(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown model preset 'nope'"):
        alignclip.create_model("nope")
    with pytest.raises(ValueError, match="unknown architecture"):
        alignclip.create_model("tiny", "triple")
    cfg = load_model_config("tiny").to_dict()
    cfg["text_cfg"]["width"] = 64
    with pytest.raises(ValueError, match=r"these differ: width \(vision 128 vs text 64\)"):
        alignclip.create_model(cfg, "shared")
    alignclip.create_model(cfg, "clip")  # two towers may differ
    cfg = load_model_config("tiny").to_dict()
    cfg["vision_cfg"]["widht"] = 64
    with pytest.raises(ValueError, match="unknown key.*widht"):
        alignclip.create_model(cfg)
    cfg = load_model_config("tiny").to_dict()
    cfg["vision_cfg"]["patch_size"] = 5
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        alignclip.create_model(cfg)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        alignclip.create_model(str(bad))
    with pytest.raises(FileNotFoundError):
        alignclip.create_model(str(tmp_path / "missing.json"))
    model = alignclip.create_model("tiny")
    with pytest.raises(ValueError, match=r"expected integer tokens of shape \[N, 32\]"):
        model.encode_text(torch.zeros(2, 77, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected images of shape \[N, 3, 32, 32\]"):
        model.encode_image(torch.zeros(2, 3, 64, 64))


def test_activation_and_text_pooling_are_configurable() -> None:
    from alignclip.models.transformer import QuickGELU, text_pool
    x = torch.tensor([-2.0, 0.0, 1.0])
    # hand-worked x * sigmoid(1.702 x): -2 / (1 + e^3.404) and 1 / (1 + e^-1.702)
    assert torch.allclose(QuickGELU()(x), torch.tensor([-0.0643414, 0.0, 0.8457958]), atol=1e-6)
    cfg = {**load_model_config("tiny").to_dict(), "activation": "quick_gelu"}
    model = alignclip.create_model(cfg, "clip")
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, QuickGELU)
    with pytest.raises(ValueError, match="activation must be one of gelu, quick_gelu"):
        alignclip.create_model({**cfg, "activation": "relu"})
    features = torch.arange(12.0).view(2, 3, 2)  # [batch, position, width]
    tokens = torch.tensor([[5, 2, 9], [2, 7, 2]])
    assert text_pool(features, tokens).tolist() == [features[0, 2].tolist(), features[1, 1].tolist()]  # argmax
    assert text_pool(features, tokens, "eos", 2).tolist() == [features[0, 1].tolist(), features[1, 0].tolist()]
    assert text_pool(features, tokens, "last").tolist() == features[:, 2].tolist()
