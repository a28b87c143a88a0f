"""A model folder's own tokenizer (SigLIP's SentencePiece, SigLIP 2's Gemma), through transformers' classes.

SigLIP models do not use CLIP's BPE: their ids come from the SentencePiece vocabulary they were trained with, stored
beside the weights (`spiece.model` for SigLIP, `tokenizer.json` / `tokenizer.model` for SigLIP 2's Gemma vocabulary).
transformers reads those files exactly as the model's authors configured them (lower-casing, punctuation, eos, pad
side), and rows are padded to the model's context length, as SigLIP was trained (`padding="max_length"`). Nothing is
downloaded: a folder without the files is a one-line error naming them."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

# The files a tokenizer needs (any one of the vocabularies) and those that configure it.
VOCAB_FILES = ("spiece.model", "tokenizer.json", "tokenizer.model")
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def tokenizer_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return [folder / name for name in VOCAB_FILES + CONFIG_FILES if (folder / name).is_file()]


def has_tokenizer(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in VOCAB_FILES)


def copy_tokenizer(source: str | Path, target: str | Path) -> None:
    """Keep a checkpoint's vocabulary with it (saving, exporting): the ids mean nothing without it."""
    for path in tokenizer_files(source):
        if path.parent.resolve() != Path(target).resolve():
            shutil.copyfile(path, Path(target) / path.name)


class FolderTokenizer:
    """Callable `texts -> LongTensor[N, context_length]`, like alignclip's CLIP tokenizer, from a folder's files.
    The transformers tokenizer is loaded on first use and not pickled (DataLoader workers reload it)."""

    def __init__(self, folder: str | Path, context_length: int) -> None:
        self.folder, self.context_length = Path(folder), int(context_length)
        self._tokenizer: Any = None
        if not has_tokenizer(self.folder):
            raise FileNotFoundError(f"{self.folder}: no tokenizer files; this model's ids come from its own "
                                    f"vocabulary: put {' or '.join(VOCAB_FILES)} (with tokenizer_config.json) "
                                    "from the model's release beside its config.json")

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            except (OSError, ValueError, ImportError) as e:
                raise ValueError(f"{self.folder}: transformers cannot read its tokenizer files "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = self.context_length if context_length is None else int(context_length)
        encoded = self.tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                                 return_tensors="pt")
        return encoded["input_ids"].long()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None}

    def __repr__(self) -> str:
        return f"FolderTokenizer({str(self.folder)!r}, context_length={self.context_length})"
