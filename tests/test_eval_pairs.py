"""`alignclip eval/embed` on your own pairs (csv:, captions:, wds:), class-folder spellings, report without pairs."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from alignclip.data.pack import pack
from alignclip.data.synthetic import SyntheticShapes
from alignclip.data.transforms import EvalTransform
from alignclip.evaluation.gap import gap_metrics
from alignclip.evaluation.suite import check_dataset, supported_tasks
from test_eval_cli import cli
from test_eval_data import make_folder


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 images; image i has 1 + i % 2 captions; one row names a missing image."""
    root = tmp_path_factory.mktemp("pairs")
    data = SyntheticShapes(6, seed=4, image_size=32)
    rows = []
    for i in range(6):
        data.raw(i)[0].save(root / f"{i}.png")
        rows += [f"{i}.png\t{c}\n" for c in data.captions_for(i, 1 + i % 2)]
    rows.insert(3, "gone.png\tlost\n")
    (root / "val.tsv").write_text("filepath\ttitle\n" + "".join(rows))
    return root / "val.tsv"


def test_eval_pairs_groups_captions_by_image(checkpoint: Path, pairs_csv: Path, tmp_path: Path) -> None:
    assert cli(["eval", checkpoint, "--dataset", f"tsv:{pairs_csv}", "--out", tmp_path / "out"]) == 0
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert document["num_samples"] == 6 and document["max_samples"] == 1000  # images read, not the --num-samples cap
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    results = {r["task"]: r for r in document["results"]}
    assert set(results) == {"data", "retrieval", "modality_gap"}
    assert results["data"]["metrics"] == {}  # what was read is bookkeeping
    assert {k: results["data"]["info"][k] for k in ("num_images", "num_captions", "num_bad_samples")} == \
        {"num_images": 6, "num_captions": 9, "num_bad_samples": 1}
    assert results["data"]["info"]["bad_samples"] == [[str(pairs_csv.parent / "gone.png"), "image file not found"]]
    assert results["retrieval"]["info"]["num_captions"] == 9 and results["retrieval"]["dataset"] == "tsv/val.tsv"
    assert results["retrieval"]["metrics"]["i2t_recall@10"] == 1.0  # 6 images: every one is in the top 10
    assert results["modality_gap"]["info"]["pairs"] == "image, its own caption"
    assert (tmp_path / "out" / "projection.png").is_file()


def test_embed_matches_the_model_and_feeds_gap(checkpoint: Path, pairs_csv: Path, tmp_path: Path) -> None:
    import alignclip
    from alignclip.data.images import load_image

    out = tmp_path / "emb"
    assert cli(["embed", checkpoint, "--dataset", f"tsv:{pairs_csv}", "--out", out]) == 0
    images, texts = np.load(out / "image_embeddings.npy"), np.load(out / "text_embeddings.npy")
    every = np.load(out / "all_text_embeddings.npy")
    assert images.shape[0] == texts.shape[0] == 6 and every.shape[0] == 9
    rows = (out / "pairs.csv").read_text().splitlines()
    assert rows[0] == "text_row,image_row,image,caption" and len(rows) == 10
    assert [int(r.split(",")[1]) for r in rows[1:]] == [0, 1, 1, 2, 3, 3, 4, 5, 5]
    # reference: the model itself on the same preprocessed image and caption
    model = alignclip.load_checkpoint(checkpoint)
    pixels = EvalTransform(model.image_size)(load_image(str(pairs_csv.parent / "3.png")))[None]
    caption = SyntheticShapes(6, seed=4, image_size=32).captions_for(3, 2)[0]
    with torch.no_grad():
        want_image = model.encode_image(pixels, normalize=True)[0].numpy()
        want_text = model.encode_text(alignclip.get_tokenizer(model.context_length)([caption]), normalize=True)[0]
    np.testing.assert_allclose(images[3], want_image, atol=1e-5)
    np.testing.assert_allclose(texts[3], want_text.numpy(), atol=1e-5)
    assert "lost" not in (out / "pairs.csv").read_text() and "gone.png" in (out / "bad_samples.tsv").read_text()
    assert cli(["gap", out / "image_embeddings.npy", out / "text_embeddings.npy", "--json", out / "gap.json"]) == 0
    measured = json.loads((out / "gap.json").read_text())["results"][0]["metrics"]
    assert measured["l2m"] == pytest.approx(gap_metrics(images, texts)["l2m"], abs=1e-6)


def test_eval_wds_and_captions_folder_give_the_same_pairs(checkpoint: Path, pairs_csv: Path, tmp_path: Path) -> None:
    pack(f"tsv:{pairs_csv}", str(tmp_path / "shards"), image_format="png", samples_per_shard=4, progress=False)
    for i, caption in enumerate(SyntheticShapes(6, seed=4, image_size=32).captions_for(j, 1)[0] for j in range(6)):
        (pairs_csv.parent / f"{i}.txt").write_text(caption)
    for spec, name in ((f"wds:{tmp_path / 'shards'}", "shards"), (f"captions:{pairs_csv.parent}", "folder")):
        assert cli(["embed", checkpoint, "--dataset", spec, "--out", tmp_path / name]) == 0
    csv_out = tmp_path / "csv"
    assert cli(["embed", checkpoint, "--dataset", f"tsv:{pairs_csv}", "--out", csv_out]) == 0
    reference = np.load(csv_out / "image_embeddings.npy")
    shards = json.loads((tmp_path / "shards" / "embed.json").read_text())
    assert (shards["num_images"], shards["num_captions"]) == (6, 9)  # identical PNG bytes -> one image, 2 captions
    np.testing.assert_allclose(np.load(tmp_path / "shards" / "image_embeddings.npy"), reference, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "folder" / "image_embeddings.npy"), reference, atol=1e-5)
    assert cli(["embed", checkpoint, "--dataset", f"tsv:{pairs_csv}", "--num-samples", 2, "--out", tmp_path / "n"]) == 0
    assert json.loads((tmp_path / "n" / "embed.json").read_text())["num_images"] == 2


def test_dataset_spellings(tmp_path: Path) -> None:
    assert supported_tasks("csv:x.csv") == ["retrieval", "gap"] and "retrieval" not in supported_tasks("classes:d")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_dataset("classes:/d") == "classes:/d"
    with pytest.raises(ValueError, match="classes:DIR"):  # one spelling per kind: classes: or captions:
        check_dataset("folder:/d")
    with pytest.raises(ValueError, match="captions:DIR"):
        check_dataset("pets")


def test_eval_classes_and_zeroshot_only_report(checkpoint: Path, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "pets")
    out = tmp_path / "zs"
    assert cli(["eval", checkpoint, "--dataset", f"classes:{folder}", "--tasks", "zeroshot", "--out", out]) == 0
    document = json.loads((out / "metrics.json").read_text())
    assert [r["task"] for r in document["results"]] == ["zeroshot_classification"]
    assert (out / "index.html").is_file() and not (out / "projection.png").exists()  # no pairs: no pair figures
    assert cli(["eval", checkpoint, "--tasks", "zeroshot", "--num-samples", 16, "--out", tmp_path / "syn"]) == 0
    assert (tmp_path / "syn" / "index.html").is_file()
