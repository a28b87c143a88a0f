"""The `alignclip` command: each area registers its own subcommands (train, data, eval, gap, compare, demo)."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

import alignclip

# Subcommand modules, each exposing register(subparsers); imported lazily per run to keep `--help` quick.
COMMAND_MODULES = ("demo", "train", "data", "evaluate", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignclip",
        description="Train and measure CLIP, SharedCLIP and AlignCLIP: image-text models with a smaller "
                    "modality gap. Run `alignclip demo` first.")
    parser.add_argument("--version", action="version", version=f"alignclip {alignclip.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"alignclip.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"alignclip.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError) as e:
        # Expected user-facing failures: one line, no traceback (ALIGNCLIP_DEBUG=1 shows it).
        import os
        if os.environ.get("ALIGNCLIP_DEBUG"):
            raise
        print(f"alignclip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
