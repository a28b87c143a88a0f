"""Evaluation: modality-gap measures, zero-shot / retrieval / STS / linear-probe evaluators, reports and plots.

Exports are lazy (as in the top-level package) so `import alignclip.evaluation.gap` does not pull scipy/sklearn.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "gap_metrics": "gap", "shift_modalities": "gap", "gap_shift_sweep": "gap", "uniformity": "gap",
    "separability": "gap", "GAP_KEYS": "gap",
    "extract_features": "features", "encode_texts": "features", "load_embeddings": "features",
    "ZeroShotClassifier": "zeroshot", "classification_metrics": "zeroshot",
    "RetrievalEvaluator": "retrieval", "chunked_topk": "retrieval",
    "STSEvaluator": "sts", "read_sts": "sts", "read_sts_tsv": "sts", "read_sts_csv": "sts",
    "LinearProbe": "linear_probe",
    "FashionMNIST": "datasets", "ImageFolderClasses": "datasets", "read_idx": "datasets",
    "evaluate_model": "suite", "embed_pairs": "pairs", "PairFeatures": "pairs",
    "write_report": "report", "write_comparison": "compare", "flatten_metrics": "report", "html_table": "pages",
    "figure_html": "pages", "EvalResult": "result",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"alignclip.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'alignclip.evaluation' has no attribute {name!r}")
