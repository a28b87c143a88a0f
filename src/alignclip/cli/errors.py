"""The one CLI error policy: which failures are the user's (one line, no traceback) and which exit code each gets.

Every command goes through `run_command` (cli/main.py for `alignclip ...`, cli/train.py for `python -m
alignclip.cli.train`, which torchrun launches), so a bad flag reads the same everywhere and a scheduler can tell
"fix your settings" (2) from "the run failed" (1). Anything not listed is a bug and keeps its traceback;
ALIGNCLIP_DEBUG=1 shows the traceback of every failure.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

PREFIX = "alignclip: error: "
BAD_INPUT, RUN_FAILED, INTERRUPTED = 2, 1, 130  # exit codes (130: 128 + SIGINT, the shell's convention)
# Bad settings, paths or data given by the user. Checked before OSError: a missing file is the user's to fix.
BAD_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError)


class CommandFailed(RuntimeError):
    """Raise for "the work ran and failed" (not the user's input): one line, exit 1."""


def exit_code(error: BaseException) -> int | None:
    """The exit code of a user-facing failure; None for a bug (re-raised with its traceback)."""
    if isinstance(error, BAD_INPUT_ERRORS):
        return BAD_INPUT
    # RuntimeError covers NonFiniteLossError, DistributedTimeout and CommandFailed; OSError a full disk or a folder
    # we may not write.
    if isinstance(error, (RuntimeError, OSError)):
        return RUN_FAILED
    return None


def message(error: BaseException) -> str:
    """An OSError names its path ("No space left on device: runs/x") instead of '[Errno 28] ...'."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return str(error) or type(error).__name__


def run_command(func: Callable[..., Any], *args: Any, interrupted: str = "interrupted") -> int:
    """func(*args) as a command: its int result (None: 0), or the policy's exit code and one line on stderr."""
    try:
        return int(func(*args) or 0)
    except KeyboardInterrupt:
        if os.environ.get("ALIGNCLIP_DEBUG"):
            raise
        print(f"alignclip: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:  # noqa: BLE001 - classified below; bugs are re-raised
        code = exit_code(error)
        if code is None or os.environ.get("ALIGNCLIP_DEBUG"):
            raise
        print(PREFIX + message(error), file=sys.stderr)
        return code
