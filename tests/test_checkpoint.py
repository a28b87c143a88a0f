from __future__ import annotations

import json
import re

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
        assert torch.allclose(model.encode_image(images), loaded.encode_image(images))


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


SMALL = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
         "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "layers": 2, "heads": 2}}
HOSTILE_CHILD = r'''
import json, resource, sys
from pathlib import Path
import torch
import alignclip
from safetensors.torch import save_file
root, small = Path(sys.argv[1]), json.loads(sys.argv[2])
model = alignclip.create_model(small, "clip")
state = dict(model.state_dict())
state.update({k.replace("resblocks.1.", "resblocks.100000."): v for k, v in state.items() if ".resblocks.1." in k})
torch.save(state, root / "block100000.pt")
def ours(name, edit):
    folder = alignclip.save_checkpoint(model, root / name)
    doc = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(edit(doc)))
    return folder
wide = lambda d: {**d, "model": {**d["model"], "vision_cfg": {**d["model"]["vision_cfg"], "width": 16384},
                                  "text_cfg": {**d["model"]["text_cfg"], "width": 16384}}}
deep = lambda d: {**d, "model": {**d["model"], "text_cfg": {**d["model"]["text_cfg"], "layers": 10 ** 6}}}
cases = [root / "block100000.pt", ours("wide", wide), ours("deep", deep), ours("list", lambda d: [d]),
         ours("null", lambda d: {**d, "model": None})]
truncated = ours("truncated", lambda d: d) / "model.safetensors"
truncated.write_bytes(truncated.read_bytes()[:5000])
cases.append(truncated.parent)
(root / "bert").mkdir()
(root / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16384}))
save_file({"x": torch.zeros(1)}, str(root / "bert" / "model.safetensors"))
cases += [root / "bert", (root / "block1.pt", "ViT-bigG-14")]
torch.save(dict(model.state_dict()), root / "block1.pt")
for case in cases:
    case, config = case if isinstance(case, tuple) else (case, None)
    try:
        alignclip.load_checkpoint(case, config=config)
        print("LOADED", case)
    except (ValueError, FileNotFoundError) as e:
        print("ERROR", str(e).replace(str(root), "ROOT"))
try:
    alignclip.create_model({**small, "vision_cfg": {**small["vision_cfg"], "width": 16384, "heads": 128}})
except ValueError as e:
    print("ERROR", e)
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
'''


def test_hostile_files_are_refused_with_low_memory(tmp_path) -> None:
    """Issues 8/9: a file naming block 100000, configs asking for width 16384 or 10^6 layers, a JSON list, a null
    model, a truncated safetensors, an HF folder of another model type and a config contradicting the file: each
    one line, in a child capped at 3 GB of address space, whose peak RSS stays low."""
    import resource
    import subprocess
    import sys

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    done = subprocess.run([sys.executable, "-c", HOSTILE_CHILD, str(tmp_path), json.dumps(SMALL)], preexec_fn=cap,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ERROR", "LOADED"))]
    assert len(lines) == 9 and all(line.startswith("ERROR") for line in lines), done.stdout
    expected = ["names block 100000", "parameters, more than the", "layers 1000000 is more than the 1024",
                "not an alignclip model config", "not an alignclip model config",
                "unreadable safetensors", "a Hugging Face 'bert' model",
                r"contradicts the file: embed_dim 1280 \(file: 16\)",
                "parameters, more than the .* ALIGNCLIP_MAX_PARAMS"]
    for line, pattern in zip(lines, expected):
        assert re.search(pattern, line), (pattern, line)
    peak_kb = int(done.stdout.split("MAXRSS_KB")[1])
    assert peak_kb < 1_000_000, f"peak RSS {peak_kb} KB"


def test_orig_mod_and_config_checks(tmp_path, capsys) -> None:
    model = alignclip.create_model(SMALL, "clip", seed=0)
    path = tmp_path / "compiled.pth"
    torch.save({"state_dict": {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = alignclip.load_checkpoint(path, config=SMALL)
    assert loaded.config == model.config and _same_weights(model, loaded)
    assert capsys.readouterr().err == ""  # a config was given: nothing assumed
    alignclip.load_checkpoint(path)
    assert capsys.readouterr().err.count("assumed") == 1
    with pytest.raises(ValueError, match=r"contradicts the file: embed_dim 512 \(file: 16\), vision_cfg.width 768 "
                                         r"\(file: 32\)"):
        alignclip.load_checkpoint(path, config="ViT-B-16-quickgelu")
    save_file(dict(model.state_dict()), str(tmp_path / "bare.safetensors"))  # open_clip .safetensors, no JSON
    assert _same_weights(model, alignclip.load_checkpoint(tmp_path / "bare.safetensors", config=SMALL))


def test_old_config_without_new_fields_loads(tmp_path) -> None:
    model = alignclip.create_model("tiny", "clip", seed=0)
    folder = alignclip.save_checkpoint(model, tmp_path / "old")
    document = json.loads((folder / "config.json").read_text())
    del document["model"]["activation"]
    for key in ("layer_norm_eps", "pool_type", "eos_id"):
        document["model"]["text_cfg"].pop(key)
    document["model"]["vision_cfg"].pop("layer_norm_eps")
    (folder / "config.json").write_text(json.dumps(document))
    loaded = alignclip.load_checkpoint(folder)
    assert loaded.config.activation == "gelu" and loaded.config.text_cfg.pool_type == "argmax"
    assert _same_weights(model, loaded)


def test_torchscript_archive_is_named(tmp_path) -> None:
    """OpenAI's original .pt files are TorchScript: refused (never executed) with a way out."""
    scripted = torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    torch.jit.save(scripted, str(tmp_path / "ViT-B-32.pt"))
    with pytest.raises(ValueError, match="a TorchScript archive .* save its state_dict"):
        alignclip.load_checkpoint(tmp_path / "ViT-B-32.pt")
