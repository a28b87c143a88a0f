"""SigLIP's options of our model config: what they build, what the forward returns, what is refused."""
from __future__ import annotations

import pytest
import torch

import alignclip
from alignclip.models.config import load_model_config


def test_tiny_siglip_preset_builds_siglips_towers() -> None:
    model = alignclip.create_model("tiny-siglip", seed=0)
    keys = set(model.state_dict())
    assert "visual.class_embedding" not in keys and "visual.ln_pre.weight" not in keys and "visual.proj" not in keys
    assert {"visual.conv1.bias", "visual.attn_pool.probe", "visual.attn_pool.attn.in_proj_weight",
            "text_projection.weight", "text_projection.bias", "logit_bias"} <= keys
    assert model.state_dict()["visual.positional_embedding"].shape == (16, 128)  # patches only: (32 / 8)^2
    assert model.logit_bias.item() == -10 and model.logit_scale.exp().item() == pytest.approx(10)
    images, tokens = torch.randn(3, 3, 32, 32), alignclip.get_tokenizer(32)(["a", "b c", "d e f"])
    out = model(images, tokens)
    assert out["logit_bias"] is model.logit_bias and model.family == "siglip"
    assert out["image_features"].shape == (3, 128)
    assert alignclip.create_model("tiny")(images, tokens)["logit_bias"] is None


def test_text_tower_is_bidirectional() -> None:
    """causal false: a token after the end-of-text token reaches the features pooled at it; causal true: it cannot.
    (SigLIP pools the last, padded position, which needs this to see the caption.)"""
    tokens = alignclip.get_tokenizer(32)(["a red circle"])
    late = tokens.clone()
    late[0, -1] += 1  # padding after the end-of-text token
    for causal in (False, True):
        config = load_model_config("tiny-siglip").to_dict()
        config["text_cfg"] = {**config["text_cfg"], "causal": causal, "pool_type": "argmax"}
        model = alignclip.create_model(config, seed=0).eval()
        with torch.no_grad():
            same = torch.allclose(model.encode_text(tokens), model.encode_text(late))
        assert same == causal


def test_partial_patches_are_dropped_only_without_a_class_token() -> None:
    siglip = load_model_config("tiny-siglip").to_dict()
    siglip["vision_cfg"] = {**siglip["vision_cfg"], "image_size": 36}  # 4 x 4 patches of 8, 4 px dropped
    model = alignclip.create_model(siglip)
    assert model.state_dict()["visual.positional_embedding"].shape[0] == 16
    assert model.encode_image(torch.randn(1, 3, 36, 36)).shape == (1, 128)
    clip = load_model_config("tiny").to_dict()
    clip["vision_cfg"]["image_size"] = 36
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        alignclip.create_model(clip)


@pytest.mark.parametrize("change,message", [
    ({"vision_cfg": {"pool_type": "tok"}}, "pool_type 'tok' pools the class token, but class_token is false"),
    ({"vision_cfg": {"pool_type": "avg"}}, "vision_cfg.pool_type must be one of tok, map"),
    ({"text_cfg": {"proj_type": "none"}}, "text_cfg.proj_bias needs a projection"),
    ({"embed_dim": 64}, "vision_cfg.proj_type 'none' needs width 128 == embed_dim 64"),
    ({"logit_bias": "low"}, "logit_bias must be a finite number or null"),
    ({"text_cfg": {"causal": "no"}}, "text_cfg.causal must be true or false"),
    ({"vision_cfg": {"activation": "relu"}}, "vision_cfg.activation must be one of None, gelu"),
])
def test_bad_options_are_one_line_errors(change: dict, message: str) -> None:
    config = load_model_config("tiny-siglip").to_dict()
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ValueError, match=message):
        alignclip.create_model(config)


def test_shared_architecture_refuses_two_tower_options() -> None:
    with pytest.raises(ValueError, match="shared architecture does not support vision_cfg.class_token False"):
        alignclip.create_model("tiny-siglip", "shared")
