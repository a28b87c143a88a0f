"""Training checkpoints: one directory per step, written under a temporary name and renamed into place.

Layout: <run>/checkpoints/step_000123/{model.safetensors + model config JSON (alignclip.save_checkpoint),
trainer_state.pt}. A directory named step_* is always complete (the rename is the commit), so a run killed at any
instant leaves only whole checkpoints; `latest` is simply the highest complete step.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(checkpoint_root: str | Path) -> list[Path]:
    """Complete checkpoint directories, oldest step first."""
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))
             and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_root: str | Path) -> Path | None:
    found = list_checkpoints(checkpoint_root)
    return found[-1] if found else None


def resolve_resume(resume: str, out_root: str | Path, name: str | None) -> Path:
    """'latest' (of run `name`, or of the most recently written run under `out_root`), a run dir or a checkpoint."""
    if resume == "latest":
        if name is not None:
            run_dirs = [Path(out_root) / name]
        else:
            root = Path(out_root)
            run_dirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        candidates = [c for d in run_dirs if (c := latest_checkpoint(d / "checkpoints")) is not None]
        if not candidates:
            where = Path(out_root) / name if name else Path(out_root)
            raise FileNotFoundError(f"--resume latest: no checkpoint found under {where}")
        return max(candidates, key=lambda c: (c / STATE_FILE).stat().st_mtime)
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"--resume {resume}: run directory has no complete checkpoint")
        return latest
    raise FileNotFoundError(f"--resume {resume}: not a checkpoint directory (with {STATE_FILE}) or a run directory")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_weights(model: nn.Module, directory: Path) -> None:
    from alignclip.models.checkpoint import save_checkpoint
    save_checkpoint(model, directory)


def load_weights(model: nn.Module, directory: str | Path) -> None:
    """Load a checkpoint's weights into an existing model (same architecture and shapes), strictly."""
    from safetensors.torch import load_file

    from alignclip.models.checkpoint import WEIGHTS_NAME, load_state_dict_strict
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME} (not a complete training checkpoint)")
    load_state_dict_strict(model, load_file(str(path), device="cpu"), str(path))  # type: ignore[arg-type]


def save_training_checkpoint(run_dir: str | Path, step: int, model: nn.Module, state: dict[str, Any],
                             keep_last: int) -> Path:
    """Write <run>/checkpoints/step_N atomically, then prune to the newest `keep_last` (0 keeps all)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_dir_name(step)
    if (final / STATE_FILE).is_file():
        return final  # this step is already saved (e.g. a signal right after a periodic checkpoint)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _write_weights(model, tmp)
    with open(tmp / STATE_FILE, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    for file in tmp.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # an incomplete leftover with the final name cannot happen via rename; be safe anyway
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    if keep_last > 0:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """weights_only=True: a checkpoint holds tensors, numbers, strings and containers only, never pickled code."""
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
