"""Atomic file writes, shared by checkpoints and the caption-embedding cache."""
from __future__ import annotations

import os
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
