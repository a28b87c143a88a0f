"""The model a run starts from: a fresh one from `model.preset`, or the weights of `model.init_from` (post-training
a CLIP someone already has). Weights only: the optimizer and schedule start fresh at step 0, and the checkpoint,
not the config, fixes the architecture and the model config."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignclip.losses.sigmoid_loss import INIT_LOGIT_BIAS, INIT_LOGIT_SCALE
from alignclip.models.base import ContrastiveModel
from alignclip.models.config import load_model_config
from alignclip.rundir import resolve_checkpoint

from .config import TrainConfig, check_architecture
from .distributed import DistInfo


def resolve_init_from(path: str) -> Path:
    """A checkpoint file or folder as given, or a training run folder (its best, else newest, checkpoint)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"model.init_from: {path} not found")
    return resolve_checkpoint(path, "model.init_from")


def _load(path: Path, config: str | None) -> ContrastiveModel:
    from alignclip.models.checkpoint import load_checkpoint
    return load_checkpoint(path, config=config)


def add_logit_bias(model: ContrastiveModel, value: float = INIT_LOGIT_BIAS) -> None:
    """Give a model trained without one (a CLIP) SigLIP's learned logit bias, so it can post-train with the sigmoid
    loss; its temperature is kept (it is already trained). The model config records the bias, so checkpoints of
    the run load with it."""
    model.config = dataclasses.replace(model.config, logit_bias=value)
    model.logit_bias = nn.Parameter(torch.tensor(float(value), device=model.logit_scale.device))


def create_initial_model(config: TrainConfig, resume_from: Path | None = None) -> ContrastiveModel:
    """The run's model on CPU. Resuming a post-training run rebuilds it from the resumed checkpoint (our format,
    which records the model config), so the original init_from file need not exist any more."""
    from alignclip.models.factory import create_model

    m = config.model
    sigmoid = config.loss.contrastive == "sigmoid"
    if not m.init_from:
        model_config = load_model_config(m.preset)
        if sigmoid and model_config.logit_bias is None:  # SigLIP's start: t = 10, b = -10
            model_config = dataclasses.replace(model_config, logit_scale=INIT_LOGIT_SCALE, logit_bias=INIT_LOGIT_BIAS)
        return create_model(model_config, architecture=config.architecture, seed=config.runtime.seed)
    if resume_from is not None:
        model = _load(resume_from, None)
    else:
        model = _load(resolve_init_from(m.init_from), m.init_config)
        if sigmoid and model.logit_bias is None:
            add_logit_bias(model)
    arch = model.architecture
    if m.architecture is not None and m.architecture != arch:
        raise ValueError(f"bad value for 'model.architecture': {m.architecture!r} contradicts model.init_from, a "
                         f"{arch!r} model (leave model.architecture unset: the checkpoint fixes it)")
    check_architecture(config.method, arch, f"model.init_from {m.init_from} holds architecture")
    return model


def create_run_model(config: TrainConfig, device: torch.device, resume_from: Path | None = None,
                    state: dict[str, Any] | None = None) -> tuple[ContrastiveModel, ContrastiveModel | None]:
    """(the model to train, on `device`, with the resumed weights, locks and LoRA adapters in place; the HyCD
    teacher or None). Adapters go in after the resumed weights are loaded (the checkpoint holds plain merged
    weights) and before the optimizer sees the parameters; their exact unmerged tensors come from `state`."""
    from alignclip.models.adapt import adapt_model, load_adapter_state

    from .checkpoint import load_weights, nonfinite_weights
    from .teacher import create_teacher

    model = create_initial_model(config, resume_from)
    if resume_from is not None:
        load_weights(model, resume_from)
        if nonfinite_weights(model):  # a checkpoint copied in or edited by hand
            raise ValueError(f"cannot resume from {resume_from}: its weights are not finite (NaN/inf); resume "
                             "from an earlier checkpoint of the run")
    adapt_model(model, config.adapt)
    if state is not None and state.get("adapter"):
        load_adapter_state(model, state["adapter"], str(resume_from))
    return model.to(device), create_teacher(config, model, device, state)


def wrap_model(model: nn.Module, config: TrainConfig, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP across ranks, then torch.compile if asked (alignclip.models.base.unwrap undoes both)."""
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.runtime.compile:
        model = torch.compile(model)
    return model
