"""Datasets (synthetic shapes, CSV/TSV, image folders, WebDataset shards), collation and shard packing."""
from __future__ import annotations

from .collate import Batch, Collate
from .pack import pack
from .shards import TarShardDataset
from .streams import braceexpand
from .sources import CsvDataset, FolderDataset, create_dataset
from .synthetic import SyntheticShapes, synthetic_sts, zeroshot_tasks
from .transforms import EvalTransform, TrainTransform, image_transform

__all__ = ["Batch", "Collate", "CsvDataset", "EvalTransform", "FolderDataset", "SyntheticShapes", "TarShardDataset",
           "TrainTransform", "braceexpand", "create_dataset", "image_transform", "pack", "synthetic_sts",
           "zeroshot_tasks"]
