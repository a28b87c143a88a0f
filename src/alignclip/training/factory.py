"""The parts a training run is assembled from, as plain functions of the config (open_clip's create_loss(args)
style): the Trainer class keeps only the loop, its state and checkpoints."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import STATE_KEYS, clean_debris, load_trainer_state
from .config import TrainConfig, changed_settings
from .distributed import DistInfo, broadcast_object
from .metrics import new_run_dir


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: fp32 on CPU (bf16 there is slow and lossy unless asked for), bf16 AMP on GPUs that have it, else fp16."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("runtime.precision=fp16 needs a CUDA device (use fp32 or bf16 on CPU)")
    return precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def contrastive_of(config: TrainConfig, model: nn.Module | None = None) -> str:
    """The image-text term a run trains: loss.contrastive, "auto" resolved by the model (a learned logit bias
    marks a SigLIP, trained with the sigmoid loss)."""
    if config.loss.contrastive != "auto":
        return config.loss.contrastive
    return "sigmoid" if getattr(model, "logit_bias", None) is not None else "infonce"


def create_loss(config: TrainConfig, embed_dim: int | None = None, teacher: nn.Module | None = None,
                model: nn.Module | None = None) -> nn.Module:
    """The method's contrastive loss (InfoNCE or sigmoid, `model` resolving loss.contrastive=auto), inside a
    CompositeLoss when HyCD or RaFA is on or when loss.alpha weights ClipLoss / SigLipLoss (AlignCLIPLoss and
    SigLipIMSepLoss apply their alpha themselves); `teacher`: training/teacher.py's, for HyCD."""
    from alignclip.losses import (AlignCLIPLoss, ClipLoss, CompositeLoss, HyCDLoss, RaFALoss, SigLipIMSepLoss,
                                  SigLipLoss)

    ls = config.loss
    sigmoid = contrastive_of(config, model) == "sigmoid"
    if config.method == "alignclip":
        imsep = AlignCLIPLoss(alpha=0.0 if sigmoid else ls.alpha, beta=ls.beta, separate_text=ls.separate_text,
                              separate_image=ls.separate_image, weighting=ls.weighting, local_loss=ls.local_loss)
        base: nn.Module = SigLipIMSepLoss(imsep, alpha=ls.alpha, local_loss=ls.local_loss) if sigmoid else imsep
    else:
        base = SigLipLoss(local_loss=ls.local_loss) if sigmoid else ClipLoss(local_loss=ls.local_loss)
    weight = 1.0 if config.method == "alignclip" else ls.alpha
    if ls.distill_weight == 0 and ls.rafa_weight == 0 and weight == 1.0:
        return base
    distill = HyCDLoss(ls.distill_alpha, ls.distill_temperature, ls.local_loss) if ls.distill_weight else None
    return CompositeLoss(base, weight, distill=distill, distill_weight=ls.distill_weight, teacher=teacher,
                         rafa=RaFALoss() if ls.rafa_weight else None, rafa_weight=ls.rafa_weight, embed_dim=embed_dim)


def beta_at(config: TrainConfig, step: int) -> float | None:
    """IMSep's weight for optimizer step `step` (0-based): ramped in over loss.separation_warmup_steps; None
    for the methods without IMSep."""
    ls = config.loss
    if config.method != "alignclip":
        return None
    if ls.separation_warmup_steps <= 0:
        return ls.beta
    return ls.beta * min(1.0, (step + 1) / ls.separation_warmup_steps)


def create_collate(model: nn.Module) -> Any:
    """Batches tokenized with the model's own vocabulary (a SigLIP folder's files), else alignclip's CLIP BPE."""
    from alignclip.data.collate import Collate
    from alignclip.evaluation.features import default_tokenizer

    return Collate(default_tokenizer(model), image_size=model.image_size)


def total_steps_of(config: TrainConfig, epoch_batches: int | None) -> int:
    if config.optim.steps is None and epoch_batches is None:
        raise ValueError(f"data {config.data.train!r} has no known length: set optim.steps, or data.num_samples "
                         "(the samples per epoch)")
    return config.optim.steps if config.optim.steps is not None else config.optim.epochs * epoch_batches


def create_scaler(precision: str) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None


def wrap_model(model: nn.Module, config: TrainConfig, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP across ranks, then torch.compile if asked (alignclip.models.base.unwrap undoes both)."""
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.runtime.compile:
        model = torch.compile(model)
    return model


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
