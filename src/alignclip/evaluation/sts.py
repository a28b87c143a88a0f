"""Semantic textual similarity: Spearman/Pearson between cos(text_a, text_b) and gold scores (STS-B style)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy import stats

from alignclip.evaluation.features import TokenizeFn, encode_texts
from alignclip.evaluation.result import EvalResult

StsPair = tuple[str, str, float]
# STS-B (stsbenchmark.tsv) column order when a file has no header.
STSB_COLUMNS = ("genre", "filename", "year", "id", "score", "sentence1", "sentence2")


def _score(value: str, path: Path, line: int) -> float:
    try:
        score = float(value)
    except ValueError:
        raise ValueError(f"{path}:{line}: score {value!r} is not a number") from None
    if not np.isfinite(score):
        raise ValueError(f"{path}:{line}: score {value!r} is not finite")
    return score


def _rows(path: Path, delimiter: str, quoting: int) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"STS file not found: {path}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8", newline="") as handle:
        return [row for row in csv.reader(handle, delimiter=delimiter, quoting=quoting) if any(f.strip() for f in row)]


def _columns(first_row: list[str], wanted: Sequence[str], default: Sequence[int]) -> tuple[list[int], bool]:
    """Column positions of `wanted` from a header row, or `default` when the first row is data."""
    header = [field.strip().lower() for field in first_row]
    if all(name in header for name in wanted):
        return [header.index(name) for name in wanted], True
    return list(default), False


def _read(path: str | Path, delimiter: str, quoting: int, default: Sequence[int]) -> list[StsPair]:
    path = Path(path)
    rows = _rows(path, delimiter, quoting)
    if not rows:
        raise ValueError(f"STS file {path} is empty")
    (i_a, i_b, i_score), has_header = _columns(rows[0], ("sentence1", "sentence2", "score"), default)
    pairs = []
    for line, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if len(row) <= max(i_a, i_b, i_score):
            raise ValueError(f"{path}:{line}: expected at least {max(i_a, i_b, i_score) + 1} columns, got {len(row)}")
        pairs.append((row[i_a].strip(), row[i_b].strip(), _score(row[i_score], path, line)))
    if not pairs:
        raise ValueError(f"STS file {path} has a header but no pairs")
    return pairs


def read_sts_tsv(path: str | Path) -> list[StsPair]:
    """STS-B layout (genre, filename, year, id, score, sentence1, sentence2), tab-separated, header optional.

    csv.QUOTE_NONE because STS-B sentences contain unbalanced quotes; extra trailing columns are ignored.
    """
    return _read(path, "\t", csv.QUOTE_NONE, default=(5, 6, 4))


def read_sts_csv(path: str | Path) -> list[StsPair]:
    """Plain CSV: sentence1, sentence2, score (header optional, standard quoting)."""
    return _read(path, ",", csv.QUOTE_MINIMAL, default=(0, 1, 2))


def read_sts(path: str | Path) -> list[StsPair]:
    """Dispatch on the suffix: .tsv/.txt -> STS-B layout, .csv -> plain CSV."""
    suffix = Path(path).suffix.lower()
    if suffix in (".tsv", ".txt"):
        return read_sts_tsv(path)
    if suffix == ".csv":
        return read_sts_csv(path)
    raise ValueError(f"unsupported STS file {path}: expected .tsv (STS-B layout) or .csv (sentence1,sentence2,score)")


def correlations(predicted: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> dict[str, float]:
    predicted, gold = np.asarray(predicted, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if len(predicted) < 2:
        raise ValueError(f"STS needs at least 2 pairs, got {len(predicted)}")
    if np.ptp(gold) == 0:
        raise ValueError("STS gold scores are all equal; correlation is undefined")
    if np.ptp(predicted) == 0:  # a collapsed encoder: report no correlation rather than NaN
        return {"spearman": 0.0, "pearson": 0.0}
    return {"spearman": float(stats.spearmanr(predicted, gold)[0]), "pearson": float(stats.pearsonr(predicted, gold)[0])}


class STSEvaluator:
    """Cosine of model.encode_text for both sentences, correlated with the gold scores."""

    def __init__(self, pairs: Sequence[StsPair], dataset: str = "sts", tokenizer: TokenizeFn | None = None,
                 batch_size: int = 256, device: str | torch.device | None = "cpu") -> None:
        if len(pairs) < 2:
            raise ValueError(f"STS set {dataset!r} needs at least 2 pairs, got {len(pairs)}")
        self.pairs, self.dataset, self.tokenizer = list(pairs), dataset, tokenizer
        self.batch_size, self.device = batch_size, device

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "STSEvaluator":
        return cls(read_sts(path), dataset=kwargs.pop("dataset", Path(path).stem), **kwargs)

    def evaluate_encoder(self, encode: Callable[[list[str]], torch.Tensor]) -> EvalResult:
        """Any text encoder (e.g. a SemanticEncoder's encode); each unique sentence is encoded once."""
        sentences = sorted({s for a, b, _ in self.pairs for s in (a, b)})
        position = {s: i for i, s in enumerate(sentences)}
        features = torch.nn.functional.normalize(torch.as_tensor(encode(sentences)).float(), dim=-1)
        a = features[[position[p[0]] for p in self.pairs]]
        b = features[[position[p[1]] for p in self.pairs]]
        cosine = (a * b).sum(dim=1).numpy()
        metrics = correlations(cosine, [p[2] for p in self.pairs])
        return EvalResult(self.dataset, "sts", metrics, {"num_pairs": len(self.pairs)})

    def evaluate(self, model: torch.nn.Module) -> EvalResult:
        return self.evaluate_encoder(
            lambda texts: encode_texts(model, texts, self.tokenizer, self.batch_size, self.device, desc="STS"))
