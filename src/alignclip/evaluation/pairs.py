"""Your own held-out image-caption pairs (CSV/TSV, caption folders, WebDataset shards) as features, for eval and embed.

Rows naming the same image (the same file path, or identical image bytes in shards) are one image with several
captions, as COCO has five, so retrieval counts an image->text hit on any of its captions. Bad samples are skipped
and named, never fatal. At most `num_images` images are read (the first ones, in file / shard order).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from alignclip.data.shards import BadSample, TarShardDataset, check_raw
from alignclip.data.sources import create_dataset, read_image
from alignclip.data.spec import parse_spec
from alignclip.data.transforms import EvalTransform
from alignclip.evaluation.features import TokenizeFn, encode_texts, extract_features

logger = logging.getLogger(__name__)
PAIR_SCHEMES = ("csv", "tsv", "captions", "wds")


def is_pair_dataset(spec: str) -> bool:
    return spec.partition(":")[0] in PAIR_SCHEMES and len(spec.partition(":")[2]) > 0


def pair_dataset_name(spec: str) -> str:
    """'csv:/data/val.csv' -> 'csv/val.csv' (short, for result records)."""
    scheme, _, target = spec.partition(":")
    return f"{scheme}/{Path(target.rstrip('/')).name[:60] or target[:60]}"


@dataclass
class PairFeatures:
    """Row i of `image_features` is image `images[i]`; caption j (`captions[j]`) describes image `text_to_image[j]`."""

    image_features: torch.Tensor
    text_features: torch.Tensor
    text_to_image: torch.Tensor
    images: list[str]
    captions: list[str]
    bad_samples: list[BadSample] = field(default_factory=list)

    def paired_text(self) -> torch.Tensor:
        """Each image's first caption, row-aligned with image_features (what the gap measures pair)."""
        first = torch.full((self.image_features.shape[0],), -1, dtype=torch.long)
        for j in reversed(range(len(self.text_to_image))):
            first[self.text_to_image[j]] = j
        return self.text_features[first]


def _rows(spec: str, image_size: int, **options: Any) -> Iterator[tuple[str, str, Any, str] | BadSample]:
    """(group key, image name, PIL image loader, caption) per usable row, or a BadSample."""
    dataset = create_dataset(spec, image_size=image_size, train=False, **options)
    if isinstance(dataset, TarShardDataset):
        for raw in dataset.iter_raw():
            item = check_raw(raw)
            if isinstance(item, BadSample):
                yield item
            else:
                key = hashlib.sha1(raw.image).hexdigest()  # type: ignore[union-attr, arg-type]
                yield key, raw.name, (lambda image=item[0]: image), item[1]  # type: ignore[union-attr]
        return
    for i in range(len(dataset)):  # type: ignore[arg-type]
        caption = dataset.read_caption(i)  # type: ignore[attr-defined]
        if isinstance(caption, BadSample):
            yield caption
            continue
        path = dataset.paths[i]  # type: ignore[attr-defined]
        yield path, path, (lambda path=path: read_image(path)), caption


def embed_pairs(model: torch.nn.Module, spec: str, num_images: int | None = None, tokenizer: TokenizeFn | None = None,
                batch_size: int = 256, device: str | torch.device | None = "cpu",
                csv_image_key: str | None = None, csv_caption_key: str | None = None) -> PairFeatures:
    """Encode the images and captions of a pair dataset spec (csv:, tsv:, captions:, wds:) with `model`."""
    scheme = parse_spec(spec).scheme  # a DataSpec (alignclip.data.spec): csv, tsv, captions or wds
    options = {"image_key": csv_image_key, "caption_key": csv_caption_key} if scheme in ("csv", "tsv") else {}
    index: dict[str, int] = {}  # group key -> image row
    images: list[str] = []
    captions: list[str] = []
    text_to_image: list[int] = []
    bad: list[BadSample] = []
    unreadable: dict[str, BadSample] = {}
    pending: list[torch.Tensor] = []
    chunks: list[torch.Tensor] = []
    transform = EvalTransform(model.image_size)
    full = False
    for row in tqdm(_rows(spec, model.image_size, **options), desc=f"reading {pair_dataset_name(spec)}", unit="row"):
        if isinstance(row, BadSample):
            bad.append(row)
            continue
        key, name, load, caption = row
        if key in unreadable:
            bad.append(unreadable[key])
            continue
        if key not in index:
            if full:
                if scheme == "wds":
                    break  # shards: stop reading at the cap
                continue  # files: keep scanning (cheaply) for more captions of the images already taken
            image = load()
            if isinstance(image, BadSample):
                unreadable[key] = image
                bad.append(image)
                continue
            pending.append(transform(image))
            index[key] = len(images)
            images.append(name)
            full = num_images is not None and len(images) >= num_images
            if len(pending) == batch_size:
                chunks.append(extract_features(model, torch.stack(pending), batch_size, device))
                pending = []
        captions.append(caption)
        text_to_image.append(index[key])
    if pending:
        chunks.append(extract_features(model, torch.stack(pending), batch_size, device))
    if not images:
        raise ValueError(f"{spec}: no usable image-caption pairs ({len(bad)} bad samples"
                         + (f", e.g. {bad[0].source}: {bad[0].reason})" if bad else ")"))
    for sample in bad[:10]:
        logger.warning("skipped %s: %s", sample.source, sample.reason)
    text_features = encode_texts(model, captions, tokenizer, batch_size, device, desc="captions")
    return PairFeatures(torch.cat(chunks), text_features, torch.tensor(text_to_image), images, captions, bad)
