"""open_clip import/export against goldens written by open_clip 3.3 itself (scripts/make_openclip_goldens.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alignclip
from alignclip.cli.main import main
from alignclip.models.open_clip import from_open_clip_config, open_clip_zoo, timm_towers, unsupported_features

GOLDENS = Path(__file__).parent / "goldens"
ALL_FAMILIES = sorted(p.stem[len("openclip_"):] for p in GOLDENS.glob("openclip_*.json"))
SIGLIP_FAMILIES = [f for f in ALL_FAMILIES if f.startswith("siglip")]  # timm towers: tested below
FAMILIES = [f for f in ALL_FAMILIES if f not in SIGLIP_FAMILIES]


def _golden(family: str) -> tuple[Path, dict, dict]:
    meta = json.loads((GOLDENS / f"openclip_{family}.json").read_text())
    io = load_file(str(GOLDENS / f"openclip_{family}_io.safetensors"))
    return GOLDENS / f"openclip_{family}.safetensors", meta, io


def _assert_features(model, io: dict, atol: float = 1e-5) -> None:
    with torch.no_grad():
        for key, encode, inputs in (("image", model.encode_image, io["images"]),
                                    ("text", model.encode_text, io["tokens"])):
            assert (encode(inputs) - io[f"{key}_features"]).abs().max() < atol, key
            raw = encode(inputs, normalize=False)
            assert (raw - io[f"{key}_features_raw"]).abs().max() < atol * max(1.0, raw.abs().max().item()), key


def test_goldens_present() -> None:
    assert {"quickgelu_hw32", "vit_b16", "vit_bigg14", "worldwide_quickgelu"} <= set(FAMILIES)
    assert sum(p.stat().st_size for p in GOLDENS.glob("openclip_*")) < 3_000_000


@pytest.mark.parametrize("family", FAMILIES)
def test_import_matches_open_clip(family: str) -> None:
    weights, meta, io = _golden(family)
    model = alignclip.load_checkpoint(weights, config=meta["model_config"]).eval()
    _assert_features(model, io)


def test_config_matters_and_is_announced(capsys, tmp_path) -> None:
    """Without a config the file cannot say heads=2 x 32 or QuickGELU: the assumption is printed, and is wrong."""
    weights, meta, io = _golden("quickgelu_hw32")
    model = alignclip.load_checkpoint(weights).eval()
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "assumed 64-wide heads, GELU" in line and "--model-config" in line
    with torch.no_grad():
        assert (model.encode_text(io["tokens"]) - io["text_features"]).abs().max() > 1e-3
    config = tmp_path / "oc.json"
    config.write_text(json.dumps(meta["model_config"]))
    _assert_features(alignclip.load_checkpoint(weights, config=str(config)), io)  # an open_clip JSON file


@pytest.mark.parametrize("family", FAMILIES)
def test_export_open_clip_round_trip(tmp_path, family: str) -> None:
    weights, meta, io = _golden(family)
    model = alignclip.load_checkpoint(weights, config=meta["model_config"])
    out = tmp_path / "exported.pt"
    assert main(["export", str(weights), "--model-config", str(_write(tmp_path, meta["model_config"])),
                 "--format", "open_clip", "--out", str(out)]) == 0
    state, golden = torch.load(out, weights_only=True), load_file(str(weights))
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in golden.items()}
    exported_config = json.loads(out.with_suffix(".json").read_text())
    assert from_open_clip_config(exported_config) == from_open_clip_config(meta["model_config"])
    assert exported_config.get("quick_gelu", False) == meta["model_config"].get("quick_gelu", False)
    _assert_features(alignclip.load_checkpoint(out, config=str(out.with_suffix(".json"))), io)
    assert model.config == alignclip.load_checkpoint(out, config=str(out.with_suffix(".json"))).config


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def _zoo_features(config: dict) -> set[str]:
    vision, text = config["vision_cfg"], config["text_cfg"]
    features = {"quick_gelu"} if config.get("quick_gelu") else set()
    if vision.get("head_width", 64) != 64:
        features.add("head_width")
    if vision.get("mlp_ratio", 4.0) != 4.0 or text.get("mlp_ratio", 4.0) != 4.0:
        features.add("mlp_ratio")
    if vision.get("ls_init_value") is not None or text.get("ls_init_value") is not None:
        features.add("ls_init_value")
    if text.get("pool_type", "argmax") != "argmax":
        features.add(f"pool_type:{text['pool_type']}")
    if vision.get("timm_model_name"):
        features.add("timm_siglip")
        if timm_towers()[vision["timm_model_name"]]["activation"] == "gelu_tanh":
            features.add("timm_act:gelu_tanh")
    for key, feature in (("no_causal_mask", "no_causal_mask"), ("proj_bias", "proj_bias"), ("act_kwargs", "act:tanh")):
        if text.get(key):
            features.add(feature)
    if text.get("proj_type") == "none":
        features.add("text_proj:none")
    if config.get("init_logit_bias") is not None:
        features.add("logit_bias")
    return features


def test_zoo_is_exact_or_refused() -> None:
    """Every config of open_clip's zoo (the committed snapshot) imports exactly, by a golden-tested family, or is
    refused with a message naming what is unsupported."""
    covered = set().union(*(_golden(f)[1]["covers"] for f in ALL_FAMILIES))
    exact, refused = [], []
    for name, data in open_clip_zoo().items():
        if unsupported_features(data):
            with pytest.raises(ValueError, match="which alignclip cannot import exactly"):
                alignclip.load_model_config(name)
            refused.append(name)
        else:
            config = alignclip.load_model_config(name)
            tanh = (data["text_cfg"].get("act_kwargs") or {}).get("approximate") == "tanh"
            assert config.activation == ("quick_gelu" if data.get("quick_gelu") else "gelu_tanh" if tanh else "gelu")
            assert _zoo_features(data) <= covered, name
            exact.append(name)
    assert (len(exact), len(refused)) == (65, 79)  # the README's figures
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-B-32-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu",
            "ViT-H-14", "ViT-bigG-14", "ViT-H-14-worldwide"} <= set(exact)
    b16 = alignclip.load_model_config("ViT-L-14-quickgelu")
    assert (b16.vision_cfg.heads, b16.text_cfg.heads, b16.activation) == (16, 12, "quick_gelu")
    assert alignclip.load_model_config("ViT-H-14").vision_cfg.heads == 16  # 1280 / head_width 80


def test_open_clip_config_refusals() -> None:
    with pytest.raises(ValueError, match="uses CoCa.s multimodal decoder, an attentional pooler"):
        alignclip.load_model_config("coca_ViT-B-32")
    with pytest.raises(ValueError, match="no_ln_pre, final_ln_after_pool, image pool_type 'avg'"):
        alignclip.load_model_config("ViT-L-14-CLIPA")
    with pytest.raises(ValueError, match="uses a ResNet image tower"):
        alignclip.load_model_config("RN50")
    with pytest.raises(ValueError, match="unknown key.*vision_cfg.widht"):
        from_open_clip_config({"embed_dim": 8, "vision_cfg": {"widht": 64}, "text_cfg": {}})



def _siglip_config(meta: dict):
    """The goldens' timm towers are shrunk copies of timm's SigLIP ViTs; their recorded shapes come with them."""
    return from_open_clip_config(meta["model_config"], towers=meta["timm_towers"])


@pytest.mark.parametrize("family", SIGLIP_FAMILIES)
def test_siglip_import_matches_open_clip(family: str) -> None:
    weights, meta, io = _golden(family)
    config = _siglip_config(meta)
    assert config.logit_bias == -10 and config.vision_cfg.pool_type == "map" and not config.text_cfg.causal
    model = alignclip.load_checkpoint(weights, config=config).eval()
    _assert_features(model, io)
    assert model.logit_bias.item() == pytest.approx(-10)


@pytest.mark.parametrize("family", SIGLIP_FAMILIES)
def test_siglip_export_open_clip_round_trip(tmp_path, family: str) -> None:
    from alignclip.models.open_clip import export_open_clip

    weights, meta, io = _golden(family)
    model = alignclip.load_checkpoint(weights, config=_siglip_config(meta))
    out, config_path = export_open_clip(model, tmp_path / "exported.pt", towers=meta["timm_towers"])
    state, golden = torch.load(out, weights_only=True), load_file(str(weights))
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in golden.items()}  # open_clip's keys
    exported = json.loads(config_path.read_text())
    assert exported["vision_cfg"]["timm_model_name"] == meta["model_config"]["vision_cfg"]["timm_model_name"]
    back = alignclip.load_checkpoint(out, config=from_open_clip_config(exported, towers=meta["timm_towers"]))
    _assert_features(back.eval(), io)
    assert back.config == model.config


def test_siglip_state_dict_needs_its_config() -> None:
    weights, _, _ = _golden(SIGLIP_FAMILIES[0])
    with pytest.raises(ValueError, match="a timm image tower \\(SigLIP\\); name its open_clip config"):
        alignclip.load_checkpoint(weights)


def test_zoo_siglip_configs_build() -> None:
    """Every SigLIP config of the zoo imports (timm tower shapes from the snapshot) and plans the model it names."""
    from alignclip.models.factory import planned_shapes

    names = [n for n, c in open_clip_zoo().items() if "siglip" in str(c["vision_cfg"].get("timm_model_name"))]
    built = {n: alignclip.load_model_config(n) for n in names if not unsupported_features(open_clip_zoo()[n])}
    assert len(built) == len(names) - 2  # the two nllb-clip configs: a Hugging Face text tower
    so400m = built["ViT-SO400M-14-SigLIP-384"]
    assert (so400m.vision_cfg.width, so400m.vision_cfg.layers, so400m.vision_cfg.heads, so400m.embed_dim) == \
        (1152, 27, 16, 1152)
    assert int(so400m.vision_cfg.width * so400m.vision_cfg.mlp_ratio) == 4304
    assert built["ViT-B-16-SigLIP2"].text_cfg.activation is None and built["ViT-B-16-SigLIP2"].activation == \
        "gelu_tanh" and built["ViT-B-16-SigLIP2"].vision_cfg.activation == "gelu"  # timm's tower: exact GELU
    shapes = planned_shapes(built["ViT-B-16-SigLIP"], "clip")
    assert shapes["visual.positional_embedding"] == (196, 768) and "visual.class_embedding" not in shapes
