"""Image<->text retrieval Recall@K with several captions per image, in bounded memory (blocked running top-k)."""
from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from alignclip.evaluation.features import Images, TokenizeFn, encode_texts, extract_features
from alignclip.evaluation.gap import unit_rows
from alignclip.evaluation.result import EvalResult


def chunked_topk(queries: torch.Tensor, keys: torch.Tensor, k: int, query_chunk: int = 1024,
                 key_chunk: int = 16384, device: str | torch.device = "cpu",
                 desc: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k dot products of every query over all keys: ([Q, k] scores, [Q, k] key indices), best first.

    Scores only ever exist for one (query_chunk x key_chunk) tile; each tile's top-k is merged into the running
    top-k with another torch.topk, so the working memory is O(query_chunk * (key_chunk + k)) beyond the inputs,
    whatever the key count.
    """
    k = min(k, keys.shape[0])
    keys = keys.to(device)  # once, not once per query chunk (a no-op on CPU)
    all_values, all_indices = [], []
    starts = range(0, queries.shape[0], query_chunk)
    for start in tqdm(starts, desc=desc, leave=False, disable=desc is None):
        q = queries[start:start + query_chunk].to(device)
        best_values = torch.full((q.shape[0], 0), float("-inf"), device=device)
        best_indices = torch.zeros((q.shape[0], 0), dtype=torch.long, device=device)
        for key_start in range(0, keys.shape[0], key_chunk):
            scores = q @ keys[key_start:key_start + key_chunk].T
            values, indices = scores.topk(min(k, scores.shape[1]), dim=1)
            merged_values = torch.cat([best_values, values], dim=1)
            merged_indices = torch.cat([best_indices, indices + key_start], dim=1)
            best_values, order = merged_values.topk(min(k, merged_values.shape[1]), dim=1)
            best_indices = merged_indices.gather(1, order)
        all_values.append(best_values.cpu())
        all_indices.append(best_indices.cpu())
    return torch.cat(all_values), torch.cat(all_indices)


class RetrievalEvaluator:
    """Recall@K both ways. text->image: hit if the caption's own image is in the top K; image->text: any of its captions."""

    def __init__(self, ks: Sequence[int] = (1, 5, 10), dataset: str = "custom", tokenizer: TokenizeFn | None = None,
                 batch_size: int = 256, device: str | torch.device | None = "cpu", query_chunk: int = 1024,
                 key_chunk: int = 16384) -> None:
        if not ks or min(ks) < 1:
            raise ValueError(f"recall cut-offs must be positive integers, got {list(ks)}")
        self.ks, self.dataset, self.tokenizer = sorted(set(int(k) for k in ks)), dataset, tokenizer
        self.batch_size, self.device = batch_size, device
        self.query_chunk, self.key_chunk = query_chunk, key_chunk

    def evaluate_features(self, image_features: torch.Tensor, text_features: torch.Tensor,
                          text_to_image: torch.Tensor | Sequence[int]) -> EvalResult:
        """Metrics from features; text_to_image[j] is the index of the image that caption j describes."""
        text_to_image = torch.as_tensor(text_to_image, dtype=torch.long)
        if text_to_image.ndim != 1 or text_to_image.shape[0] != text_features.shape[0]:
            raise ValueError(f"text_to_image needs one image index per caption ({text_features.shape[0]}), "
                             f"got shape {tuple(text_to_image.shape)}")
        num_images = image_features.shape[0]
        if num_images == 0 or text_features.shape[0] == 0:
            raise ValueError("retrieval needs at least one image and one caption")
        if text_to_image.min() < 0 or text_to_image.max() >= num_images:
            raise ValueError(f"text_to_image indices must lie in [0, {num_images})")
        images = unit_rows(image_features, "image_features")
        texts = unit_rows(text_features, "text_features")
        if images.shape[1] != texts.shape[1]:
            raise ValueError(f"image features have dim {images.shape[1]} but text features {texts.shape[1]}")
        device = self.device or "cpu"
        k_max = max(self.ks)
        metrics: dict[str, float] = {}

        _, image_hits = chunked_topk(texts, images, k_max, self.query_chunk, self.key_chunk, device, "text->image")
        correct = image_hits == text_to_image[:, None]
        for k in self.ks:
            metrics[f"t2i_recall@{k}"] = float(correct[:, :k].any(dim=1).double().mean())

        _, text_hits = chunked_topk(images, texts, k_max, self.query_chunk, self.key_chunk, device, "image->text")
        correct = text_to_image[text_hits] == torch.arange(num_images)[:, None]
        for k in self.ks:
            metrics[f"i2t_recall@{k}"] = float(correct[:, :k].any(dim=1).double().mean())
        info = {"num_images": num_images, "num_captions": texts.shape[0]}
        return EvalResult(self.dataset, "retrieval", metrics, info)

    def evaluate(self, model: torch.nn.Module, images: Images, captions: Sequence[Sequence[str]]) -> EvalResult:
        """captions[i] is the list of captions of image i (any number >= 1 each)."""
        flat = [caption for group in captions for caption in group]
        text_to_image = [i for i, group in enumerate(captions) for _ in group]
        if any(len(group) == 0 for group in captions):
            raise ValueError("every image needs at least one caption for retrieval")
        image_features = extract_features(model, images, self.batch_size, self.device)
        if image_features.shape[0] != len(captions):
            raise ValueError(f"{image_features.shape[0]} images but captions for {len(captions)}")
        text_features = encode_texts(model, flat, self.tokenizer, self.batch_size, self.device)
        return self.evaluate_features(image_features, text_features, text_to_image)
