"""The model a run starts from: a fresh one from `model.preset`, or the weights of `model.init_from` (post-training
a CLIP someone already has). Weights only: the optimizer and schedule start fresh at step 0, and the checkpoint,
not the config, fixes the architecture and the model config."""
from __future__ import annotations

from pathlib import Path

from alignclip.models.base import ContrastiveModel

from alignclip.rundir import resolve_checkpoint

from .config import TrainConfig, check_architecture


def resolve_init_from(path: str) -> Path:
    """A checkpoint file or folder as given, or a training run folder (its best, else newest, checkpoint)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"model.init_from: {path} not found")
    return resolve_checkpoint(path, "model.init_from")


def _load(path: Path, config: str | None) -> ContrastiveModel:
    from alignclip.models.checkpoint import load_checkpoint
    return load_checkpoint(path, config=config)


def build_model(config: TrainConfig, resume_from: Path | None = None) -> ContrastiveModel:
    """The run's model on CPU. Resuming a post-training run rebuilds it from the resumed checkpoint (our format,
    which records the model config), so the original init_from file need not exist any more."""
    from alignclip.models.factory import create_model

    m = config.model
    if not m.init_from:
        return create_model(m.preset, architecture=config.architecture, seed=config.runtime.seed)
    if resume_from is not None:
        model = _load(resume_from, None)
    else:
        model = _load(resolve_init_from(m.init_from), m.init_config)
    arch = model.architecture
    if m.architecture is not None and m.architecture != arch:
        raise ValueError(f"bad value for 'model.architecture': {m.architecture!r} contradicts model.init_from, a "
                         f"{arch!r} model (leave model.architecture unset: the checkpoint fixes it)")
    check_architecture(config.method, arch, f"model.init_from {m.init_from} holds architecture")
    return model
