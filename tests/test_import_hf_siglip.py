"""Hugging Face SiglipModel <-> alignclip, checked against transformers itself (random init, save_pretrained)."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

import alignclip
from alignclip.cli.main import main
from alignclip.models.hf import export_hf

norm = torch.nn.functional.normalize
SHAPES = {  # vision and text shapes that differ, so a swapped mapping cannot pass
    "tanh": ({"hidden_size": 64, "intermediate_size": 100, "num_attention_heads": 4, "image_size": 32,
              "patch_size": 8},
             {"vocab_size": 300, "hidden_size": 48, "intermediate_size": 96, "num_attention_heads": 4,
              "max_position_embeddings": 16}),  # transformers' default hidden_act: gelu_pytorch_tanh, eps 1e-6
    "erf_mixed": ({"hidden_size": 48, "intermediate_size": 80, "num_attention_heads": 3, "image_size": 24,
                   "patch_size": 6, "hidden_act": "gelu", "layer_norm_eps": 1e-5},
                  {"vocab_size": 200, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                   "max_position_embeddings": 12, "hidden_act": "gelu_pytorch_tanh"}),
}


def hf_siglip(shape: str = "tanh", seed: int = 0) -> transformers.SiglipModel:
    vision, text = SHAPES[shape]
    config = transformers.SiglipConfig(
        vision_config={**vision, "num_hidden_layers": 2},
        text_config={**text, "num_hidden_layers": 2, "projection_size": vision["hidden_size"]})
    torch.manual_seed(seed)
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():  # perturb LayerNorms and biases too, so a wrong mapping cannot hide behind 1s and 0s
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, model.image_size, model.image_size, generator=g)
    return images, torch.randint(0, model.config.text_cfg.vocab_size, (3, model.context_length), generator=g)


def hf_features(hf, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return (norm(hf.get_image_features(pixel_values=images).pooler_output, dim=-1),
                norm(hf.get_text_features(input_ids=tokens).pooler_output, dim=-1))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_import_matches_transformers(tmp_path, shape: str) -> None:
    hf = hf_siglip(shape)
    hf.save_pretrained(tmp_path / "hf")
    model = alignclip.load_checkpoint(tmp_path / "hf").eval()
    v, t = model.config.vision_cfg, model.config.text_cfg
    assert model.family == "siglip" and (v.pool_type, v.class_token, t.causal, t.pool_type) == ("map", False,
                                                                                                  False, "last")
    assert model.config.activation == ("gelu_tanh" if shape == "tanh" else "gelu")
    assert (t.activation or model.config.activation) == "gelu_tanh"
    images, tokens = inputs(model)
    image_ref, text_ref = hf_features(hf, images, tokens)
    with torch.no_grad():
        image, text = model.encode_image(images), model.encode_text(tokens)
        assert (image - image_ref).abs().max() < 1e-5
        assert (text - text_ref).abs().max() < 1e-5
        # logits = exp(logit_scale) * cos + logit_bias, as SiglipModel.forward computes them
        reference = hf(input_ids=tokens, pixel_values=images).logits_per_image
        assert (model.logits(image, text) - reference).abs().max() < 1e-4
        out = model(images, tokens)
    assert out["logit_bias"].item() == pytest.approx(hf.logit_bias.item())
    assert model.logit_scale.item() == pytest.approx(hf.logit_scale.item())


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_export_round_trip(tmp_path, shape: str) -> None:
    hf_siglip(shape).save_pretrained(tmp_path / "hf")
    assert main(["export", str(tmp_path / "hf"), "--format", "hf", "--out", str(tmp_path / "out")]) == 0
    back, info = transformers.SiglipModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    model = alignclip.load_checkpoint(tmp_path / "hf").eval()
    images, tokens = inputs(model)
    image_ref, text_ref = hf_features(back.eval(), images, tokens)
    with torch.no_grad():
        assert (model.encode_image(images) - image_ref).abs().max() < 1e-5
        assert (model.encode_text(tokens) - text_ref).abs().max() < 1e-5
    assert back.logit_bias.item() == pytest.approx(model.logit_bias.item())
    assert alignclip.load_checkpoint(tmp_path / "out").config == model.config


def test_tiny_siglip_preset_exports(tmp_path) -> None:
    """A SigLIP trained here (the tiny-siglip preset) goes to transformers as it is."""
    model = alignclip.create_model("tiny-siglip", seed=0).eval()
    export_hf(model, tmp_path / "out")
    hf, info = transformers.SiglipModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info
    images, tokens = inputs(model)
    image_ref, text_ref = hf_features(hf.eval(), images, tokens)
    with torch.no_grad():
        assert (model.encode_image(images) - image_ref).abs().max() < 1e-5
        assert (model.encode_text(tokens) - text_ref).abs().max() < 1e-5


def test_refusals(tmp_path) -> None:
    hf = hf_siglip()
    hf.save_pretrained(tmp_path / "hf")
    document = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**document, "model_type": "siglip2"}))
    with pytest.raises(ValueError, match="SigLIP 2 NaFlex model.*interpolates the position table per image"):
        alignclip.load_checkpoint(tmp_path / "hf")
    no_head = {**document, "vision_config": {**document["vision_config"], "vision_use_head": False}}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(no_head))
    with pytest.raises(ValueError, match="vision_use_head is false"):
        alignclip.load_checkpoint(tmp_path / "hf")
    clip_like = {**alignclip.load_model_config("tiny-siglip").to_dict()}
    clip_like["vision_cfg"] = {**clip_like["vision_cfg"], "class_token": True, "pool_type": "tok"}
    with pytest.raises(ValueError, match=r"SiglipModel: .*vision_cfg.class_token True \(SiglipModel: False\)"):
        export_hf(alignclip.create_model(clip_like), tmp_path / "x")
