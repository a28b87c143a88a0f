"""Pack any source (synthetic, CSV, folder, other shards) into WebDataset tar shards for fast streaming training.

Shards are written to a temporary name and renamed when complete, so an interrupted pack never leaves a
half-written shard that looks valid; bad source samples are skipped and counted.
"""
from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

from PIL import Image
from tqdm import tqdm

from .shards import BadSample, TarShardDataset, check_raw
from .sources import CsvDataset, FolderDataset
from .spec import DataSpec, parse_spec
from .synthetic import SyntheticShapes

_FORMATS = {"jpg": "JPEG", "png": "PNG"}
BAD_SAMPLES_FILE = "bad_samples.tsv"  # source <TAB> reason, one skipped sample a line (written when there are any)
MAX_SHOWN = 10


@dataclass
class PackSummary:
    out_dir: str
    num_written: int = 0
    num_skipped: int = 0
    shards: list[str] = field(default_factory=list)
    bad_samples: list[BadSample] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"wrote {self.num_written} samples in {len(self.shards)} shards to {self.out_dir} "
                f"(skipped {self.num_skipped} bad samples)")
        shown = [f"\n  skipped {bad.source}: {bad.reason}" for bad in self.bad_samples[:MAX_SHOWN]]
        more = len(self.bad_samples) - MAX_SHOWN
        tail = f"\n  ... {more} more in {os.path.join(self.out_dir, BAD_SAMPLES_FILE)}" if more > 0 else ""
        return text + "".join(shown) + tail


class ShardWriter:
    """Writes KEY.<image>, KEY.txt (and KEY.json) members into shard-000000.tar, shard-000001.tar, ..."""

    def __init__(self, out_dir: str, samples_per_shard: int, image_format: str = "jpg", quality: int = 95) -> None:
        if image_format not in _FORMATS:
            raise ValueError(f"image format must be one of {sorted(_FORMATS)}, got {image_format!r}")
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.out_dir, self.samples_per_shard = out_dir, samples_per_shard
        self.image_format, self.quality = image_format, quality
        self.shards: list[str] = []
        self.count = 0
        self._tar: tarfile.TarFile | None = None
        self._tmp = ""

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: identical input, identical bytes
        self._tar.addfile(info, io.BytesIO(data))  # type: ignore[union-attr]

    def write(self, image: Image.Image, caption: str, meta: dict | None = None) -> None:
        if self._tar is None:
            path = os.path.join(self.out_dir, f"shard-{len(self.shards):06d}.tar")
            self._tmp = path + ".tmp"
            self._tar = tarfile.open(self._tmp, "w")
            self.shards.append(path)
        key = f"{self.count:09d}"
        buffer = io.BytesIO()
        options = {"quality": self.quality} if self.image_format == "jpg" else {}
        image.convert("RGB").save(buffer, _FORMATS[self.image_format], **options)
        self._add(f"{key}.{self.image_format}", buffer.getvalue())
        self._add(f"{key}.txt", caption.encode("utf-8"))
        if meta is not None:
            self._add(f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
        self.count += 1
        if self.count % self.samples_per_shard == 0:
            self.close()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self._tmp, self.shards[-1])
            self._tar = None

    def abort(self) -> None:
        """Drop the shard in progress (its temp file) after an error; finished shards stay."""
        if self._tar is not None:
            self._tar.close()
            os.remove(self._tmp)
            self.shards.pop()
            self._tar = None


def _samples(source: str | DataSpec, num_samples: int | None, image_size: int,
             seed: int) -> tuple[Iterator, int | None]:
    """(iterator of (image, caption, meta) or None, total if known) for a spec."""
    spec = parse_spec(source)
    scheme, target = spec.kind, spec.path
    if scheme == "synthetic":
        n = spec.count if spec.count is not None else (num_samples if num_samples is not None else 10_000)
        data = SyntheticShapes(n, seed=seed, image_size=image_size)
        return ((*data.raw(i), {"labels": data.labels_for(i)}) for i in range(n)), n
    if scheme == "wds":
        shards = TarShardDataset(target, shuffle_shards=False, shuffle_buffer=0, seed=seed)

        def repack() -> Iterator:
            for i, raw in enumerate(shards.iter_raw()):
                if num_samples is not None and i >= num_samples:
                    return
                item = check_raw(raw)
                yield item if isinstance(item, BadSample) else (*item, {"labels": raw.labels} if raw.labels else None)
        return repack(), num_samples
    if scheme == "csv":
        data = CsvDataset(target, num_samples=num_samples, **spec.options)
    else:
        data = FolderDataset(target, num_samples=num_samples)

    def pairs() -> Iterator:
        for i in range(len(data)):
            item = data.raw(i)
            yield item if isinstance(item, BadSample) else (item[0], item[1], None)
    return pairs(), len(data)


def pack(source: str | DataSpec, out_dir: str, samples_per_shard: int = 1000, num_samples: int | None = None,
         image_format: str = "jpg", image_size: int = 64, seed: int = 0, quality: int = 95,
         overwrite: bool = False, progress: bool = True) -> PackSummary:
    """Write `source` (a create_dataset spec, read as training reads it) as WebDataset shards in `out_dir`;
    image_size only affects synthetic. CSV options (columns, sep): `parse_spec(source, image_key=...)`."""
    existing = sorted(glob.glob(os.path.join(out_dir, "shard-*.tar")))
    if existing and not overwrite:
        raise ValueError(f"{out_dir} already holds {len(existing)} shard-*.tar files; pass --overwrite to replace them")
    samples, total = _samples(source, num_samples, image_size, seed)  # validates the source before touching out_dir
    os.makedirs(out_dir, exist_ok=True)
    for path in existing + glob.glob(os.path.join(out_dir, BAD_SAMPLES_FILE)):
        os.remove(path)
    writer = ShardWriter(out_dir, samples_per_shard, image_format, quality)
    summary = PackSummary(out_dir=out_dir)
    try:
        for item in tqdm(samples, total=total, desc=f"packing {source}", unit="img", disable=not progress):
            if isinstance(item, BadSample):
                summary.num_skipped += 1
                summary.bad_samples.append(item)
                continue
            writer.write(*item)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    summary.num_written, summary.shards = writer.count, writer.shards
    if summary.bad_samples:
        with open(os.path.join(out_dir, BAD_SAMPLES_FILE), "w", encoding="utf-8", errors="backslashreplace") as f:
            f.writelines(f"{bad.source}\t{bad.reason}\n" for bad in summary.bad_samples)
    if summary.num_written == 0:
        raise ValueError(f"{source}: no usable samples to pack ({summary.num_skipped} bad samples skipped)")
    return summary
