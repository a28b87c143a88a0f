"""The `alignclip` command: each area registers its own subcommands (train, data, eval, gap, compare, demo,
interpolate)."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

import alignclip

# The subcommand module (exposing register(subparsers)) of each command, imported lazily: `alignclip train ...`
# imports only cli/train.py (not the demo's torch). A command missing here still works: the parser then registers
# every module.
COMMAND_MODULE = {"demo": "demo", "train": "train", "data": "data", "eval": "evaluate", "embed": "evaluate",
                  "gap": "evaluate", "compare": "evaluate", "export": "export", "interpolate": "interpolate"}
COMMAND_MODULES = tuple(dict.fromkeys(COMMAND_MODULE.values()))  # each module once, in the order above


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `alignclip` parser; with `command`, only the module that registers it is imported."""
    parser = argparse.ArgumentParser(
        prog="alignclip",
        description="Train and measure CLIP, SharedCLIP and AlignCLIP: image-text models with a smaller "
                    "modality gap. Run `alignclip demo` first.")
    parser.add_argument("--version", action="version", version=f"alignclip {alignclip.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [COMMAND_MODULE[command]] if command in COMMAND_MODULE else COMMAND_MODULES:
        try:
            module = importlib.import_module(f"alignclip.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"alignclip.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`alignclip COMMAND ...`; failures follow the one CLI policy (cli/errors.py)."""
    from alignclip.cli.errors import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
