"""Training checkpoints: one directory per step, written under a temporary name and renamed into place.

Layout: <run>/checkpoints/step_000123/{model.safetensors + model config JSON (alignclip.save_checkpoint),
trainer_state.pt}. A directory named step_* is always complete (the rename is the commit), so a run killed at any
instant leaves only whole checkpoints; `latest` is simply the highest complete step. Old checkpoints are renamed to
.old-step_N-PID before they are deleted, for the same reason. What a kill can leave (.tmp-/.old- folders of dead
processes) is removed by `clean_debris` when the run is resumed.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignclip.rundir import STATE_FILE, STEP_DIR, RunDir, list_checkpoints

from .config import TrainConfig, changed_settings

_DEBRIS = re.compile(r"^\.(tmp|old)-step_\d+-(\d+)$")  # .tmp-: a save in progress; .old-: a prune in progress
STATE_KEYS = ("step", "epoch", "batch_in_epoch", "samples", "skipped", "attempted", "optimizer", "schedule", "rng",
              "batch_size", "config")


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def resolve_resume(resume: str, out_root: str | Path, name: str | None) -> Path:
    """'latest' (of run `name`, or of the most recently written run under `out_root`), a run dir or a checkpoint.
    A resume continues from the newest step, never from `best`."""
    if resume == "latest":
        if name is not None:
            run_dirs = [Path(out_root) / name]
        else:
            root = Path(out_root)
            run_dirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        candidates = [c for d in run_dirs if (c := RunDir(d).latest) is not None]
        if not candidates:
            where = Path(out_root) / name if name else Path(out_root)
            raise FileNotFoundError(f"--resume latest: no checkpoint found under {where}")
        return max(candidates, key=lambda c: (c / STATE_FILE).stat().st_mtime)
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    if RunDir.is_run(path):
        latest = RunDir(path).latest
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
    from alignclip.models.checkpoint import WEIGHTS_NAME
    from alignclip.models.weights import load_state_dict_strict, read_state_dict

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME} (not a complete training checkpoint)")
    load_state_dict_strict(model, read_state_dict(path), str(path))  # type: ignore[arg-type]


def nonfinite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding NaN or inf: such weights are never written as a checkpoint."""
    return [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return f"(os error {errno.ENOSPC})" in str(error)  # safetensors reports the OS error inside its own type


class _RecordingWriter:
    """torch.save turns a failed write of its file object into 'unexpected pos N vs M': keep the OSError behind it."""

    def __init__(self, file: Any) -> None:
        self.file, self.error = file, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def _write_state(state: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as f:
        writer = _RecordingWriter(f)
        try:
            torch.save(state, writer)  # type: ignore[arg-type]
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise
        f.flush()
        os.fsync(f.fileno())


def save_training_checkpoint(run_dir: str | Path, step: int, model: nn.Module, state: dict[str, Any],
                             keep_last: int) -> Path:
    """Write <run>/checkpoints/step_N atomically, then prune to the newest `keep_last` (0 keeps all)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_dir_name(step)
    if (final / STATE_FILE).is_file():
        return final  # this step is already saved (e.g. a signal right after a periodic checkpoint)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_weights(model, tmp)
        _write_state(state, tmp / STATE_FILE)
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():  # a step_N folder without its trainer state is incomplete: replace it
            _remove(final)
        os.replace(tmp, final)
    except BaseException as e:  # a failed or interrupted save leaves no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(e):
            raise OSError(errno.ENOSPC, f"no space left on device writing {final}") from None
        raise
    _fsync_dir(root)
    if keep_last > 0:
        for old in list_checkpoints(root)[:-keep_last]:
            _remove(old)
    return final


def _remove(directory: Path) -> None:
    """Rename, then delete: a kill midway leaves a .old- folder (cleaned later), never a half-deleted step_N."""
    doomed = directory.with_name(f".old-{directory.name}-{os.getpid()}")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.replace(directory, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # our own PID on a folder we did not make this run: a dead process's (PID reuse)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_debris(checkpoint_root: str | Path) -> list[Path]:
    """Remove what killed saves and prunes left: .tmp-/.old- folders of processes no longer alive (a live one may
    still be writing), and step_* folders without a trainer state (incomplete, so never a checkpoint)."""
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    removed = []
    for path in root.iterdir():
        match = _DEBRIS.match(path.name)
        stale = match is not None and not _alive(int(match.group(2)))
        incomplete = STEP_DIR.match(path.name) is not None and not (path / STATE_FILE).is_file()
        if path.is_dir() and (stale or incomplete):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def load_trainer_state(checkpoint: str | Path, keys: tuple[str, ...] = ("step",)) -> dict[str, Any]:
    """weights_only=True: a checkpoint holds tensors, numbers, strings and containers only, never pickled code.
    One-line errors for a corrupt, truncated or foreign file, or one without `keys` (the trainer asks STATE_KEYS)."""
    path = Path(checkpoint) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # objects beyond tensors/numbers/strings: refused, never run
        detail = [line for line in str(e).splitlines() if line.strip() and not line.startswith(
            ("Weights only load failed", "Please file", "Check the documentation"))]
        raise ValueError(f"{path}: not a trainer state: it holds pickled objects, which are never loaded "
                         f"({detail[0].strip() if detail else 'unsupported pickle'})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # truncated or corrupt zip
        raise ValueError(f"{path}: unreadable trainer state, truncated or corrupt ({str(e).split('. ')[0]})") \
            from None
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
    if missing:
        raise ValueError(f"{path}: not a trainer state (missing {', '.join(missing)})")
    return state


def checked_resume_state(config: TrainConfig, checkpoint: Path, is_main: bool) -> dict[str, Any]:
    """The checkpoint's trainer state, after checking that this run may continue it (same batch size, and
    the same method, model and data unless resume_allow_changes); rank 0 clears what killed saves left."""
    state = load_trainer_state(checkpoint, STATE_KEYS)
    if state["batch_size"] != config.optim.batch_size:
        raise ValueError(f"cannot resume: the checkpoint was trained with optim.batch_size={state['batch_size']}"
                         f", this run asks for {config.optim.batch_size} (the data position would not match)")
    changes = changed_settings(state["config"], config)
    if changes and not config.resume_allow_changes:
        raise ValueError(f"cannot resume {checkpoint} with other settings of what is trained: "
                         f"{'; '.join(changes)} (start a new run, or allow it with --set "
                         "resume_allow_changes=true)")
    if is_main:
        clean_debris(checkpoint.parent)
    return state
