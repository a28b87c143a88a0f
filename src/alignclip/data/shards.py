"""WebDataset / img2dataset tar shards: brace expansion, streaming reader, rank/worker splitting, shuffle buffer.

Implemented on stdlib `tarfile` so the core install needs no `webdataset` package. Bad members become `None`
samples (counted by the collate function) and a truncated shard ends with one `None`: training never crashes on data.
"""
from __future__ import annotations

import glob
import io
import itertools
import json
import logging
import os
import random
import re
import tarfile
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{([^{}]*)\}")


def braceexpand(pattern: str) -> list[str]:
    """'a-{000..002}.tar' -> ['a-000.tar', 'a-001.tar', 'a-002.tar']; also '{x,y}' lists and nesting, left to right."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    range_ = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if range_:
        lo, hi = range_.group(1), range_.group(2)
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        step = 1 if int(hi) >= int(lo) else -1
        options = [str(v).zfill(width) for v in range(int(lo), int(hi) + step, step)]
    else:
        options = body.split(",")
    return [out for option in options for out in braceexpand(head + option + tail)]


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Patterns/lists -> shard paths: braces, '::'-separated lists, globs, or a directory (all its .tar files)."""
    items = urls.split("::") if isinstance(urls, str) else list(urls)
    paths: list[str] = []
    for item in items:
        for path in braceexpand(os.path.expanduser(item)):
            if os.path.isdir(path):
                paths += sorted(glob.glob(os.path.join(path, "**", "*.tar"), recursive=True))
            elif any(ch in path for ch in "*?["):
                paths += sorted(glob.glob(path, recursive=True))
            else:
                paths.append(path)
    return paths


def split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the basename, ext = the rest (lower-cased)."""
    directory, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return os.path.join(directory, stem), ext.lower() if dot else ""


def decode_image(data: bytes) -> Image.Image | None:
    """Bytes -> RGB PIL image, or None for anything undecodable (decoded fully now, so truncation shows here)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return to_rgb(image)
    except Exception:  # PIL raises many types for corrupt data (OSError, SyntaxError, struct.error ...)
        return None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB; transparent images are flattened onto white rather than black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


RawSample = tuple[str, "bytes | None", "str | None", "dict | None"]  # (key, image bytes, caption, labels)


def iter_tar_groups(path: str) -> Iterator[RawSample | None]:
    """Stream one shard: consecutive members with the same key form a sample. A broken shard ends with one None."""
    key, parts = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, ext = split_key(member.name)
                if os.path.basename(member_key).startswith("__") or not ext:
                    continue  # e.g. WebDataset's __key__ metadata
                if member_key != key:
                    if key is not None:
                        yield _pack_group(key, parts)
                    key, parts = member_key, {}
                parts[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
            # tarfile ends quietly when a shard is cut inside or right before a header block; an intact
            # uncompressed archive has an end-of-archive block after the last member, so check it is there.
            if getattr(tar.fileobj, "comptype", None) == "tar" and os.path.getsize(path) < tar.offset + 512:
                raise tarfile.ReadError("archive ends without an end-of-archive block")
        last, key = key, None
        if last is not None:
            yield _pack_group(last, parts)
    except (tarfile.TarError, OSError, EOFError) as error:
        if key is not None:  # the last group may be whole; if not, its missing part makes it None
            yield _pack_group(key, parts)
        logger.warning("shard %s is truncated or unreadable (%s); continuing with the next shard", path, error)
        yield None


def _pack_group(key: str, parts: dict[str, bytes]) -> RawSample:
    image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
    caption = parts["txt"].decode("utf-8", errors="replace").strip() if "txt" in parts else None
    labels = None
    if "json" in parts:
        try:
            meta = json.loads(parts["json"])
            labels = meta.get("labels") if isinstance(meta, dict) and isinstance(meta.get("labels"), dict) else None
        except ValueError:
            labels = None
    return key, image, caption, labels


def _shuffled(items: Iterator, buffer_size: int, rng: random.Random) -> Iterator:
    """Reservoir-style shuffle buffer (WebDataset's): fill, then emit a random slot and refill it."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = rng.randrange(buffer_size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


class TarShardDataset(torch.utils.data.IterableDataset):
    """Iterable over WebDataset tar shards, split across ranks and DataLoader workers.

    Non-resampled: each epoch the shard list is shuffled with one seed shared by all ranks/workers (set_epoch), then
    partitioned so every sample is seen exactly once per epoch; with fewer shards than readers, every reader scans all
    shards and keeps every n-th sample instead. Resampled: each reader draws shards with replacement, forever (or
    `num_samples / readers` samples per epoch when num_samples is given), like open_clip's --dataset-resampled.
    """

    def __init__(self, urls: str | Sequence[str], transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 shuffle_shards: bool = True, shuffle_buffer: int = 1000, resampled: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_samples: int | None = None) -> None:
        self.shards = expand_urls(urls)
        if not self.shards:
            raise ValueError(f"no tar shards matched {urls!r}")
        missing = [p for p in self.shards if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(self.shards)} shards not found, e.g. {missing[0]}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.transform = transform
        self.shuffle_shards, self.shuffle_buffer, self.resampled = shuffle_shards, shuffle_buffer, resampled
        self.seed, self.rank, self.world_size, self.num_samples = seed, rank, world_size, num_samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _reader(self) -> tuple[int, int]:
        """(global reader id, number of readers) over ranks x DataLoader workers."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def iter_raw(self) -> Iterator[RawSample | None]:
        """This reader's undecoded samples (key, image bytes, caption, labels) or None, before the shuffle buffer."""
        reader, readers = self._reader()
        if self.resampled:
            rng = random.Random(f"{self.seed}:{self.epoch}:{reader}")
            stream = itertools.chain.from_iterable(iter_tar_groups(rng.choice(self.shards)) for _ in itertools.count())
            if self.num_samples is not None:
                stream = itertools.islice(stream, -(-self.num_samples // readers))
            yield from stream
            return
        shards = list(self.shards)
        if self.shuffle_shards:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(shards)  # same order on every reader
        if len(shards) >= readers:
            for path in shards[reader::readers]:
                yield from iter_tar_groups(path)
        else:  # too few shards to give each reader its own: split samples instead
            for i, item in enumerate(itertools.chain.from_iterable(map(iter_tar_groups, shards))):
                if i % readers == reader:
                    yield item

    def decode(self, raw: RawSample | None) -> dict | None:
        if raw is None:
            return None
        _, image_bytes, caption, labels = raw
        if image_bytes is None or not caption:
            return None
        image = decode_image(image_bytes)
        if image is None:
            return None
        sample = {"image": self.transform(image) if self.transform else image, "caption": caption}
        if labels is not None:
            sample["labels"] = labels
        return sample

    def __iter__(self) -> Iterator[dict | None]:
        reader, _ = self._reader()
        rng = random.Random(f"{self.seed}:{self.epoch}:{reader}:buffer")
        # The buffer holds undecoded bytes: 1000 decoded 224px tensors would be 600 MB per worker.
        for raw in _shuffled(self.iter_raw(), self.shuffle_buffer, rng):
            yield self.decode(raw)
