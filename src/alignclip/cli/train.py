"""`alignclip train`: train CLIP, SharedCLIP or AlignCLIP from flags, a YAML/TOML config and KEY=VALUE overrides."""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Train an image-text model. With no arguments: AlignCLIP on the `tiny` preset with the built-in synthetic
shapes dataset, on CPU in a few minutes. Results go to a new folder runs/<time>-<method>-<preset>/ holding
config.yaml (the resolved config), metrics.jsonl, tensorboard/ and checkpoints/step_NNNNNN/.

Settings come from, in order: defaults < the run being resumed < --recipe < --config FILE < the flags below
< --set.
Every config key can be set with --set section.key=value (values parsed as YAML: 1e-3, true, null, [0.9, 0.98])."""

EPILOG = """\
methods:
  clip        two towers (image ViT + text transformer), CLIP contrastive loss
  sharedclip  one shared transformer for both modalities, CLIP loss
  alignclip   shared transformer + intra-modality separation (IMSep) weighted by caption semantic distance;
              with --architecture clip (or a two-tower --init-from checkpoint): IMSep on the two towers

examples:
  alignclip train                                      # tiny AlignCLIP on synthetic data, CPU, a few minutes
  alignclip train --method clip --steps 500            # the CLIP baseline, same data
  alignclip train --method clip --loss sigmoid         # a SigLIP: the sigmoid loss with a learned logit bias
  alignclip train --set loss.separation_warmup_steps=0     # the paper's constant IMSep weight (no ramp)
  alignclip train --preset small --batch-size 256 --set optim.lr=1e-3 --set loss.beta=0.25
  alignclip train --data csv:data/train.csv --set data.csv_image_key=filepath --set data.csv_caption_key=title
  alignclip train --data 'wds:shards/train-{000000..000099}.tar' --set data.num_samples=1000000 --epochs 5
  alignclip train --config configs/alignclip_small.yaml --name my-run
  alignclip train --resume latest                      # continue the most recent run under runs/
  alignclip train --resume runs/my-run --steps 5000    # continue a run, training longer
  alignclip train --recipe posttrain --init-from runs/my-clip-run --steps 120   # close the gap of a trained CLIP
  alignclip train --recipe posttrain --init-from ViT-B-16.pt --init-config ViT-B-16 --data csv:pairs.csv
  alignclip train --recipe posttrain-keep --init-from runs/my-clip-run     # IMSep + distillation from the start
  alignclip train --recipe posttrain --init-from runs/my-clip-run --lora-rank 8   # LoRA adapters only
  alignclip train --recipe posttrain --init-from runs/my-clip-run --data csv:train.csv --eval-data csv:val.csv \
      --eval-every 50 --keep-best heldout/l2m          # watch the held-out gap, keep its best checkpoint
  alignclip train --recipe posttrain --init-from runs/my-siglip-run   # a SigLIP: sigmoid loss + IMSep (auto)
  torchrun --nproc_per_node 4 -m alignclip.cli.train --config cfg.yaml   # 4 GPUs (DDP); --batch-size is global

config file (YAML; TOML works the same with [sections]):
  method: alignclip
  model: {preset: small}
  optim: {lr: 5.0e-4, batch_size: 256, steps: 2000, warmup_steps: 100}
  loss: {beta: 0.5, separation_warmup_steps: 200}

