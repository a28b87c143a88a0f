"""WebDataset / img2dataset tar shards: lazy brace expansion, local/pipe:/http(s) streams, rank/worker splitting.

Implemented on stdlib `tarfile` rather than the `webdataset` package: we need every bad sample *named* (shard#key
and a reason) and a cut stream detected, which its pipeline hides behind handlers. Shard URLs (local, `pipe:`,
http(s)) are opened by streams.py. A bad member becomes a `BadSample` and a truncated shard ends with one:
training never crashes on data, and the collate function can say which sample was dropped and why.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import random
import tarfile
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from PIL import Image

from .images import IMAGE_EXTENSIONS, load_image
from .streams import expand_urls, is_remote, open_stream
from .transforms import sample_seed

logger = logging.getLogger(__name__)

class BadSample(NamedTuple):
    """A sample that could not be used, returned in its place: `source` names it (file, CSV line or shard#key)."""

    source: str
    reason: str


def is_bad(sample: object) -> bool:
    return sample is None or isinstance(sample, BadSample)


def split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the basename, ext = the rest (lower-cased)."""
    directory, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return os.path.join(directory, stem), ext.lower() if dot else ""


def decode_caption(data: bytes, source: str) -> str | BadSample:
    """UTF-8 caption (BOM and surrounding space stripped), or a BadSample naming the first undecodable byte."""
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as error:
        return BadSample(source, f"caption is not valid UTF-8 (byte 0x{data[error.start]:02x} at position "
                                 f"{error.start})")
    return text if text else BadSample(source, "empty caption")


class RawSample(NamedTuple):
    """One undecoded shard sample: `name` is 'SHARD#KEY'."""

    name: str
    image: bytes | None
    caption: bytes | None
    labels: dict | None


def iter_tar_groups(url: str) -> Iterator[RawSample | BadSample]:
    """Stream one shard: consecutive members with the same key form a sample. A broken shard ends with a BadSample."""
    key, parts = None, {}
    try:
        with open_stream(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                if not member.isfile():
                    continue
                member_key, ext = split_key(member.name)
                if os.path.basename(member_key).startswith("__") or not ext:
                    continue  # e.g. WebDataset's __key__ metadata
                if member_key != key:
                    if key is not None:
                        yield _pack_group(url, key, parts)
                    key, parts = member_key, {}
                parts[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
            # tarfile ends quietly when a stream is cut inside or right before a header block; an intact
            # uncompressed archive has an end-of-archive block after the last member, so check it is there.
            stream.drain()
            if getattr(tar.fileobj, "comptype", None) == "tar" and stream.count < tar.offset + 512:
                raise tarfile.ReadError("archive ends without an end-of-archive block")
        last, key = key, None
        if last is not None:
            yield _pack_group(url, last, parts)
    except (tarfile.TarError, OSError, EOFError) as error:
        if key is not None:  # the last group may be whole; if not, its missing part makes it bad
            yield _pack_group(url, key, parts)
        logger.warning("shard %s is truncated or unreadable (%s); continuing with the next shard", url, error)
        yield BadSample(url, f"truncated or unreadable shard: {error}")


def _pack_group(url: str, key: str, parts: dict[str, bytes]) -> RawSample:
    image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
    labels = None
    if "json" in parts:
        try:
            meta = json.loads(parts["json"])
            labels = meta.get("labels") if isinstance(meta, dict) and isinstance(meta.get("labels"), dict) else None
        except ValueError:
            labels = None
    return RawSample(f"{url}#{key}", image, parts.get("txt"), labels)


def check_raw(raw: RawSample | BadSample) -> tuple[Image.Image, str] | BadSample:
    """(RGB image, caption) of a raw shard sample, or the BadSample saying what is wrong with it."""
    if isinstance(raw, BadSample):
        return raw
    if raw.image is None:
        return BadSample(raw.name, f"no image member ({', '.join(IMAGE_EXTENSIONS)})")
    if raw.caption is None:
        return BadSample(raw.name, "no .txt caption member")
    caption = decode_caption(raw.caption, raw.name)
    if isinstance(caption, BadSample):
        return caption
    try:
        return load_image(raw.image), caption  # type: ignore[arg-type]
    except ValueError:
        return BadSample(raw.name, "image cannot be decoded")


def count_samples(shards: Sequence[str]) -> int:
    """Samples (distinct consecutive keys) in local shards, from the tar headers only (seeks past the data)."""
    total = 0
    for path in shards:
        try:
            with tarfile.open(path, mode="r:*") as tar:
                keys = (split_key(m.name)[0] for m in tar if m.isfile() and split_key(m.name)[1])
                total += sum(1 for key, _ in itertools.groupby(keys) if not os.path.basename(key).startswith("__"))
        except (tarfile.TarError, OSError, EOFError) as error:
            logger.warning("cannot count samples in %s (%s); counting it as empty", path, error)
    return total


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
    """Iterable over WebDataset tar shards, split across ranks and DataLoader workers; yields samples or BadSamples.

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
        missing = [p for p in self.shards if not is_remote(p) and not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(self.shards)} shards not found, e.g. {missing[0]}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.transform = transform
        self.shuffle_shards, self.shuffle_buffer, self.resampled = shuffle_shards, shuffle_buffer, resampled
        self.seed, self.rank, self.world_size, self._num_samples = seed, rank, world_size, num_samples
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples per epoch: as given, else counted from local tar headers; remote shards must be told."""
        if self._num_samples is None:
            remote = [url for url in self.shards if is_remote(url)]
            if remote:
                raise ValueError(f"set data.num_samples (samples per epoch) for remote shards such as {remote[0]!r}: "
                                 "counting them would download every shard")
            self._num_samples = count_samples(self.shards)
            logger.info("counted %d samples in %d shards (tar headers only)", self._num_samples, len(self.shards))
        return self._num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _reader(self) -> tuple[int, int]:
        """(global reader id, number of readers) over ranks x DataLoader workers."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def iter_raw(self) -> Iterator[RawSample | BadSample]:
        """This reader's undecoded samples (or BadSamples), before the shuffle buffer."""
        reader, readers = self._reader()
        if self.resampled:
            rng = random.Random(f"{self.seed}:{self.epoch}:{reader}")
            stream = itertools.chain.from_iterable(iter_tar_groups(rng.choice(self.shards)) for _ in itertools.count())
            if self._num_samples is not None:
                stream = itertools.islice(stream, -(-self._num_samples // readers))
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

    def decode(self, raw: RawSample | BadSample) -> dict | BadSample:
        item = check_raw(raw)
        if isinstance(item, BadSample):
            return item
        image, caption = item
        # a sample's random crop is a pure function of (seed, epoch, shard URL, key): any worker count, any resume
        seed = sample_seed(self.seed, self.epoch, raw.name)  # type: ignore[union-attr]  # name = "SHARD#KEY"
        sample = {"image": self.transform(image, seed=seed) if self.transform else image,  # type: ignore[call-arg]
                  "caption": caption}
        if raw.labels is not None:  # type: ignore[union-attr]
            sample["labels"] = raw.labels  # type: ignore[union-attr]
        return sample

    def __iter__(self) -> Iterator[dict | BadSample]:
        reader, _ = self._reader()
        rng = random.Random(f"{self.seed}:{self.epoch}:{reader}:buffer")
        # The buffer holds undecoded bytes: 1000 decoded 224px tensors would be 600 MB per worker.
        for raw in _shuffled(self.iter_raw(), self.shuffle_buffer, rng):
            yield self.decode(raw)


__all__ = ["BadSample", "RawSample", "TarShardDataset", "check_raw", "count_samples", "decode_caption", "is_bad",
           "iter_tar_groups", "split_key"]
