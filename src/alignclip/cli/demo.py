"""`alignclip demo`: the paper's claim, shown on a laptop CPU."""
from __future__ import annotations

import argparse

from pathlib import Path

from alignclip.demo.clipart import BENCHMARK, benchmark_settings
from alignclip.demo.run import DEMO_METHODS, POSTTRAIN_METHODS, DemoSettings, run_demo

EPILOG = """examples:
  alignclip demo                      # four methods + three post-training rows, 2 seeds, ~10 min on 2 CPU cores
  alignclip demo --quick              # a < 2 minute smoke test of the whole pipeline
  alignclip demo --methods clip,alignclip-nw --steps 400 --seeds 3 --posttrain none
  alignclip demo --preset small --budget 200000 --device cuda
  alignclip demo --benchmark clipart  # real data: Debian's Open Clip Art, 3 seeds, ~15 min on 2 CPU cores
  alignclip demo --data tsv:train.tsv --eval-data tsv:heldout.tsv --zeroshot fashion-mnist --steps 300

methods: clip (two towers + CLIP loss), sharedclip (shared transformer + CLIP loss),
alignclip (shared + the paper's IMSep loss), alignclip-nw (shared + IMSep with our negatives weighting).
Both AlignCLIP rows ramp the separation weight in over the first 30% of the steps. Every method gets the same
preset, data, seeds, schedule and number of samples. Post-training rows start from the same seed's trained clip
and add a third of its steps: clip+clip (more CLIP), clip+imsep-nw / clip+imsep (IMSep on the two-tower model,
negatives / paper weighting). Seeds change weights and data order; the data and held-out set stay fixed.
"""


def run(args: argparse.Namespace) -> int:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    chosen = {k: v for k, v in {"methods": methods, "preset": args.preset, "budget": args.budget,
                                "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                "eval_samples": args.eval_samples, "seed": args.seed, "device": args.device,
                                "out": args.out, "workers": args.workers, "seeds": args.seeds,
                                "train_data": args.data, "eval_data": args.eval_data}.items()
              if v is not None}
    if args.posttrain is not None:
        chosen["posttrain"] = tuple(m.strip() for m in args.posttrain.split(",") if m.strip() not in ("", "none"))
    if args.zeroshot is not None:
        chosen["zeroshot"] = None if args.zeroshot == "none" else args.zeroshot
    if args.benchmark == "clipart":
        if args.quick or args.data or args.eval_data:
            raise ValueError("--benchmark builds its own data; drop --quick / --data / --eval-data")
        settings = benchmark_settings(args.clipart_dir or Path(args.out or "runs") / "clipart-data", **chosen)
    else:
        settings = DemoSettings.quick(**chosen) if args.quick else DemoSettings(**chosen)
    run_demo(settings)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train CLIP, SharedCLIP and AlignCLIP on the built-in dataset and compare them",
        description="Train CLIP, SharedCLIP, AlignCLIP and AlignCLIP-NW on the built-in synthetic dataset with "
                    "the same budget, evaluate all of them on the same held-out samples (modality-gap measures, "
                    "zero-shot, retrieval, STS, linear probe) and write a report folder with a comparison table.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(DEMO_METHODS),
                        help=f"comma-separated subset of {', '.join(DEMO_METHODS)} (default: all)")
    parser.add_argument("--posttrain", help=f"post-training rows, a subset of {', '.join(POSTTRAIN_METHODS)}, "
                        "or none (default: all)")
    parser.add_argument("--seeds", type=int, help="training seeds per method (default 2): mean ± std over them")
    parser.add_argument("--quick", action="store_true", help="a tiny run (< 2 minutes) that checks the pipeline")
    parser.add_argument("--budget", type=int, help="training samples per method (default 25600)")
    parser.add_argument("--steps", type=int, help="optimizer steps per method (overrides --budget)")
    parser.add_argument("--batch-size", type=int, help="samples per step (default 128)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    parser.add_argument("--preset", help="model preset (default tiny)")
    parser.add_argument("--eval-samples", type=int, help="held-out samples for evaluation (default 1000)")
    parser.add_argument("--seed", type=int,
                        help="first training seed; also fixes the data and the held-out set (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: a GPU when there is one")
    parser.add_argument("--workers", type=int, help="data-loading worker processes (default 1)")
    parser.add_argument("--data", help="train on your pairs instead (csv:/tsv:/captions:/wds:); needs --eval-data")
    parser.add_argument("--eval-data", help="held-out pairs (csv:/tsv:/captions:/wds:) for the gap and retrieval")
    parser.add_argument("--zeroshot", help="with --eval-data: also zero-shot on this labelled set (fashion-mnist, "
                        "classes:DIR), or none")
    parser.add_argument("--benchmark", choices=("clipart",),
                        help="clipart: build a train / held-out split of Debian's openclipart-png + openclipart-svg "
                        f"and run on it ({BENCHMARK['seeds']} seeds, {BENCHMARK['steps']} steps x "
                        f"{BENCHMARK['batch_size']}, zero-shot Fashion-MNIST when installed)")
    parser.add_argument("--clipart-dir", help="where --benchmark clipart writes its split (default OUT/clipart-data; "
                        "reused when it exists)")
    parser.add_argument("--out", help="root folder; each run writes a new demo-TIMESTAMP folder (default runs)")
    parser.set_defaults(func=run)
