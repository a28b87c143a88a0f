"""CLIP's byte-level BPE tokenizer, id-for-id the same as OpenAI CLIP / open_clip's ``SimpleTokenizer``.

Why our own copy: open-clip-torch pins torchvision and pulls CUDA builds. Its text cleaning runs ``ftfy.fix_text``
first, and that changes the ids of ordinary captions (``the dog’s toy``, ``a “red” car``, ``ﬁsh``, decomposed
accents, ``cafÃ©``), so ftfy is a required dependency here too (pure Python, one small dependency, ~50 ms import):
its mojibake repair is heuristic and version-dependent (ftfy 6.0-6.2 disagree with 6.3 on a few strings), so
re-implementing it could not promise open_clip's ids. ``tests/goldens/tokenizer_openclip.json.gz`` holds open_clip
3.3's ids for ~15k varied strings (see ``scripts/make_tokenizer_goldens.py``).

The vocab (a 1.3 MB gzip of merges, MIT, from OpenAI CLIP via open_clip; see ``assets/LICENSE-bpe-vocab.txt``) is
loaded once per process into a module-level cache, so a ``Tokenizer`` is just a context length: pickling it into
DataLoader workers costs nothing, and every worker shares the same cached word -> ids table after fork.
"""
from __future__ import annotations

import gzip
import html
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Callable, Sequence, Union

import numpy as np
import regex
import torch

try:
    import ftfy
except ImportError as e:  # only a broken install gets here: ftfy is in the package's dependencies
    raise ImportError("alignclip's tokenizer needs ftfy>=6.3 to give open_clip's token ids "
                      "(curly quotes, ligatures, accents, mojibake); install it with: pip install 'ftfy>=6.3'") from e
DEFAULT_CONTEXT_LENGTH = 77
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48894: the merges CLIP actually uses (file lines 1..48894 after the header)

# Same pattern as open_clip: special tokens, English contractions, letter runs, single digits, punctuation runs.
_PATTERN = regex.compile(
    SOT_TOKEN + "|" + EOT_TOKEN + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)

Ids = Union[Sequence[int], np.ndarray, torch.Tensor]
# Any callable texts -> token ids [N, L]: our Tokenizer, open_clip's tokenizer, a test fake (collate, evaluation).
TokenizeFn = Callable[[list[str]], torch.Tensor]


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode char, so BPE never sees whitespace/control chars (GPT-2 / CLIP trick)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@dataclass(frozen=True)
class _Vocab:
    encoder: dict[str, int]
    decoder: list[str]
    bpe_ranks: dict[tuple[str, str], int]
    byte_table: dict[int, str]  # str.translate table: latin-1 code point (= byte) -> BPE unicode char
    unbyte_table: dict[int, int]  # inverse: BPE unicode char -> byte value


@lru_cache(maxsize=1)
def _vocab() -> _Vocab:
    """Load the merges from package data once per process (~0.3 s)."""
    data = resources.files("alignclip").joinpath("assets").joinpath(MERGES_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")[1 : NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"corrupt BPE merges file {MERGES_FILE}: expected {NUM_MERGES} merge pairs")
    byte_enc = bytes_to_unicode()
    vocab = list(byte_enc.values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
    return _Vocab(
        encoder={tok: i for i, tok in enumerate(vocab)},
        decoder=vocab,
        bpe_ranks={m: i for i, m in enumerate(merges)},
        byte_table={b: c for b, c in byte_enc.items()},
        unbyte_table={ord(c): b for b, c in byte_enc.items()},
    )


def _get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word[:-1], word[1:]))


