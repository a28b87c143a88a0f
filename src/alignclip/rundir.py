"""A training run folder, resolved in one place: `<run>/config.yaml` (the resolved settings) and
`<run>/checkpoints/step_NNNNNN/` (each complete once its trainer state is in it), plus `checkpoints/best/` when
something keeps one. Pure pathlib, no torch: the config resolver, the trainer, `--init-from` and every command that
reads a checkpoint (eval, embed, export) use it, so a run folder means the same checkpoint everywhere."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "model.safetensors"
STEP_DIR = re.compile(r"^step_(\d+)$")


def list_checkpoints(checkpoint_root: str | Path) -> list[Path]:
    """Complete step_N checkpoint directories, oldest step first."""
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))
             and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_root: str | Path) -> Path | None:
    found = list_checkpoints(checkpoint_root)
    return found[-1] if found else None


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest(self) -> Path | None:
        """The newest complete step: what a resume continues from."""
        return latest_checkpoint(self.checkpoints)

    @property
    def best(self) -> Path | None:
        best = self.checkpoints / "best"
        return best if (best / WEIGHTS_FILE).is_file() else None

    @property
    def chosen(self) -> Path | None:
        """The checkpoint a reader of the run's weights gets: `best` when it exists, else the newest."""
        return self.best or self.latest

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return (Path(path) / "checkpoints").is_dir()

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir | None:
        """The run a checkpoint folder belongs to (`<run>/checkpoints/<ckpt>`), or the run folder itself."""
        path = Path(checkpoint)
        if cls.is_run(path):
            return cls(path)
        if path.parent.name == "checkpoints":
            return cls(path.parent.parent)
        return None


def resolve_checkpoint(path: str | Path, setting: str = "checkpoint") -> Path:
    """A checkpoint as given, or for a run folder its `best` (else newest) checkpoint, said on stderr in one line.
    `setting` names the flag in the error when the run has no complete checkpoint."""
    path = Path(path)
    if not RunDir.is_run(path):
        return path
    run = RunDir(path)
    chosen = run.chosen
    if chosen is None:
        raise FileNotFoundError(f"{setting}: run folder {path} has no complete checkpoint in {run.checkpoints}")
    which = "best" if chosen == run.best else f"newest of {len(list_checkpoints(run.checkpoints))}"
    print(f"alignclip: run folder {path}: using checkpoint {chosen} ({which})", file=sys.stderr)
    return chosen
