"""Synthetic shapes dataset, captions, STS pairs and the collate function."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch

from alignclip.data.captions import COLORS, POSITIONS, SHAPES, SIZES
from alignclip.data.collate import Collate
from alignclip.data.synthetic import (ATTRIBUTES, BACKGROUND_RGB, COLOR_RGB, SyntheticShapes, synthetic_sts,
                                      zeroshot_tasks)


class FakeTokenizer:
    """Picklable stand-in for alignclip.get_tokenizer: one id per word, padded to a fixed length."""

    context_length = 12

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [1 + sum(map(ord, w)) % 1000 for w in text.lower().split()][: self.context_length]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


def _mentions(text: str, words: list[str]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text.lower()) for w in words)


def test_synthetic_is_deterministic_per_seed_and_index():
    a, b = SyntheticShapes(1000, seed=3), SyntheticShapes(1000, seed=3)
    for i in (0, 7, 999):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"]) and sa["caption"] == sb["caption"]
        assert sa["labels"] == sb["labels"]
    assert a[5]["image"].shape == (3, 32, 32) and a[5]["image"].dtype == torch.float32
    assert torch.equal(a[-1]["image"], a[999]["image"])
    other = SyntheticShapes(1000, seed=4)
    assert sum(a[i]["caption"] != other[i]["caption"] for i in range(20)) >= 18
    held_out = SyntheticShapes(1000, seed=3, train=False)
    assert sum(not torch.equal(a[i]["image"], held_out[i]["image"]) for i in range(20)) == 20
    with pytest.raises(IndexError):
        a[1000]
    assert SyntheticShapes(10, image_size=64)[0]["image"].shape == (3, 64, 64)


def test_captions_are_varied_and_paraphrases_differ():
    ds = SyntheticShapes(10**7)
    captions = [ds[i]["caption"] for i in range(300)]
    assert len(set(captions)) >= 295
    words = {w for c in captions for w in c.lower().split()}
    assert len(words) > 120  # many synonyms and templates in use
    for i in range(20):
        paraphrases = ds.captions_for(i, 5)
        assert len(set(paraphrases)) == 5
        assert paraphrases[0] == ds[i]["caption"]  # the training caption is one of them


def test_labels_match_captions():
    ds = SyntheticShapes(10**6, seed=1)
    with_color = 0
    for i in range(200):
        labels, text = ds.labels_for(i), ds[i]["caption"]
        assert _mentions(text, SHAPES[ATTRIBUTES["shape"][labels["shape"]]])  # the shape is never left out
        with_color += _mentions(text, COLORS[ATTRIBUTES["color"][labels["color"]]])
        for full in ds.captions_for(i, 2, complete=True):
            assert _mentions(full, COLORS[ATTRIBUTES["color"][labels["color"]]]), full
            assert _mentions(full, SIZES[ATTRIBUTES["size"][labels["size"]]]), full
            if labels["num_shapes"] == 0:
                assert _mentions(full, POSITIONS[ATTRIBUTES["position"][labels["position"]]]), full
    assert with_color >= 180  # colour is only rarely omitted


def test_images_match_labels():
    """The pixel at a filled shape's centre has its colour; the drawn pixels lie on the labelled side."""
    ds = SyntheticShapes(10**6, seed=2, image_size=64, two_shape_prob=0.0)
    filled = {"circle", "square", "triangle", "diamond", "star", "cross"}
    checked = 0
    for i in range(120):
        scene = ds.scene(i)
        spec, array = scene.shapes[0], np.asarray(ds.raw(i)[0], dtype=np.float32)
        if ATTRIBUTES["shape"][spec.shape] in filled:
            pixel = array[int(spec.cy * 64), int(spec.cx * 64)]
            assert np.abs(pixel - np.asarray(COLOR_RGB[ATTRIBUTES["color"][spec.color]])).max() < 40
            checked += 1
        mask = np.abs(array - np.asarray(scene.bg_rgb, dtype=np.float32)).max(axis=2) > 40
        ys, xs = np.nonzero(mask)
        x, y = xs.mean() / 64, ys.mean() / 64
        position = ATTRIBUTES["position"][spec.position]
        expect = {"left": x < 0.4, "right": x > 0.6, "top": y < 0.4, "bottom": y > 0.6,
                  "centre": abs(x - 0.5) < 0.1 and abs(y - 0.5) < 0.1}[position]
        assert expect, (i, position, x, y)
    assert checked > 50
    assert set(BACKGROUND_RGB) == set(ATTRIBUTES["background"])


def test_zeroshot_tasks_match_attributes():
    tasks = zeroshot_tasks()
    assert {"shape", "color", "size", "position"} <= set(tasks)
    for attribute, (classes, templates) in tasks.items():
        assert classes == ATTRIBUTES[attribute]
        assert len(templates) >= 3 and all("{}" in t for t in templates)
    assert SyntheticShapes(5).zeroshot_tasks() == tasks


def test_synthetic_sts_spreads_gold_scores():
    pairs = synthetic_sts(300, seed=0)
    assert pairs == synthetic_sts(300, seed=0) and pairs != synthetic_sts(300, seed=1)
    golds = [g for _, _, g in pairs]
    assert set(golds) == {0.0, 1.25, 2.5, 3.75, 5.0}
    assert min(golds.count(g) for g in set(golds)) >= 30
    assert all(a != b for a, b, g in pairs if g == 5.0)  # paraphrases, not copies


def test_collate_drops_and_counts_bad_samples():
    ds = SyntheticShapes(10)
    collate = Collate(FakeTokenizer())
    batch = collate([ds[0], None, ds[1], None, ds[2]])
    assert batch.images.shape == (3, 3, 32, 32)
    assert batch.tokens.shape == (3, 12) and batch.tokens.dtype == torch.long
    assert batch.captions == [ds[i]["caption"] for i in range(3)]
    assert batch.num_skipped == 2
    assert torch.equal(batch.labels["shape"], torch.tensor([ds.labels_for(i)["shape"] for i in range(3)]))
    empty = Collate(FakeTokenizer(), image_size=32)([None, None])
    assert empty.images.shape == (0, 3, 32, 32) and empty.tokens.shape == (0, 12)
    assert empty.num_skipped == 2 and empty.captions == []
    clone = pickle.loads(pickle.dumps(collate))  # DataLoader workers receive a pickled copy
    assert torch.equal(clone([ds[0]]).tokens, collate([ds[0]]).tokens)


def test_synthetic_through_dataloader_workers():
    ds = SyntheticShapes(16, seed=5)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=Collate(FakeTokenizer()))
    captions = [c for batch in loader for c in batch.captions]
    assert captions == [ds[i]["caption"] for i in range(16)]
