"""`alignclip interpolate BASE TUNED --alpha 0.25,0.5,0.75 --out DIR`: WiSE-FT checkpoints between two models."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write checkpoints (1-a)*BASE + a*TUNED (WiSE-FT): the gap/accuracy trade-off without training"
EPILOG = """\
Each DIR/alpha_A is an ordinary checkpoint (`alignclip eval` reads it; its config.json records the two models and
A). Evaluate each, then `alignclip compare DIR/.../eval ...` draws l2m against accuracy, one line per tuned model:

  alignclip interpolate runs/clip/checkpoints/step_000360 runs/post/checkpoints/step_000120 \\
      --alpha 0,0.25,0.5,0.75,1 --out runs/wise
  for a in 0 0.25 0.5 0.75 1; do alignclip eval runs/wise/alpha_$a --out runs/wise/alpha_$a/eval; done
  alignclip compare runs/wise/alpha_*/eval --out runs/wise/compare"""


def alpha_dir(out: str | Path, alpha: float) -> Path:
    return Path(out) / f"alpha_{alpha:g}"


def run(args: argparse.Namespace) -> int:
    import alignclip
    from alignclip.models.checkpoint import save_checkpoint
    from alignclip.models.interpolate import interpolate_state_dicts, parse_alphas

    alphas = parse_alphas(args.alpha)
    base = alignclip.load_checkpoint(args.base, config=args.model_config)
    tuned = alignclip.load_checkpoint(args.tuned, config=args.model_config)
    if base.architecture != tuned.architecture:
        raise ValueError(f"cannot interpolate a {base.architecture!r} model with a {tuned.architecture!r} one "
                         "(both must have the same architecture)")
    base_config, tuned_config = base.config.to_dict(), tuned.config.to_dict()
    differ = [k for k in base_config if base_config[k] != tuned_config.get(k)]
    if differ:
        raise ValueError(f"cannot interpolate models of different configs: {differ[0]} is {base_config[differ[0]]!r}"
                         f" in the base and {tuned_config.get(differ[0])!r} in the tuned model")
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    for alpha in alphas:
        base.load_state_dict(interpolate_state_dicts(base_state, tuned_state, alpha))
        path = save_checkpoint(base, alpha_dir(args.out, alpha), metadata={"interpolation": {
            "base": str(args.base), "tuned": str(args.tuned), "alpha": alpha}})
        print(f"wrote {path} (alpha {alpha:g})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("interpolate", help=HELP, description=HELP, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", metavar="BASE", help="the model before fine-tuning (any checkpoint alignclip reads)")
    p.add_argument("tuned", metavar="TUNED", help="the fine-tuned model, same architecture and shapes")
    p.add_argument("--alpha", required=True, help="comma-separated weights of TUNED in [0, 1], e.g. 0.25,0.5,0.75")
    p.add_argument("--out", required=True, help="folder for the checkpoints DIR/alpha_A")
    p.add_argument("--model-config", default=None, metavar="CONFIG", help="as for `alignclip eval`")
    p.set_defaults(func=run)
