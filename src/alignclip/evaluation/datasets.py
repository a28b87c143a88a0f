"""Labelled image sets for zero-shot and linear-probe evaluation: class folders, Fashion-MNIST (IDX files)."""
from __future__ import annotations

import gzip
import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from alignclip.data.images import is_image_file, load_image
from alignclip.data.transforms import EvalTransform

# Debian package `dataset-fashion-mnist`; override with $ALIGNCLIP_FASHION_MNIST.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzip'd or plain, into a numpy array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path} is truncated or corrupt: header says {shape} ({expected} bytes), "
                         f"found {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


class LabelledImages(Dataset):
    """Base for evaluation sets: `classnames`, integer `targets`, items are transformed image tensors."""

    classnames: list[str]
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, num_samples: int | None, seed: int = 0) -> "LabelledImages":
        """A fixed-seed random subset (for quick evaluations); the full set when num_samples is None or larger."""
        if num_samples is None or num_samples >= len(self):
            return self
        return self.select(sorted(random.Random(seed).sample(range(len(self)), num_samples)))

    def select(self, indices: Sequence[int]) -> "LabelledImages":
        return _Subset(self, indices)


class _Subset(LabelledImages):
    def __init__(self, base: LabelledImages, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)
        self.classnames = base.classnames
        self.targets = base.targets[self.indices]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.base[self.indices[index]]


class FashionMNIST(LabelledImages):
    """Fashion-MNIST from its IDX files: 28x28 grey -> RGB -> EvalTransform(image_size)."""

    def __init__(self, root: str | Path | None = None, train: bool = False, image_size: int = 224) -> None:
        root = Path(root or os.environ.get("ALIGNCLIP_FASHION_MNIST", FASHION_MNIST_DIR))
        if not root.is_dir():
            raise FileNotFoundError(f"Fashion-MNIST directory not found: {root} "
                                    "(apt-get install dataset-fashion-mnist, or set $ALIGNCLIP_FASHION_MNIST)")
        prefix = "train" if train else "t10k"
        self.images = read_idx(self._find(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(self._find(root, f"{prefix}-labels-idx1-ubyte"))
        if self.images.ndim != 3 or labels.ndim != 1 or len(labels) != len(self.images):
            raise ValueError(f"Fashion-MNIST files in {root} disagree: images {self.images.shape}, labels {labels.shape}")
        if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"Fashion-MNIST labels in {root} exceed the 10 classes (max {int(labels.max())})")
        self.classnames = list(FASHION_MNIST_CLASSES)
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.transform = EvalTransform(image_size)

    @staticmethod
    def _find(root: Path, stem: str) -> Path:
        for name in (stem + ".gz", stem):
            if (root / name).is_file():
                return root / name
        raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found in {root}")

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(Image.fromarray(self.images[index]).convert("RGB"))


class ImageFolderClasses(LabelledImages):
    """One sub-folder per class (class name = folder name with underscores as spaces), images inside."""

    def __init__(self, root: str | Path, image_size: int = 224) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise ValueError(f"image folder {root} has no class sub-folders")
        self.samples: list[tuple[Path, int]] = []
        for label, folder in enumerate(folders):
            self.samples += [(p, label) for p in sorted(folder.rglob("*")) if is_image_file(p)]
        if not self.samples:
            raise ValueError(f"image folder {root} has class sub-folders but no images")
        self.classnames = [folder.name.replace("_", " ") for folder in folders]
        self.targets = torch.tensor([label for _, label in self.samples], dtype=torch.long)
        self.transform = EvalTransform(image_size)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.samples[index][0]
        try:
            return self.transform(load_image(path))
        except FileNotFoundError as error:
            raise ValueError(f"cannot read image {path}: {error}") from None


def split_stratified(targets: torch.Tensor, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (first, second) where `fraction` of each class goes to the first part; for folder probes."""
    rng = random.Random(seed)
    first: list[int] = []
    second: list[int] = []
    for label in targets.unique().tolist():
        members = (targets == label).nonzero().flatten().tolist()
        rng.shuffle(members)
        cut = max(1, round(fraction * len(members))) if len(members) > 1 else len(members)
        first += members[:cut]
        second += members[cut:]
    return sorted(first), sorted(second)
