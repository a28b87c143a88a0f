"""Hugging Face CLIPModel <-> alignclip, checked against transformers itself (random init, save_pretrained)."""
from __future__ import annotations

import json

import pytest
import torch
import transformers  # installed with sentence-transformers: the reference must never be skipped silently

import alignclip
from alignclip.models.hf import export_hf


def _hf_model(act: str = "quick_gelu", eos: int = 49407, eps: float = 1e-5) -> "transformers.CLIPModel":
    common = {"num_hidden_layers": 2, "hidden_act": act, "layer_norm_eps": eps}
    config = transformers.CLIPConfig(
        text_config={**common, "vocab_size": 49408, "hidden_size": 64, "intermediate_size": 128,
                     "num_attention_heads": 4, "max_position_embeddings": 32, "eos_token_id": eos},
        vision_config={**common, "hidden_size": 48, "intermediate_size": 100, "num_attention_heads": 3,
                       "image_size": 32, "patch_size": 8},
        projection_dim=24)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # perturb LayerNorms and biases too, so a wrong mapping cannot hide behind 1s and 0s
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(model: alignclip.models.base.ContrastiveModel) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = alignclip.get_tokenizer(model.context_length)(["a photo of a dog", "two red circles on the left side"])
    return torch.randn(2, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(1)), tokens


def _hf_features(hf, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = hf(input_ids=tokens, pixel_values=images)
    norm = torch.nn.functional.normalize
    return norm(out.image_embeds, dim=-1), norm(out.text_embeds, dim=-1)


@pytest.mark.parametrize("act,eos,eps", [("quick_gelu", 49407, 1e-5), ("gelu", 2, 1e-6)])
def test_import_hf_matches_transformers(tmp_path, act: str, eos: int, eps: float) -> None:
    hf = _hf_model(act, eos, eps)
    hf.save_pretrained(tmp_path / "hf")
    model = alignclip.load_checkpoint(tmp_path / "hf").eval()
    assert model.config.activation == act and model.config.vision_cfg.heads == 3
    assert model.config.text_cfg.pool_type == ("argmax" if eos == 2 else "eos")
    images, tokens = _inputs(model)
    image_ref, text_ref = _hf_features(hf, images, tokens)
    with torch.no_grad():
        assert (model.encode_image(images) - image_ref).abs().max() < 1e-5
        assert (model.encode_text(tokens) - text_ref).abs().max() < 1e-5
        assert model.logit_scale.item() == pytest.approx(hf.logit_scale.item())


def test_export_hf_loads_in_transformers(tmp_path) -> None:
    config = {**alignclip.load_model_config("tiny").to_dict(), "activation": "quick_gelu"}  # map it too
    model = alignclip.create_model(config, "clip", seed=0).eval()
    export_hf(model, tmp_path / "out")
    hf, info = transformers.CLIPModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    images, tokens = _inputs(model)
    image_ref, text_ref = _hf_features(hf.eval(), images, tokens)
    with torch.no_grad():
        assert (model.encode_image(images) - image_ref).abs().max() < 1e-5
        assert (model.encode_text(tokens) - text_ref).abs().max() < 1e-5
    back = alignclip.load_checkpoint(tmp_path / "out")  # and our importer reads our export
    assert back.config == model.config


def test_hf_refusals(tmp_path) -> None:
    shared = alignclip.create_model("tiny", "shared")
    with pytest.raises(ValueError, match="shared model cannot be exported to Hugging Face.*one shared transformer"):
        export_hf(shared, tmp_path / "x")
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match=r"contradicts its config.json: .*vision_cfg.width 128 \(file: 48\)"):
        alignclip.load_checkpoint(tmp_path / "hf", config="tiny")
    document = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**document, "model_type": "bert"}))
    with pytest.raises(ValueError, match="a Hugging Face 'bert' model; alignclip imports CLIPModel and SiglipModel"):
        alignclip.load_checkpoint(tmp_path / "hf")
    mixed = _hf_model()
    mixed.config.vision_config.hidden_act = "gelu"
    mixed.save_pretrained(tmp_path / "mixed")
    with pytest.raises(ValueError, match="hidden_act 'gelu' \\(vision\\) / 'quick_gelu' \\(text\\)"):
        alignclip.load_checkpoint(tmp_path / "mixed")
