"""`alignclip export`: take a model home, as an open_clip state dict + model config or a Hugging Face folder."""
from __future__ import annotations

import argparse

HELP = "export a checkpoint to open_clip (.pt + model-config .json) or Hugging Face CLIPModel / SiglipModel (folder)"


def run(args: argparse.Namespace) -> int:
    import alignclip

    model = alignclip.load_checkpoint(args.checkpoint, config=args.model_config)  # a run folder: says which one
    if args.format == "open_clip":
        from alignclip.models.open_clip import export_open_clip

        if not args.out.endswith((".pt", ".pth", ".bin")):
            raise ValueError(f"--out {args.out}: give a file name ending in .pt for --format open_clip")
        weights, config = export_open_clip(model, args.out)
        print(f"wrote {weights} and {config} (in open_clip: add_model_config('{config}'), then "
              f"create_model('{config.stem}', pretrained='{weights}'))")
    else:
        from alignclip.models.hf import export_hf

        out = export_hf(model, args.out)
        kind = "SiglipModel" if model.family == "siglip" else "CLIPModel"
        print(f"wrote {out} (transformers.{kind}.from_pretrained('{out}'))")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help=HELP, description=HELP)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="any checkpoint alignclip reads (a run folder, ours, "
                                                            "open_clip, OpenAI, official AlignCLIP, Hugging Face)")
    p.add_argument("--format", required=True, choices=["open_clip", "hf"])
    p.add_argument("--out", required=True, help="open_clip: FILE.pt (FILE.json is written beside it); hf: a folder")
    p.add_argument("--model-config", default=None, metavar="CONFIG",
                   help="what the checkpoint does not record (heads, activation): a preset, an open_clip model name "
                        "such as ViT-B-16-quickgelu, or a JSON config (ours or open_clip's)")
    p.set_defaults(func=run)
