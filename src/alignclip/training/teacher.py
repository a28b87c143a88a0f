"""The frozen teacher of HyCD distillation: the model.init_from checkpoint the run started from, loaded again (not
copied from the student, so a resumed run gets the same teacher as its first start), frozen, and identified by a
content hash that the run records in every checkpoint's trainer state: a resume whose teacher changed is refused."""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from alignclip.models.base import ContrastiveModel

from .config import TrainConfig


def content_hash(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes in name order): the same weights hash alike
    whatever file format or path they were read from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _describe(model: ContrastiveModel) -> str:
    v, t = model.config.vision_cfg, model.config.text_cfg
    return (f"{model.architecture!r} (embed {model.config.embed_dim}, image {v.width}x{v.layers}, "
            f"text {t.width}x{t.layers})")


def create_teacher(config: TrainConfig, student: ContrastiveModel, device: torch.device,
                   state: dict[str, Any] | None = None) -> ContrastiveModel | None:
    """The frozen teacher on `device`, or None without distillation; `state` (a resumed trainer state) holds the
    hash of the teacher the run started with."""
    if config.loss.distill_weight == 0:
        return None
    from alignclip.models.checkpoint import load_checkpoint

    from .init_model import resolve_init_from
    m = config.model
    teacher = load_checkpoint(resolve_init_from(m.init_from), config=m.init_config)  # type: ignore[arg-type]
    if teacher.architecture != student.architecture or teacher.config.to_dict() != student.config.to_dict():
        raise ValueError(f"loss.distill_weight: the teacher (model.init_from {m.init_from}) is "
                         f"{_describe(teacher)} but the student is {_describe(student)}; distil from the model the "
                         "run starts from (or set loss.distill_weight=0)")
    teacher.requires_grad_(False).eval()
    teacher.sha256 = content_hash(teacher)  # type: ignore[attr-defined]
    recorded = (state or {}).get("teacher_sha256")
    if recorded and recorded != teacher.sha256:  # type: ignore[attr-defined]
        raise ValueError(f"cannot resume: the teacher model.init_from {m.init_from} changed since the run started "
                         f"(content sha256 {recorded[:12]}... then, {teacher.sha256[:12]}... now); restore that file, "
                         "or start a new run")
    return teacher.to(device)
