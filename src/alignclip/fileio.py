"""File helpers written once: atomic writes (checkpoints, the caption cache) and fresh output folders (runs, demos)."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Have `write` fill a unique temp file beside `path`, fsync it, then os.replace it into place.

    Readers see the old file or the new one, never a partial one; concurrent writers never share a temp name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        umask = os.umask(0o022)  # read it (no getter exists), put it back
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # what open() gives; safetensors creates its files 0600
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def unique_dir(parent: str | Path, stem: str, attempts: int = 1000) -> Path:
    """Create parent/stem, or parent/stem-2, stem-3 ... if taken, and return it.

    mkdir without exist_ok is the claim: two processes started in the same second never share a folder, and a
    rerun never writes into an earlier run's.
    """
    base = Path(parent) / stem
    for n in range(1, attempts + 1):
        candidate = base if n == 1 else base.with_name(f"{stem}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new folder {base}[-N] after {attempts} tries")


def timestamp() -> str:
    """Local time as it starts run and demo folder names: YYYYmmdd-HHMMSS (sorts by time)."""
    return time.strftime("%Y%m%d-%H%M%S")
