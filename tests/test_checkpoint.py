from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import alignclip
from alignclip.models.checkpoint import import_official_alignclip, import_open_clip


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("arch", ["clip", "shared"])
@pytest.mark.parametrize("as_file", [False, True])
def test_round_trip(tmp_path, arch: str, as_file: bool) -> None:
    model = alignclip.create_model("tiny", arch, seed=3)
    target = tmp_path / ("m.safetensors" if as_file else "ckpt")
    alignclip.save_checkpoint(model, target, metadata={"step": 7})
    loaded = alignclip.load_checkpoint(target)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert _same_weights(model, loaded)
    config = json.loads((target.with_suffix(".json") if as_file else target / "config.json").read_text())
    assert config["architecture"] == arch and config["step"] == 7


def _official_state(model: torch.nn.Module) -> dict:
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    state["module.text.text_projection"] = torch.randn(128, 128)  # present in the official files, unused
    return {"epoch": 2, "name": "run", "state_dict": state}


def test_import_official_alignclip(tmp_path) -> None:
    model = alignclip.create_model("tiny", "shared", seed=1)
    path = tmp_path / "epoch_2.pt"
    torch.save(_official_state(model), path)
    loaded = alignclip.load_checkpoint(path)
    assert loaded.architecture == "shared" and loaded.config == model.config  # preset picked from shapes
    assert _same_weights(model, loaded)
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(0, 49407, (2, 32))
    with torch.no_grad():
        assert torch.allclose(model.encode_text(tokens), loaded.encode_text(tokens))


def test_import_official_b16_shapes_pick_preset() -> None:
    config = alignclip.load_model_config("ViT-B-16-512")
    with torch.device("meta"):
        model = alignclip.create_model(config, "shared")
    state = {k: torch.empty(v.shape) for k, v in model.state_dict().items()}
    from alignclip.models.checkpoint import official_config
    assert official_config(state) == config


def test_import_open_clip(tmp_path) -> None:
    model = alignclip.create_model("tiny", "clip", seed=2)
    state = dict(model.state_dict())
    state["attn_mask"] = torch.empty(32, 32)  # OpenAI-era buffer, dropped on import
    path = tmp_path / "open_clip.pt"
    torch.save({"state_dict": state}, path)
    loaded = import_open_clip(path)
    assert loaded.config == model.config and _same_weights(model, loaded)


def test_bad_checkpoints(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        alignclip.load_checkpoint(tmp_path / "nothing")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt: cannot read"):
        alignclip.load_checkpoint(garbage)
    model = alignclip.create_model("tiny", "shared")
    state = _official_state(model)["state_dict"]
    del state["module.ln_post.weight"]
    state["module.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(ValueError, match=r"missing keys: ln_post.weight.*unexpected keys: extra.weight"):
        alignclip.load_checkpoint(broken)
    with pytest.raises(ValueError, match="not an open_clip ViT checkpoint"):
        import_open_clip(_official_state(model)["state_dict"])
    with pytest.raises(ValueError, match="not an official AlignCLIP checkpoint"):
        import_official_alignclip({"visual.proj": torch.zeros(1)})
    ours = tmp_path / "ours"
    alignclip.save_checkpoint(model, ours)
    (ours / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="unreadable safetensors"):
        alignclip.load_checkpoint(ours)
    save_file({"x": torch.zeros(1)}, str(ours / "model.safetensors"))
    with pytest.raises(ValueError, match="missing keys"):
        alignclip.load_checkpoint(ours)
    (ours / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not an alignclip model config"):
        alignclip.load_checkpoint(ours)


@pytest.mark.parametrize("method", ["clip", "sharedclip", "alignclip"])
def test_a_few_steps_lower_the_loss(method: str) -> None:
    from alignclip.losses import AlignCLIPLoss, ClipLoss
    torch.manual_seed(0)
    model = alignclip.create_model("tiny", "clip" if method == "clip" else "shared", seed=0)
    loss_fn = AlignCLIPLoss(beta=0.5) if method == "alignclip" else ClipLoss()
    images = torch.randn(16, 3, 32, 32)
    tokens = torch.randint(1, 49000, (16, 32))
    tokens[:, 0], tokens[:, 12] = 49406, 49407
    semantic = torch.randn(16, 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        out = model(images, tokens)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                       semantic_features=semantic)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
