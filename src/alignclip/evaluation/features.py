"""Frozen-feature extraction from any model with encode_image/encode_text, and loading embeddings of any model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from alignclip.tokenizer import TokenizeFn  # evaluators import it from here too

Images = Union[torch.Tensor, Dataset, Iterable[Any]]


def _image_of(item: Any) -> torch.Tensor:
    """One dataset item or loader batch -> its image tensor (dicts as in the data contract, tuples, bare tensors)."""
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, dict):
        for key in ("images", "image"):
            if key in item:
                return item[key]
        raise ValueError(f"cannot find 'image' or 'images' in a sample with keys {sorted(item)}")
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]
    raise ValueError(f"cannot extract an image tensor from a {type(item).__name__}")


def _collate_images(samples: list[Any]) -> torch.Tensor:
    if any(sample is None for sample in samples):
        raise ValueError("dataset returned an unreadable sample (None); evaluation needs every sample to align labels")
    return torch.stack([_image_of(sample) for sample in samples])


def _batches(images: Images, batch_size: int, num_workers: int) -> tuple[Iterable[torch.Tensor], int | None]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be [N, 3, S, S], got shape {tuple(images.shape)}")
        return images.split(batch_size), images.shape[0]
    if isinstance(images, Dataset) and hasattr(images, "__len__"):
        loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=_collate_images)
        return loader, len(images)  # type: ignore[arg-type]
    return (_image_of(batch) for batch in images), None


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available")
    return device


@torch.no_grad()
def extract_features(model: torch.nn.Module, images_or_loader: Images, batch_size: int = 256,
                     device: str | torch.device | None = "cpu", num_workers: int = 0,
                     desc: str = "image features") -> torch.Tensor:
    """L2-normalised image features [N, D] on CPU from a tensor, a map-style dataset or any iterable of batches."""
    device = resolve_device(device)
    was_training = model.training
    model.eval().to(device)
    batches, total = _batches(images_or_loader, batch_size, num_workers)
    chunks = []
    try:
        with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
            for batch in batches:
                features = model.encode_image(batch.to(device), normalize=True)
                chunks.append(features.float().cpu())
                bar.update(batch.shape[0])
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("no images to extract features from")
    return torch.cat(chunks)


def default_tokenizer(model: torch.nn.Module) -> TokenizeFn:
    """The model's own vocabulary when it has one (a SigLIP folder's files), else alignclip's CLIP BPE."""
    import alignclip

    folder = getattr(model, "tokenizer_folder", None)
    if folder is not None:
        from alignclip.folder_tokenizer import FolderTokenizer
        return FolderTokenizer(folder, model.context_length)
    return alignclip.get_tokenizer(getattr(model, "context_length", 77))


@torch.no_grad()
def encode_texts(model: torch.nn.Module, texts: Sequence[str], tokenizer: TokenizeFn | None = None,
                 batch_size: int = 256, device: str | torch.device | None = "cpu",
                 desc: str = "text features") -> torch.Tensor:
    """L2-normalised text features [N, D] on CPU; tokenizer defaults to alignclip's for the model's context length."""
    if len(texts) == 0:
        raise ValueError("no texts to encode")
    device = resolve_device(device)
    tokenizer = tokenizer or default_tokenizer(model)
    was_training = model.training
    model.eval().to(device)
    chunks = []
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False):
            tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
            chunks.append(model.encode_text(tokens, normalize=True).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def _pick(arrays: dict[str, Any], key: str | None, path: Path) -> Any:
    if key is not None:
        if key not in arrays:
            raise ValueError(f"{path} has no array {key!r}; available: {sorted(arrays)}")
        return arrays[key]
    if len(arrays) != 1:
        raise ValueError(f"{path} holds {len(arrays)} arrays {sorted(arrays)}; pick one with a key")
    return next(iter(arrays.values()))


def load_embeddings(path: str | Path, key: str | None = None) -> np.ndarray:
    """Embeddings [N, D] of any model from .npy, .npz or .safetensors (key picks an array; else the only one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        try:
            if suffix == ".npy":
                array = np.load(path, allow_pickle=False)
            else:
                with np.load(path, allow_pickle=False) as archive:
                    arrays = {name: archive[name] for name in archive.files}
        except (ValueError, OSError, EOFError):  # numpy blames pickles for any bytes it cannot parse
            raise ValueError(f"cannot read {path} as {suffix}: not a numeric array file written by numpy "
                             f"(np.save / np.savez), or it is truncated or holds Python objects") from None
        if suffix == ".npz":
            array = _pick(arrays, key, path)
    elif suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types (bf16, corrupt header)
            raise ValueError(f"cannot read {path} as safetensors: {error}") from None
        array = _pick(arrays, key, path)
    else:
        raise ValueError(f"unsupported embedding file {path}: expected .npy, .npz or .safetensors")
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"embeddings in {path} must be 2-D [N, D], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"embeddings in {path} must be floating point, got {array.dtype}")
    return array.astype(np.float32, copy=False)
