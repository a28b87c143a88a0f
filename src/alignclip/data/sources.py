"""User data sources (CSV/TSV, image folders with sidecar captions, WebDataset shards) and `create_dataset`.

Configuration errors (missing path, wrong columns, nothing usable) raise one-line errors at construction, before any
training starts; per-sample problems (unreadable image, missing file, empty caption) become `None` samples that the
collate function drops and counts, so one bad file never stops a long run.
"""
from __future__ import annotations

import csv
import os
import sys
from typing import Any, Callable

import torch
from PIL import Image

from .images import IMAGE_EXTENSIONS, UnreadableImage, is_image_file, load_image
from .shards import BadSample, TarShardDataset, decode_caption
from .spec import DataSpec, csv_separator, parse_spec
from .synthetic import SyntheticShapes
from .transforms import image_transform, sample_seed

Transform = Callable[[Image.Image], torch.Tensor]


def read_image(path: str) -> Image.Image | BadSample:
    """RGB image from disk, or a BadSample saying why not (missing, unreadable, corrupt)."""
    if not path:
        return BadSample("<empty path>", "no image path")
    try:
        return load_image(path)
    except FileNotFoundError:
        return BadSample(path, "image file not found")
    except UnreadableImage as error:  # corrupt, truncated, a decompression bomb ...
        return BadSample(path, f"image cannot be read: {error.reason}")


class _PairDataset(torch.utils.data.Dataset):
    """Shared map-style logic: subclasses fill `self.paths` and implement `read_caption(i)`.

    A bad sample comes back as a `BadSample(source, reason)` rather than a bare None, so the collate function, `data
    inspect` and `pack` can say which file (or CSV line) was dropped and why, across DataLoader worker processes.

    With a `seed`, sample i of epoch e is transformed with seed sample_seed(seed, e, i): its random crop is the same
    in any DataLoader worker, for any worker count and after any resume. The trainer's loader calls set_epoch in
    each worker's copy with the epoch of every index it reads (training.data.TrainLoader).
    """

    paths: list[str]
    transform: Transform | None
    seed: int | None = None  # None: the transform draws from its own RNG, as it would without a trainer
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def read_caption(self, index: int) -> str | BadSample:
        raise NotImplementedError

    def caption(self, index: int) -> str | None:
        text = self.read_caption(index)
        return None if isinstance(text, BadSample) else text

    def raw(self, index: int) -> tuple[Image.Image, str] | BadSample:
        """(PIL image, caption), or a BadSample; used by packing and by __getitem__."""
        text = self.read_caption(index)
        if isinstance(text, BadSample):
            return text
        image = read_image(self.paths[index])
        return image if isinstance(image, BadSample) else (image, text)

    def __getitem__(self, index: int) -> dict | BadSample:
        item = self.raw(index)
        if isinstance(item, BadSample):
            return item
        image, text = item
        if self.transform is None:
            return {"image": image, "caption": text}
        if self.seed is None:
            return {"image": self.transform(image), "caption": text}
        seed = sample_seed(self.seed, self.epoch, index)
        return {"image": self.transform(image, seed=seed), "caption": text}  # type: ignore[call-arg]


