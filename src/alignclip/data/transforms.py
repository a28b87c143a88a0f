"""Image transforms on Pillow + torch, so the core install needs no torchvision."""
from __future__ import annotations

import hashlib
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


def sample_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from (seed, epoch, sample index, ...): the same in every process, worker and run
    (Python's hash() of a str is salted per process), so a sample's random choices never depend on who draws it."""
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


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

    def __call__(self, image: Image.Image, seed: int | None = None) -> torch.Tensor:
        """`seed` is accepted (and unused: nothing is random) so datasets can call any of our transforms alike."""
        image = _center_crop(_resize_shorter(image.convert("RGB"), self.image_size), self.image_size)
        return normalize(to_tensor(image))


class TrainTransform:
    """RandomResizedCrop(scale 0.9-1.0, ratio 3/4-4/3) then normalise, as open_clip trains."""

    def __init__(self, image_size: int, scale: tuple[float, float] = (0.9, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), rng: random.Random | None = None) -> None:
        self.image_size, self.scale, self.ratio = image_size, scale, ratio
        # Default to the module-level RNG: DataLoader reseeds it in every worker, so workers draw different crops
        # (a Random() made here would be copied into each forked worker with the same state).
        self.rng: random.Random = rng if rng is not None else random  # type: ignore[assignment]

    def _crop_box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                left = rng.randint(0, width - w)
                top = rng.randint(0, height - h)
                return left, top, left + w, top + h
        side = min(width, height)  # fallback: central square crop
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def __call__(self, image: Image.Image, seed: int | None = None) -> torch.Tensor:
        """`seed` (e.g. sample_seed(run_seed, epoch, index)) makes the crop a pure function of it, whatever process
        draws it: exact resume with any number of DataLoader workers. None draws from `self.rng`."""
        rng = random.Random(seed) if seed is not None else self.rng
        image = image.convert("RGB")
        image = image.crop(self._crop_box(*image.size, rng)).resize((self.image_size, self.image_size),
                                                                     Image.BICUBIC)
        return normalize(to_tensor(image))


def image_transform(image_size: int, train: bool) -> Transform:
    return TrainTransform(image_size) if train else EvalTransform(image_size)