Ctrl-C or SIGTERM saves a checkpoint at the next step and exits (code 130 / 143: not finished); --resume continues
exactly where it stopped. Resuming with another method, model or data is an error unless
--set resume_allow_changes=true. Exit codes: 0 done, 1 training failed, 2 bad settings or data."""

# Stopped by a signal: a checkpoint was saved and --resume continues; non-zero so a scheduler sees the run as not
# finished (128 + the signal number, the shell's convention).
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}

# flag -> config key (None values are "not given")
FLAG_KEYS = {"method": "method", "preset": "model.preset", "data": "data.train", "steps": "optim.steps",
             "epochs": "optim.epochs", "batch_size": "optim.batch_size", "lr": "optim.lr", "device": "runtime.device",
             "precision": "runtime.precision", "workers": "data.workers", "seed": "runtime.seed",
             "out": "logging.out", "name": "logging.name", "architecture": "model.architecture",
             "init_from": "model.init_from", "init_config": "model.init_config", "loss": "loss.contrastive",
             "eval_data": "eval.data",
             "eval_every": "eval.every", "keep_best": "eval.keep_best", "lock_image": "adapt.lock_image",
             "lock_text": "adapt.lock_text", "lora_rank": "adapt.lora_rank",
             "lock_image_unlocked_groups": "adapt.lock_image_unlocked_groups",
             "lock_image_freeze_norm": "adapt.lock_image_freeze_norm",
             "lock_text_unlocked_layers": "adapt.lock_text_unlocked_layers",
             "lock_text_freeze_layer_norm": "adapt.lock_text_freeze_layer_norm"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from alignclip.training.config import METHODS
    from alignclip.training.recipes import RECIPES
    p.add_argument("--config", metavar="FILE", help="YAML (.yaml/.yml) or TOML (.toml) config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--method", choices=METHODS, help="what to train (default: alignclip)")
    p.add_argument("--preset", help="model preset (tiny, small, ViT-B-16, ...) or a JSON model config path")
    p.add_argument("--loss", choices=["auto", "infonce", "sigmoid"],
                   help="image-text loss: infonce (CLIP), sigmoid (SigLIP; a fresh model gets its logit bias -10 "
                        "and temperature 10); default auto: sigmoid for a model with a logit bias, else infonce")
    p.add_argument("--architecture", choices=["clip", "shared"],
                   help="two towers (clip) or one shared transformer; default: the method's (alignclip: shared)")
    p.add_argument("--init-from", metavar="PATH",
                   help="post-train: start from these weights (our checkpoint or run folder, open_clip/OpenAI/"
                        "AlignCLIP .pt, ...) with a fresh optimizer; the checkpoint fixes the architecture")
    p.add_argument("--init-config", metavar="CONFIG",
                   help="how to read --init-from: preset name, JSON model config, open_clip JSON or model name")
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="preset overrides below --config, flags and --set; " + "; ".join(
                       f"{name}: {_recipe_text(name)}" for name in RECIPES))
    p.add_argument("--lock-image", action="store_true", default=None, help="freeze the image tower (open_clip's)")
    p.add_argument("--lock-image-unlocked-groups", type=int, metavar="N",
                   help="with --lock-image: train its last N groups (projection first, then ln_post + last block)")
    p.add_argument("--lock-image-freeze-norm", action="store_true", default=None,
                   help="with --lock-image: the unlocked groups' LayerNorms stay frozen (open_clip's "
                        "--lock-image-freeze-bn-stats, for a ViT)")
    p.add_argument("--lock-text", action="store_true", default=None, help="freeze the text tower (open_clip's)")
    p.add_argument("--lock-text-unlocked-layers", type=int, metavar="N",
                   help="with --lock-text: train its last N groups (projection first, then ln_final + last block)")
    p.add_argument("--lock-text-freeze-layer-norm", action="store_true", default=None,
                   help="with --lock-text: the unlocked groups' LayerNorms stay frozen")
    p.add_argument("--lora-rank", type=int, metavar="R",
                   help="train LoRA adapters of rank R (peft) on the attention and MLP projections instead of the "
                        "weights; checkpoints hold the merged weights")
    p.add_argument("--data", metavar="SPEC", help="training data: synthetic, csv:PATH, tsv:PATH, captions:DIR (image + "
                                                      "same-name .txt) or wds:PATTERN (local, pipe:, http(s))")
    p.add_argument("--steps", type=int, help="optimizer steps to train (overrides --epochs)")
    p.add_argument("--epochs", type=int, help="epochs to train (default: 2)")
    p.add_argument("--batch-size", type=int, help="GLOBAL batch size (all GPUs, all accumulation steps)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 5e-4)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: auto (cuda when available)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="default: auto = fp32 on CPU, bf16 autocast on GPU (fp16 + GradScaler if no bf16)")
    p.add_argument("--workers", type=int, help="DataLoader workers per process (default: 2)")
    p.add_argument("--seed", type=int, help="seed of the weights, the data order and every RNG (default: 0)")
    p.add_argument("--out", metavar="DIR", help="root folder for run directories (default: runs)")
    p.add_argument("--name", help="run directory name (default: a new timestamped folder)")
    p.add_argument("--resume", metavar="latest|PATH",
                   help="continue from 'latest' (of --name, else the newest run under --out), a run folder, "
                        "or a checkpoint folder; the run's saved config is the starting point")
    p.add_argument("--eval-data", metavar="SPEC",
                   help="held-out data evaluated during the run (anything `alignclip eval --dataset` takes): gap, "
                        "retrieval and zero-shot under heldout/... in metrics.jsonl and TensorBoard")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help="optimizer steps between held-out evaluations (default: 0 = before and after training)")
    p.add_argument("--keep-best", metavar="METRIC",
                   help="keep the best checkpoint by this held-out metric as checkpoints/best, e.g. heldout/l2m")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def _recipe_text(name: str) -> str:
    from alignclip.training.recipes import RECIPES
    return " ".join(f"{key}={value}" for key, value in RECIPES[name].items())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train CLIP / SharedCLIP / AlignCLIP", description=DESCRIPTION,
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):  # -> TrainConfig (import kept lazy for a fast --help)
    """The run's config from the parsed flags: one call of training.resolve.resolve_config (its docstring: order)."""
    from alignclip.training.resolve import resolve_config

    flags = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None}
    return resolve_config(args.config, args.recipe, flags, args.overrides, args.resume)


def run(args: argparse.Namespace) -> int:
    """Train (or --print-config); failures follow the one CLI policy (cli/errors.py): 2 bad settings, 1 failed."""
    from alignclip.cli.errors import run_command

    return run_command(_run, args, interrupted="interrupted (second Ctrl-C): no checkpoint written for the current "
                                               "step")


def _run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.print_config:
        import yaml
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    from alignclip.training import train
    return EXIT_CODES.get(train(config).stopped_by, 0)


def main(argv: list[str] | None = None) -> int:
    """`python -m alignclip.cli.train ...` (what torchrun launches) is the same as `alignclip train ...`."""
    parser = argparse.ArgumentParser(prog="alignclip train", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