def _bpe(token: str, ranks: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """Greedily apply the lowest-rank merge until none applies (CLIP's bpe(), returning the symbols)."""
    word = tuple(token[:-1]) + (token[-1] + "</w>",)
    pairs = _get_pairs(word)
    if not pairs:
        return (token + "</w>",)
    inf = float("inf")
    while True:
        bigram = min(pairs, key=lambda p: ranks.get(p, inf))
        if bigram not in ranks:
            break
        first, second = bigram
        new_word: list[str] = []
        i = 0
        while i < len(word):
            try:
                j = word.index(first, i)
            except ValueError:
                new_word.extend(word[i:])
                break
            new_word.extend(word[i:j])
            i = j
            if i < len(word) - 1 and word[i + 1] == second:
                new_word.append(first + second)
                i += 2
            else:
                new_word.append(first)
                i += 1
        word = tuple(new_word)
        if len(word) == 1:
            break
        pairs = _get_pairs(word)
    return word


@lru_cache(maxsize=1 << 18)
def _word_ids(word: str) -> tuple[int, ...]:
    """LRU-cached BPE of one pre-tokenized word -> ids (captions reuse a small vocabulary, so this is the hot path)."""
    v = _vocab()
    if word == SOT_TOKEN or word == EOT_TOKEN:
        return (v.encoder[word],)
    token = word.encode("utf-8").decode("latin-1").translate(v.byte_table)
    return tuple(v.encoder[sym] for sym in _bpe(token, v.bpe_ranks))


def fix_text(text: str) -> str:
    """``ftfy.fix_text``, skipped on printable ASCII without '&', where every ftfy fix is the identity (3x faster
    tokenization of plain captions; tests/test_tokenizer.py checks the shortcut against ftfy)."""
    if text.isascii() and text.isprintable() and "&" not in text:
        return text
    return ftfy.fix_text(text)


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning: ftfy, double html-unescape, collapse whitespace, lower-case."""
    text = fix_text(text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


class Tokenizer:
    """Callable ``texts -> LongTensor[N, context_length]``: sot, BPE ids, eot, zero padding (open_clip layout)."""

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        self.context_length = self._check_length(context_length)

    @staticmethod
    def _check_length(context_length: int) -> int:
        if int(context_length) < 2:
            raise ValueError(f"context_length must be >= 2 (room for sot and eot), got {context_length}")
        return int(context_length)

    @property
    def vocab_size(self) -> int:
        return len(_vocab().decoder)

    @property
    def sot_token_id(self) -> int:
        return _vocab().encoder[SOT_TOKEN]

    @property
    def eot_token_id(self) -> int:
        return _vocab().encoder[EOT_TOKEN]

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without sot/eot and without truncation."""
        ids: list[int] = []
        for word in _PATTERN.findall(clean_text(text)):
            ids.extend(_word_ids(word))
        return ids

    def decode(self, ids: Ids, skip_special_tokens: bool = True) -> str:
        """Ids -> text. By default drops sot and stops at the first eot, so a padded row decodes cleanly;
        ``skip_special_tokens=False`` gives open_clip's raw decode (special tokens spelled out, trailing space)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        elif isinstance(ids, np.ndarray):
            ids = ids.tolist()
        v = _vocab()
        sot, eot = v.encoder[SOT_TOKEN], v.encoder[EOT_TOKEN]
        if skip_special_tokens:
            kept: list[int] = []
            for i in ids:
                if i == eot:
                    break
                if i != sot:
                    kept.append(i)
            ids = kept
        try:
            text = "".join(v.decoder[int(i)] for i in ids)
        except IndexError as e:
            raise ValueError(f"token id out of range [0, {len(v.decoder)}): {e}") from None
        # Special tokens are plain ASCII, so they survive the byte mapping as their own spelling.
        raw = text.translate(v.unbyte_table).encode("latin-1", errors="replace")
        text = raw.decode("utf-8", errors="replace").replace("</w>", " ")
        return text.strip() if skip_special_tokens else text

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Tokenize one string or a list; too-long texts are truncated keeping eot as the last token."""
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length if context_length is None else self._check_length(context_length)
        sot, eot = self.sot_token_id, self.eot_token_id
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > length - 2:
                ids = ids[: length - 2]
            out[row, 0] = sot
            out[row, 1 : len(ids) + 1] = ids
            out[row, len(ids) + 1] = eot
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"Tokenizer(context_length={self.context_length})"


def get_tokenizer(context_length: int = DEFAULT_CONTEXT_LENGTH) -> Tokenizer:
    """CLIP BPE tokenizer producing ``[N, context_length]`` rows; pass ``model.context_length`` to match a model."""
    return Tokenizer(context_length)
