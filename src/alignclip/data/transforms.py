"""Image transforms on Pillow + torch, so the core install needs no torchvision."""
from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np
import torch
from PIL import Image

# OpenAI CLIP normalisation constants (the same as open_clip's OPENAI_DATASET_MEAN/STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Transform = Callable[[Image.Image], torch.Tensor]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor [3, H, W] in [0, 1], RGB."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def normalize(tensor: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, dtype=tensor.dtype).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=tensor.dtype).view(3, 1, 1)
    return (tensor - mean) / std


def _resize_shorter(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return image.resize(new, Image.BICUBIC) if new != (w, h) else image


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


class EvalTransform:
    """Resize the shorter side, centre crop, normalise (CLIP's eval preprocessing)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = _center_crop(_resize_shorter(image.convert("RGB"), self.image_size), self.image_size)
        return normalize(to_tensor(image))


class TrainTransform:
    """RandomResizedCrop(scale 0.9-1.0, ratio 3/4-4/3) then normalise, as open_clip trains."""

    def __init__(self, image_size: int, scale: tuple[float, float] = (0.9, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), rng: random.Random | None = None) -> None:
        self.image_size, self.scale, self.ratio = image_size, scale, ratio
        # Default to the module-level RNG: DataLoader reseeds it in every worker, so workers draw different crops
        # (a Random() made here would be copied into each forked worker with the same state).
        self.rng = rng if rng is not None else random

    def _crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * self.rng.uniform(*self.scale)
            aspect = math.exp(self.rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                left = self.rng.randint(0, width - w)
                top = self.rng.randint(0, height - h)
                return left, top, left + w, top + h
        side = min(width, height)  # fallback: central square crop
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        image = image.crop(self._crop_box(*image.size)).resize((self.image_size, self.image_size), Image.BICUBIC)
        return normalize(to_tensor(image))


def image_transform(image_size: int, train: bool) -> Transform:
    return TrainTransform(image_size) if train else EvalTransform(image_size)
