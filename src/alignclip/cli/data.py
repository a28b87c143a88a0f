"""`alignclip data pack|inspect|embed-captions`: turn any source into WebDataset shards, check a source before
training, or precompute its caption embeddings for AlignCLIP."""
from __future__ import annotations

import argparse
import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alignclip.data.spec import DataSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="prepare and check datasets",
                                   description="Prepare and check image-text datasets.")
    commands = parser.add_subparsers(dest="data_command", metavar="{pack,inspect,embed-captions}")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    p = commands.add_parser("pack", help="write a source as WebDataset tar shards",
                            description="Write SOURCE (synthetic[:N], csv:PATH, tsv:PATH, captions:DIR, wds:PATTERN) "
                                        "as DIR/shard-000000.tar ... with KEY.jpg|png + KEY.txt (+ KEY.json labels). "
                                        "Skipped samples are listed in DIR/bad_samples.tsv.")
    p.add_argument("source", help="dataset spec, e.g. synthetic, csv:data/train.csv, captions:images/")
    p.add_argument("--out", required=True, help="output directory for the shards")
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=None,
                   help="samples to write (synthetic: default 10000; others: the first N)")
    p.add_argument("--image-format", choices=["jpg", "png"], default="jpg")
    p.add_argument("--image-size", type=int, default=64, help="synthetic image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--overwrite", action="store_true", help="replace shard-*.tar files already in --out")
    _csv_options(p)
    p.set_defaults(func=run_pack)

    p = commands.add_parser("inspect", help="load a few samples and report captions and bad samples",
                            description="Load the first N samples of SOURCE as training would, print captions, "
                                        "and name each unusable sample with the reason.")
    p.add_argument("source")
    p.add_argument("-n", "--num", type=int, default=8, help="samples to load")
    p.add_argument("--preset", default=None, help="model preset (or JSON) whose input size the images are resized "
                                                  "to, as training would (default: train's model.preset)")
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: the preset's)")
    _csv_options(p)
    p.set_defaults(func=run_inspect)

    p = commands.add_parser("embed-captions", help="precompute caption embeddings for AlignCLIP (resumable, torchrun)",
                            description="Sentence-encode every caption of SOURCE that the caption store lacks, into "
                                        "the store training reads (loss.semantic_cache_dir). Killed or interrupted, "
                                        "rerun it: nothing stored is encoded again. Under torchrun each rank encodes "
                                        "a share and the store is merged once at the end.")
    p.add_argument("source", help="dataset spec, e.g. csv:data/train.csv, captions:images/, wds:shards/{0..99}.tar")
    p.add_argument("--semantic-model", default=None, help="sentence-transformers name/path (default: the bundled "
                   "all-MiniLM-L6-v2; training's loss.semantic_model)")
    p.add_argument("--cache-dir", default=None, help="store folder (default: the model's folder under "
                   "$ALIGNCLIP_CACHE/semantic; training's loss.semantic_cache_dir)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: the GPU of this rank if there is one")
    p.add_argument("--batch-size", type=int, default=256, help="captions per sentence-model forward")
    p.add_argument("--num-samples", type=int, default=None, help="only the first N samples (synthetic: its size)")
    p.add_argument("--seed", type=int, default=0, help="synthetic dataset seed (training's data.synthetic_seed)")
    p.add_argument("--flush-every", type=int, default=50_000, help="new captions kept in memory before a flush "
                   "(a flush also happens every 30 s)")
    p.add_argument("--wait-s", type=float, default=120.0, help="torchrun: how long a rank waits without any new "
                   "caption from the others before it gives up")
    _csv_options(p)
    p.set_defaults(func=run_embed_captions)


def _csv_options(p: argparse.ArgumentParser) -> None:
    """The data.csv_* settings of `train`, so a CSV packs and inspects as it trains."""
    p.add_argument("--csv-image-key", default=None, help="image path column (default: filepath)")
    p.add_argument("--csv-caption-key", default=None, help="caption column (default: title)")
    p.add_argument("--csv-separator", default=None,
                   help="delimiter (default: tab for tsv:, else detected from the header line among , TAB ; |)")


def _spec(args: argparse.Namespace) -> "DataSpec":
    from alignclip.data.spec import with_csv_settings

    return with_csv_settings(args.source, args.csv_image_key, args.csv_caption_key, args.csv_separator)


def run_pack(args: argparse.Namespace) -> int:
    from alignclip.data.pack import pack

    summary = pack(_spec(args), args.out, samples_per_shard=args.samples_per_shard, num_samples=args.num_samples,
                   image_format=args.image_format, image_size=args.image_size, seed=args.seed, quality=args.quality,
                   overwrite=args.overwrite)  # bad input raises: cli/errors.py reports it (one line, exit 2)
    print(summary)
    return 0


def _input_size(args: argparse.Namespace) -> tuple[int, str]:
    """--image-size, else the input size of --preset (default: the preset `alignclip train` uses)."""
    if args.image_size is not None:
        return args.image_size, "--image-size"
    from alignclip.models.config import load_model_config
    from alignclip.training.config import ModelSection

    preset = args.preset or ModelSection.preset
    return load_model_config(preset).vision_cfg.image_size, f"preset {preset}; --preset or --image-size to change"


def run_embed_captions(args: argparse.Namespace) -> int:
    from alignclip.semantic.embed import embed_captions

    if args.batch_size < 1 or args.flush_every < 1 or args.wait_s <= 0:
        raise ValueError("--batch-size and --flush-every must be >= 1 and --wait-s > 0")
    return embed_captions(_spec(args), args.semantic_model, args.cache_dir, args.device, args.batch_size,
                          args.num_samples, args.seed, args.wait_s, args.flush_every)


def run_inspect(args: argparse.Namespace) -> int:
    from torch.utils.data import IterableDataset

    from alignclip.data.shards import BadSample
    from alignclip.data.sources import create_dataset

    size, why = _input_size(args)
    print(f"images at the model's input size: {size} x {size} px ({why})")
    dataset = create_dataset(_spec(args), image_size=size, train=False)
    if isinstance(dataset, IterableDataset):
        print(f"{args.source}: {type(dataset).__name__}, {len(dataset.shards)} shards")  # type: ignore[attr-defined]
        samples = itertools.islice(iter(dataset), args.num)
    else:
        print(f"{args.source}: {type(dataset).__name__}, {len(dataset)} samples")
        samples = (dataset[i] for i in range(min(args.num, len(dataset))))
    bad = 0
    for i, sample in enumerate(samples):
        if isinstance(sample, BadSample):
            bad += 1
            print(f"  [{i}] bad sample {sample.source}: {sample.reason}")
        else:
            print(f"  [{i}] {tuple(sample['image'].shape)} {sample['caption']!r}")
    print(f"{bad} bad samples among those loaded")
    return 0
