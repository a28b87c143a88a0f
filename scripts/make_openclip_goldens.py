"""Write open_clip goldens for the import/export tests, and the snapshot of open_clip's model zoo.

open_clip cannot be a dependency (its torchvision pulls a CUDA build), so the tests compare against files made here
by open_clip itself. Run it from the repository root in a throw-away venv that has open_clip:

    python3 -m venv /tmp/ocvenv && /tmp/ocvenv/bin/pip install open-clip-torch==3.3.0 transformers ftfy
    /tmp/ocvenv/bin/python scripts/make_openclip_goldens.py

It writes
  src/alignclip/models/zoo/open_clip.json   every config of open_clip's model_configs/ (name -> JSON), version;
  tests/goldens/openclip_<family>.safetensors   a random open_clip CLIP of that family, shrunk (1-2 layers, small
                                                widths, 8-32 px, vocab 256, context 16), weights rounded to fp16
                                                (fp8 e4m3 for the wide-head families, see below);
  tests/goldens/openclip_<family>.json          its open_clip model config + the zoo features it stands for;
  tests/goldens/openclip_<family>_io.safetensors  images, token ids and open_clip's features (fp32, normalised
                                                and not) computed from exactly those rounded weights.
Each family keeps what distinguishes it in the zoo: QuickGELU, head widths 32 and 80/88/104/112, odd mlp_ratios,
layer scale (ViT-M-16-alt), and -worldwide's text pooling at eos_id 2. Text towers have 2 heads of 16, the wide-head
image towers 2+ with width // 64 != heads (80 x 4 = 320 -> 5, 88 x 3 -> 4, 104 x 2 -> 3, 112 x 2 -> 3), so guessing
heads as width / 64 cannot pass. Those towers are 208-320 wide, so their MLPs are narrow (the zoo's
mlp_ratio fractions on 1.x, not 4.x-8.x) and their weights are stored in fp8 e4m3 (features still fp32, from exactly
those weights): that keeps tests/goldens under 3.5 MB. Fixed seeds: a rerun rewrites identical files.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "tests" / "goldens"
ZOO = ROOT / "src" / "alignclip" / "models" / "zoo" / "open_clip.json"
TEXT = {"context_length": 16, "vocab_size": 256, "width": 32, "heads": 2, "layers": 1}

# family -> (open_clip config, features of the zoo it covers)
FAMILIES = {
    "quickgelu_hw32": ({"embed_dim": 32, "quick_gelu": True,
                        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 2},
                        "text_cfg": TEXT}, ["quick_gelu", "head_width"]),
    "vit_b16": ({"embed_dim": 32, "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 64, "layers": 1},
                 "text_cfg": TEXT}, []),
    "vit_g14": ({"embed_dim": 32, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 264, "head_width": 88,
                                                 "mlp_ratio": 1.3637, "layers": 1}, "text_cfg": TEXT},
                ["head_width", "mlp_ratio"]),
    "vit_bigg14": ({"embed_dim": 32, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 208, "head_width": 104,
                                                    "mlp_ratio": 1.9231, "layers": 1}, "text_cfg": TEXT},
                   ["head_width", "mlp_ratio"]),
    "vit_e14": ({"embed_dim": 32, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 224, "head_width": 112,
                                                 "mlp_ratio": 1.5715, "layers": 1}, "text_cfg": TEXT},
                ["head_width", "mlp_ratio"]),
    "vit_m16_alt": ({"embed_dim": 32, "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 64, "layers": 1,
                                                     "ls_init_value": 1e-4}, "text_cfg": TEXT}, ["ls_init_value"]),
    "worldwide_quickgelu": ({"embed_dim": 32, "quick_gelu": True,
                             "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 320, "head_width": 80,
                                            "mlp_ratio": 1.0, "layers": 1},
                             "text_cfg": {**TEXT, "pool_type": "eos", "eos_id": 2}},
                            ["quick_gelu", "head_width", "pool_type:eos"]),
}


def tokens_for(text_cfg: dict, generator: torch.Generator) -> torch.Tensor:
    """Three captions of different lengths; the eos is the largest id (argmax) or eos_id 2 (then not the max)."""
    length, vocab = text_cfg["context_length"], text_cfg["vocab_size"]
    eos = text_cfg.get("eos_id", vocab - 1) if text_cfg.get("pool_type") == "eos" else vocab - 1
    tokens = torch.zeros(3, length, dtype=torch.long)
    for row, n in enumerate((4, 9, length - 1)):
        tokens[row, 0] = vocab - 2  # a BOS-like id
        tokens[row, 1:n] = torch.randint(3, vocab - 2, (n - 1,), generator=generator)
        tokens[row, n] = eos
    return tokens


def import_open_clip():  # type: ignore[no-untyped-def]
    """open_clip, imported when the script runs, not when it is loaded: it is no dependency of this package, and
    tests/test_scripts.py loads every script to catch broken imports."""
    try:
        import open_clip
    except RuntimeError:  # torchvision's C++ ops missing in a CPU-only venv: register them, then retry
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
        import open_clip
    return open_clip


def storage_dtype(config: dict) -> torch.dtype:
    """fp16 (what open_clip checkpoints ship in), fp8 for the wide-head towers that would not fit otherwise."""
    return torch.float8_e4m3fn if config["vision_cfg"].get("head_width", 64) > 64 else torch.float16


def make_golden(family: str, config: dict, features: list[str], seed: int) -> None:
    open_clip = import_open_clip()
    from open_clip.model import CLIP

    dtype = storage_dtype(config)
    torch.manual_seed(seed)
    model = CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                 quick_gelu=config.get("quick_gelu", False)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # perturb every tensor (LN gains, biases too), then round
            if name != "logit_scale":
                p.add_(0.05 * torch.randn_like(p))
            p.copy_(p.to(dtype).float())
    g = torch.Generator().manual_seed(seed)
    size = config["vision_cfg"]["image_size"]
    images = torch.randn(2, 3, size, size, generator=g)
    tokens = tokens_for(config["text_cfg"], g)
    with torch.no_grad():
        io = {"images": images, "tokens": tokens,
              "image_features": model.encode_image(images, normalize=True),
              "text_features": model.encode_text(tokens, normalize=True),
              "image_features_raw": model.encode_image(images), "text_features_raw": model.encode_text(tokens)}
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(GOLDENS / f"openclip_{family}.safetensors"), metadata={"format": "pt"})
    save_file({k: v.contiguous() for k, v in io.items()}, str(GOLDENS / f"openclip_{family}_io.safetensors"))
    for path in GOLDENS.glob(f"openclip_{family}*.safetensors"):
        path.chmod(0o644)
    (GOLDENS / f"openclip_{family}.json").write_text(json.dumps(
        {"open_clip_version": open_clip.__version__, "covers": features, "model_config": config}, indent=2) + "\n")
    print(f"{family}: {sum(v.numel() for v in state.values()):,} parameters ({dtype})")


def write_zoo() -> None:
    open_clip = import_open_clip()
    configs_dir = Path(open_clip.__file__).parent / "model_configs"
    configs = {p.stem: json.loads(p.read_text()) for p in sorted(configs_dir.glob("*.json"))}
    ZOO.parent.mkdir(parents=True, exist_ok=True)
    ZOO.write_text(json.dumps({"open_clip_version": open_clip.__version__, "configs": configs}, indent=1) + "\n")
    print(f"zoo: {len(configs)} configs -> {ZOO.relative_to(ROOT)}")


def main() -> None:
    GOLDENS.mkdir(parents=True, exist_ok=True)
    write_zoo()
    for i, (family, (config, features)) in enumerate(FAMILIES.items()):
        make_golden(family, config, features, seed=i)


if __name__ == "__main__":
    main()
