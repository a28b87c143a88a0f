"""A run's folder: made fresh by rank 0 and shared with the other ranks, and removed again when a start fails before
anything worth keeping (a checkpoint, a logged step) was written into it."""
from __future__ import annotations

import shutil
from pathlib import Path

from alignclip.fileio import timestamp, unique_dir

from .config import TrainConfig
from .distributed import broadcast_object
from .metrics import METRICS_FILE


def new_run_dir(out_root: str | Path, name: str | None, method: str, preset: str) -> Path:
    """A fresh run folder: `name` (must not hold a run yet), or `<timestamp>-<method>-<preset>` made unique."""
    root = Path(out_root)
    if name is not None:
        run_dir = root / name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ValueError(f"run directory {run_dir} already exists; resume it with --resume latest "
                             f"(and --set logging.name={name}), or pick another logging.name")
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    return unique_dir(root, f"{timestamp()}-{method}-{Path(preset).stem}")


def discard_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds nothing worth keeping yet (no checkpoint, no logged step)."""
    from alignclip.rundir import RunDir

    logged = run_dir / METRICS_FILE
    if RunDir(run_dir).latest is None and not (logged.is_file() and logged.stat().st_size > 0):
        shutil.rmtree(run_dir, ignore_errors=True)


def open_run_dir(config: TrainConfig, is_main: bool) -> Path:
    """A new run folder, made by rank 0 and shared with the others (every rank fails alike)."""
    c, made, error = config, None, None
    if is_main:
        try:
            made = str(new_run_dir(c.logging.out, c.logging.name, c.method, c.model_name))
        except ValueError as e:
            error = str(e)
        except OSError as e:  # PermissionError, a read-only or full disk
            error = f"cannot create a run folder under {c.logging.out}: {e.strerror or e} ({e.filename})"
    made, error = broadcast_object((made, error))  # type: ignore[misc]
    if error:
        raise ValueError(error)
    return Path(made)  # type: ignore[arg-type]
