"""Write open_clip goldens for the import/export tests, and the snapshot of open_clip's model zoo.

open_clip cannot be a dependency (its torchvision pulls a CUDA build), so the tests compare against files made here
by open_clip itself. Run it from the repository root in a throw-away venv that has open_clip:

    python3 -m venv /tmp/ocvenv && /tmp/ocvenv/bin/pip install torch==2.13.0 transformers ftfy
    /tmp/ocvenv/bin/pip install --no-deps open-clip-torch==3.3.0 timm==1.0.31   # never torchvision (CUDA)
    /tmp/ocvenv/bin/python scripts/make_openclip_goldens.py

It writes
  src/alignclip/models/zoo/open_clip.json   every config of open_clip's model_configs/ (name -> JSON), version;
  tests/goldens/openclip_<family>.safetensors   a random open_clip CLIP of that family, shrunk (1-2 layers, small
                                                widths, 8-32 px, vocab 256, context 16), weights rounded to fp16
                                                (fp8 e4m3 for the wide-head families, see below);
  tests/goldens/openclip_<family>.json          its open_clip model config + the zoo features it stands for;
  tests/goldens/openclip_<family>_io.safetensors  images, token ids and open_clip's features (fp32, normalised
                                                and not) computed from exactly those rounded weights.
The SigLIP families (siglip_*) are open_clip CustomTextCLIPs with a timm image tower: a shrunk timm ViT registered
here with exactly the arguments of timm's `vit_*_siglip_*` (class_token=False, global_pool='map', and gelu_tanh where
timm uses it), the text tower bidirectional, last-token pooled, eps 1e-6, and a logit bias. The zoo snapshot also
records, for every timm ViT that a zoo config names and that alignclip can express exactly, the shapes timm builds
(`timm_towers`), so the import never needs timm.

open_clip and timm import torchvision (transforms, FrozenBatchNorm2d) at module level; a CPU-only throw-away venv
need not have it: when it is missing, `_stub_torchvision` installs an in-process stand-in whose every attribute is
an inert class (none of it is used to build or run a ViT). Only the families named on the command line are rewritten
(default: all), e.g. `python scripts/make_openclip_goldens.py siglip_b16 siglip2_so400m`. `--check NAME ...`
compares a full-size zoo model built by open_clip with alignclip's import of it (no files written).

Each family keeps what distinguishes it in the zoo: QuickGELU, head widths 32 and 80/88/104/112, odd mlp_ratios,
layer scale (ViT-M-16-alt), and -worldwide's text pooling at eos_id 2. Text towers have 2 heads of 16, the wide-head
image towers 2+ with width // 64 != heads (80 x 4 = 320 -> 5, 88 x 3 -> 4, 104 x 2 -> 3, 112 x 2 -> 3), so guessing
heads as width / 64 cannot pass. Those towers are 208-320 wide, so their MLPs are narrow (the zoo's
mlp_ratio fractions on 1.x, not 4.x-8.x) and their weights are stored in fp8 e4m3 (features still fp32, from exactly
those weights): that keeps tests/goldens under 3.5 MB. Fixed seeds: a rerun rewrites identical files.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch


def _stub_torchvision() -> None:
    """An importable `torchvision.*` whose attributes are inert classes (open_clip/timm import names from it at
    module level; building and running their ViTs uses none of them)."""
    class Inert(type):
        def __getattr__(cls, name: str) -> str:
            if name.startswith("__"):
                raise AttributeError(name)
            return f"{cls.__name__}.{name}"  # enum-like members (InterpolationMode.BICUBIC)

    class StubModule(types.ModuleType):
        def __getattr__(self, name: str) -> type:
            if name.startswith("__"):
                raise AttributeError(name)
            return Inert(name, (), {"__init__": lambda self, *a, **k: None})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return StubModule(spec.name)

        def exec_module(self, module):
            module.__path__ = []

    sys.meta_path.insert(0, Finder())


if __name__ == "__main__" and importlib.util.find_spec("torchvision") is None:
    _stub_torchvision()
try:
    import open_clip
except RuntimeError:  # torchvision's C++ ops missing in a CPU-only venv: register them, then retry
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
    import open_clip
except ImportError:  # imported by the test that imports every script, where neither open_clip nor timm exists
    open_clip = None
if open_clip is not None:
    import timm
    from open_clip.model import CLIP, CustomTextCLIP
    from safetensors.torch import save_file
    from timm.models import register_model

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
# Shrunk timm towers with the arguments of timm's own SigLIP ViTs: name -> (the timm model it shrinks, overrides).
GOLDEN_TOWERS = {
    "alignclip_golden_siglip_b16": ("vit_base_patch16_siglip_224",
                                    {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 16, "patch_size": 4}),
    "alignclip_golden_siglip_so400m16": ("vit_so400m_patch16_siglip_256",  # gelu_tanh, mlp_ratio 3.7362
                                         {"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 16,
                                          "patch_size": 4}),
}
SIGLIP_TEXT = {"context_length": 16, "vocab_size": 32, "width": 32, "heads": 2, "layers": 1, "no_causal_mask": True,
               "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}
SIGLIP_FAMILIES = {
    "siglip_b16": ({"embed_dim": 32, "init_logit_bias": -10, "custom_text": True,
                    "vision_cfg": {"image_size": 16, "timm_model_name": "alignclip_golden_siglip_b16",
                                   "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
                    "text_cfg": {**SIGLIP_TEXT, "proj_type": "none"}},  # as ViT-SO400M-16-SigLIP-i18n-256
                   ["timm_siglip", "logit_bias", "no_causal_mask", "pool_type:last", "text_proj:none"]),
    "siglip2_so400m": ({"embed_dim": 32, "init_logit_bias": -10, "custom_text": True,
                        "vision_cfg": {"image_size": 16, "timm_model_name": "alignclip_golden_siglip_so400m16",
                                       "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
                        "text_cfg": {**SIGLIP_TEXT, "width": 24, "mlp_ratio": 3.7362, "proj_bias": True,
                                     "act_kwargs": {"approximate": "tanh"}}},
                       ["timm_siglip", "timm_act:gelu_tanh", "logit_bias", "no_causal_mask", "pool_type:last",
                        "proj_bias", "act:tanh", "mlp_ratio"]),
}


def register_golden_towers() -> None:
    for name, (base, overrides) in GOLDEN_TOWERS.items():
        def create(pretrained: bool = False, _base: str = base, _overrides: dict = overrides, **kwargs):
            return timm.create_model(_base, pretrained=False, **{**_overrides, **kwargs})
        create.__name__, create.__module__ = name, __name__  # timm's registry looks the module up
        register_model(create)


def tower_entry(name: str, pool: str = "map") -> dict | None:
    """The shapes of timm's `name` as open_clip builds it (no classifier), if alignclip's SigLIP options express it
    exactly: no class token, MAP pooling, patch bias, no norm_pre / fc_norm / layer scale / qk-norm / registers."""
    with torch.device("meta"):
        try:
            trunk = timm.create_model(name, pretrained=False, num_classes=0, global_pool=pool)
        except Exception:  # not a model this timm builds with these arguments
            return None
    from timm.models.vision_transformer import Block, VisionTransformer
    if not isinstance(trunk, VisionTransformer):
        return None
    identity = torch.nn.Identity
    block, pool_layer = trunk.blocks[0], trunk.attn_pool
    acts = {"GELU": "gelu", "GELUTanh": "gelu_tanh"}
    act = type(block.mlp.act).__name__ + ("" if getattr(block.mlp.act, "approximate", "none") == "none" else "?")
    exact = (trunk.cls_token is None and trunk.global_pool == "map" and trunk.num_reg_tokens == 0
             and not trunk.no_embed_class and not trunk.dynamic_img_size and pool_layer is not None
             and pool_layer.latent_len == 1 and pool_layer.pool == "token"
             and all(isinstance(m, identity) for m in (trunk.norm_pre, trunk.fc_norm, trunk.head,
                                                       trunk.patch_embed.norm, block.ls1, block.ls2, block.attn.q_norm,
                                                       block.attn.k_norm, pool_layer.q_norm, pool_layer.k_norm,
                                                       block.mlp.norm))
             and all(type(b) is Block for b in trunk.blocks) and trunk.patch_embed.proj.bias is not None
             and act in acts and type(pool_layer.mlp.act).__name__ == type(block.mlp.act).__name__)
    if not exact:
        return None
    patch, size = trunk.patch_embed.patch_size, trunk.patch_embed.img_size
    return {"image_size": size[0], "patch_size": patch[0], "width": trunk.embed_dim, "layers": len(trunk.blocks),
            "heads": block.attn.num_heads, "mlp_hidden": block.mlp.fc1.out_features,
            "map_mlp_hidden": pool_layer.mlp.fc1.out_features, "activation": acts[act],
            "layer_norm_eps": block.norm1.eps, "square": patch[0] == patch[1] and size[0] == size[1]}


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


def storage_dtype(config: dict) -> torch.dtype:
    """fp16 (what open_clip checkpoints ship in), fp8 for the wide-head and SigLIP towers that would not fit
    otherwise (tests/goldens stays under 3 MB)."""
    wide = config["vision_cfg"].get("head_width", 64) > 64
    return torch.float8_e4m3fn if wide or config["vision_cfg"].get("timm_model_name") else torch.float16


def make_golden(family: str, config: dict, features: list[str], seed: int) -> None:
    from open_clip.model import CLIP

    dtype = storage_dtype(config)
    torch.manual_seed(seed)
    timm_name = config["vision_cfg"].get("timm_model_name")
    if timm_name:  # SigLIP: CustomTextCLIP, a logit bias
        model = CustomTextCLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                               init_logit_bias=config["init_logit_bias"]).eval()
    else:
        model = CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                     quick_gelu=config.get("quick_gelu", False)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # perturb every tensor (LN gains, biases too), then round
            if name not in ("logit_scale", "logit_bias"):
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
    towers = {"timm_towers": {timm_name: tower_entry(timm_name)}} if timm_name else {}
    (GOLDENS / f"openclip_{family}.json").write_text(json.dumps(
        {"open_clip_version": open_clip.__version__, "covers": features, "model_config": config, **towers},
        indent=2) + "\n")
    print(f"{family}: {sum(v.numel() for v in state.values()):,} parameters ({dtype})")


def write_zoo() -> None:
    configs_dir = Path(open_clip.__file__).parent / "model_configs"
    configs = {p.stem: json.loads(p.read_text()) for p in sorted(configs_dir.glob("*.json"))}
    named = sorted({(c["vision_cfg"]["timm_model_name"], c["vision_cfg"].get("timm_pool") or "")
                    for c in configs.values() if (c.get("vision_cfg") or {}).get("timm_model_name")})
    towers = {name: entry for name, pool in named if pool == "map" and (entry := tower_entry(name, pool))}
    ZOO.parent.mkdir(parents=True, exist_ok=True)
    ZOO.write_text(json.dumps({"open_clip_version": open_clip.__version__, "timm_version": timm.__version__,
                               "configs": configs, "timm_towers": towers}, indent=1) + "\n")
    print(f"zoo: {len(configs)} configs, {len(towers)} timm towers -> {ZOO.relative_to(ROOT)}")


def check_full_size(names: list[str]) -> None:
    """`--check NAME ...`: a full-size zoo model (random weights, perturbed) built by open_clip + timm against
    alignclip's import of its state dict, config from the committed snapshot (so the timm tower record is checked)."""
    sys.path.insert(0, str(ROOT / "src"))
    from alignclip.models.checkpoint import import_state_dict

    torch.set_num_threads(1)
    for name in names:
        torch.manual_seed(0)
        model = open_clip.create_model(name).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
            size, length = model.visual.image_size[0], model.context_length
            images, tokens = torch.randn(2, 3, size, size), torch.randint(0, 1000, (2, length))
            ours = import_state_dict(model.state_dict(), config=name, source=name).eval()
            image = (ours.encode_image(images) - model.encode_image(images, normalize=True)).abs().max().item()
            text = (ours.encode_text(tokens) - model.encode_text(tokens, normalize=True)).abs().max().item()
        print(f"{name}: max |difference| of normalised features: image {image:.1e}, text {text:.1e}")


def main() -> None:
    if sys.argv[1:2] == ["--check"]:
        check_full_size(sys.argv[2:])
        return
    GOLDENS.mkdir(parents=True, exist_ok=True)
    register_golden_towers()
    write_zoo()
    everything = {**FAMILIES, **SIGLIP_FAMILIES}
    chosen = sys.argv[1:] or list(everything)
    for i, (family, (config, features)) in enumerate(everything.items()):
        if family in chosen:
            make_golden(family, config, features, seed=i)


if __name__ == "__main__":
    main()