class CsvDataset(_PairDataset):
    """Rows of (image path, caption) from a CSV/TSV file, open_clip style (defaults: filepath / title columns).

    sep: the delimiter; None detects it from the header line (see spec.csv_separator).
    """

    def __init__(self, path: str, image_key: str = "filepath", caption_key: str = "title", sep: str | None = None,
                 root: str | None = None, transform: Transform | None = None, num_samples: int | None = None,
                 seed: int | None = None) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CSV file not found: {path}")
        sep = csv_separator(path, sep)
        root = root if root is not None else os.path.dirname(os.path.abspath(path))
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long captions
        # surrogateescape: one non-UTF-8 caption is that row's problem (see read_caption), not the whole file's
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f, delimiter=sep)
            columns = reader.fieldnames or []
            absent = [k for k in (image_key, caption_key) if k not in columns]
            if absent:
                raise ValueError(f"{path}: no column {', '.join(map(repr, absent))}; columns are {columns} "
                                 f"(name them with --set data.csv_image_key=COLUMN / data.csv_caption_key=COLUMN, or "
                                 f"--csv-image-key / --csv-caption-key for eval and embed; data.csv_separator if the "
                                 f"delimiter is not {sep!r})")
            self.paths, self.captions, self.lines = [], [], []
            for row in reader:
                if num_samples is not None and len(self.paths) >= num_samples:
                    break
                file = (row.get(image_key) or "").strip()
                self.paths.append(os.path.join(root, os.path.expanduser(file)) if file else "")
                self.captions.append(row.get(caption_key) or "")
                self.lines.append(reader.line_num)
        if not self.paths:
            raise ValueError(f"{path}: no samples (the file has a header but no rows)")
        self.transform, self.seed = transform, seed
        self.source = path

    def read_caption(self, index: int) -> str | BadSample:
        where = f"{self.source}:{self.lines[index]}"
        return decode_caption(self.captions[index].encode("utf-8", "surrogateescape"), where)


class FolderDataset(_PairDataset):
    """Images anywhere under `root`, each captioned by the .txt file of the same name beside it."""

    def __init__(self, root: str, transform: Transform | None = None, num_samples: int | None = None,
                 seed: int | None = None) -> None:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder not found: {root}")
        images = []
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            images += [os.path.join(directory, f) for f in sorted(files) if is_image_file(f)]
        self.paths = [p for p in images if os.path.isfile(os.path.splitext(p)[0] + ".txt")]
        self.num_unpaired = len(images) - len(self.paths)  # images with no caption file: left out, not trained on
        if not images:
            raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
        if not self.paths:
            raise ValueError(f"{root}: found {len(images)} images but none has a caption .txt file of the same name")
        if num_samples is not None:
            self.paths = self.paths[:num_samples]
        self.transform, self.seed = transform, seed

    def read_caption(self, index: int) -> str | BadSample:
        path = os.path.splitext(self.paths[index])[0] + ".txt"
        try:
            with open(path, "rb") as f:
                return decode_caption(f.read(), path)
        except OSError as error:
            return BadSample(path, f"caption file cannot be read: {error.strerror or error}")


def create_dataset(spec: str | DataSpec, image_size: int, train: bool, num_samples: int | None = None, seed: int = 0,
                  rank: int = 0, world_size: int = 1, **kw: Any) -> torch.utils.data.Dataset:
    """Dataset from a spec string, with TrainTransform (train) or EvalTransform (eval) for user images.

    num_samples: synthetic -> dataset size (default 100k train / 1k eval; 'synthetic:N' wins); csv/folder -> keep the
    first N; wds -> nominal epoch size (resampled mode stops after it). rank/world_size only split wds shards; give
    map-style datasets a DistributedSampler. `kw` are reader options, added to the spec's (see spec.parse_spec).
    """
    spec = parse_spec(spec, **kw)
    kind, target, kw = spec.kind, spec.path, dict(spec.options)
    if kind == "synthetic":
        num_samples = spec.count if spec.count is not None else num_samples
        size = num_samples if num_samples is not None else (100_000 if train else 1_000)
        return SyntheticShapes(size, seed=seed, image_size=image_size, train=train, **kw)
    transform = image_transform(image_size, train)
    sample_seeds = seed if train else None  # training crops: a function of (seed, epoch, index); eval: none drawn
    if kind == "csv":
        return CsvDataset(target, transform=transform, num_samples=num_samples, seed=sample_seeds, **kw)
    if kind == "captions":
        return FolderDataset(target, transform=transform, num_samples=num_samples, seed=sample_seeds)
    kw.setdefault("shuffle_shards", train)
    kw.setdefault("shuffle_buffer", 1000 if train else 0)
    return TarShardDataset(target, transform=transform, seed=seed, rank=rank, world_size=world_size,
                           num_samples=num_samples, **kw)


__all__ = ["CsvDataset", "FolderDataset", "create_dataset", "read_image"]
