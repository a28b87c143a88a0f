"""Zero-shot, retrieval, STS and linear-probe evaluators on fake encoders with hand-worked answers."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alignclip.evaluation.linear_probe import LinearProbe
from alignclip.evaluation.retrieval import RetrievalEvaluator, chunked_topk
from alignclip.evaluation.sts import STSEvaluator, correlations, read_sts, read_sts_csv, read_sts_tsv
from alignclip.evaluation.zeroshot import ZeroShotClassifier, classification_metrics

FIXTURE = Path(__file__).parent / "fixtures" / "sts_small.tsv"


class FakeTokenizer:
    """Token 0 = index of the first vocabulary word found in the text, token 1 = index of the template."""

    def __init__(self, vocab: list[str], templates: list[str] = ()) -> None:
        self.vocab, self.templates = vocab, list(templates)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            word = max((w for w in self.vocab if w in text), key=len)
            template = next((i for i, t in enumerate(self.templates) if t.format(word) == text), 0)
            rows.append([self.vocab.index(word), template])
        return torch.tensor(rows)


class FakeCLIP(nn.Module):
    """Image features are written into pixel row 0 of channel 0; text features = word row + template offset."""

    image_size, context_length = 8, 2

    def __init__(self, word_table: torch.Tensor, template_table: torch.Tensor | None = None) -> None:
        super().__init__()
        self.word_table = nn.Parameter(word_table.float(), requires_grad=False)
        dim = word_table.shape[1]
        self.template_table = nn.Parameter(torch.zeros(1, dim) if template_table is None else template_table.float(),
                                           requires_grad=False)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = images[:, 0, 0, : self.word_table.shape[1]]
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.word_table[tokens[:, 0]] + self.template_table[tokens[:, 1]]
        return F.normalize(features, dim=-1) if normalize else features


def images_from(features: torch.Tensor, size: int = 8) -> torch.Tensor:
    images = torch.zeros(features.shape[0], 3, size, size)
    images[:, 0, 0, : features.shape[1]] = features
    return images


def test_zeroshot_top1_and_per_class_recall_by_hand() -> None:
    names = ["cat", "dog", "bird"]
    model = FakeCLIP(torch.eye(3))
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    predicted = torch.tensor([0, 0, 0, 0, 2, 2])  # the dog is taken for a bird
    classifier = ZeroShotClassifier(names, ["a photo of a {}."], dataset="toy", tokenizer=FakeTokenizer(names))
    result = classifier.evaluate(model, images_from(F.one_hot(predicted, 3).float() + 0.01), labels)
    assert result.dataset == "toy" and result.task == "zeroshot_classification"
    assert result.info == {"num_samples": 6, "num_classes": 3, "num_templates": 1}  # bookkeeping, not scores
    m = result.metrics
    assert m["top1"] == pytest.approx(5 / 6)
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0 + 1) / 3)
    assert "top5" not in m  # fewer than 5 classes


def test_top5_only_misses_the_last_ranked_class() -> None:
    # 6 classes; image scores rank the classes in a known order.
    scores = torch.tensor([[6, 5, 4, 3, 2, 1.0], [1, 2, 3, 4, 5, 6.0], [6, 5, 4, 3, 2, 1.0]])
    m = classification_metrics(scores, torch.tensor([5, 5, 1]))
    assert m["top1"] == pytest.approx(1 / 3)  # only the second image is right
    assert m["top5"] == pytest.approx(2 / 3)  # class 5 is ranked last for image 0
    assert m["mean_per_class_recall"] == pytest.approx((0.5 + 0.0) / 2)


def test_prompt_ensemble_is_mean_of_normalised_prompts_renormalised() -> None:
    names, templates = ["cat", "dog"], ["a {}.", "a photo of a {}.", "art of a {}."]
    words = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    template_table = torch.tensor([[0, 0, 0.5], [0, 0, -2.0], [0.3, 0, 1.0]])
    model = FakeCLIP(words, template_table)
    classifier = ZeroShotClassifier(names, templates, tokenizer=FakeTokenizer(names, templates))
    expected = F.normalize(torch.stack([F.normalize(words[c] + template_table, dim=-1).mean(0) for c in range(2)]),
                           dim=-1)
    assert torch.allclose(classifier.class_embeddings(model), expected, atol=1e-6)


@pytest.mark.parametrize("names, templates, message", [
    ([], ["a {}."], "empty class list"),
    (["cat"], [], "no prompt templates"),
    (["cat"], ["a photo"], "no '{}' placeholder"),
])
def test_zeroshot_rejects_bad_tasks(names: list[str], templates: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ZeroShotClassifier(names, templates)


def test_classification_metrics_rejects_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match="labels must lie in"):
        classification_metrics(torch.zeros(2, 3), torch.tensor([0, 3]))


def unit(*xy: float) -> list[float]:
    return [v / math.hypot(*xy) for v in xy]


def test_retrieval_recall_by_hand_with_several_captions_per_image() -> None:
    images = torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0]])
    captions = torch.tensor([unit(1, 0.1), unit(0.1, 1), unit(0.3, 1), unit(-1, 0.2), unit(0.2, 1)])
    owner = [0, 0, 1, 2, 2]
    result = RetrievalEvaluator(ks=(1, 2, 3)).evaluate_features(images, captions, owner)
    m = result.metrics
    # text->image ranks of the own image: 1, 2, 1, 1, 3
    assert m["t2i_recall@1"] == pytest.approx(3 / 5)
    assert m["t2i_recall@2"] == pytest.approx(4 / 5)
    assert m["t2i_recall@3"] == pytest.approx(1.0)
    # image->text: image 1's best captions belong to images 0 and 2; its own is third
    assert m["i2t_recall@1"] == pytest.approx(2 / 3)
    assert m["i2t_recall@2"] == pytest.approx(2 / 3)
    assert m["i2t_recall@3"] == pytest.approx(1.0)
    assert result.info == {"num_images": 3, "num_captions": 5} and "num_images" not in m


def test_chunked_topk_matches_full_topk() -> None:
    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(23, 6, generator=g), torch.randn(41, 6, generator=g)
    values, indices = chunked_topk(queries, keys, k=10, query_chunk=7, key_chunk=5)  # tiles smaller than k
    full_values, full_indices = (queries @ keys.T).topk(10, dim=1)
    assert torch.allclose(values, full_values, atol=1e-6) and torch.equal(indices, full_indices)
    values, _ = chunked_topk(queries, keys[:4], k=10)
    assert values.shape == (23, 4)  # k clamps to the number of keys


def test_retrieval_through_a_model() -> None:
    names = ["red", "green", "blue"]
    model = FakeCLIP(torch.eye(3))
    captions = [["a red thing", "something red"], ["green!"], ["blue sky", "deep blue"]]
    evaluator = RetrievalEvaluator(ks=(1,), dataset="toy", tokenizer=FakeTokenizer(names))
    result = evaluator.evaluate(model, images_from(torch.eye(3)), captions)
    assert result.task == "retrieval"
    assert result.metrics["t2i_recall@1"] == 1.0 and result.metrics["i2t_recall@1"] == 1.0


def test_retrieval_rejects_bad_input() -> None:
    evaluator = RetrievalEvaluator()
    with pytest.raises(ValueError, match="one image index per caption"):
        evaluator.evaluate_features(torch.eye(2), torch.eye(2), [0])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\)"):
        evaluator.evaluate_features(torch.eye(2), torch.eye(2), [0, 2])
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluator.evaluate_features(torch.tensor([[1.0, float("nan")]]), torch.eye(2), [0, 0])
    with pytest.raises(ValueError, match="recall cut-offs"):
        RetrievalEvaluator(ks=(0, 1))


def test_read_stsb_fixture_with_header_and_unbalanced_quotes() -> None:
    pairs = read_sts_tsv(FIXTURE)
    assert len(pairs) == 20
    assert pairs[0] == ("A man is playing a guitar.", "A man plays the guitar.", 5.0)
    assert pairs[16] == ('"Quotes" can be left unbalanced here.', 'Quotes can be left "unbalanced here.', 4.4)
    assert read_sts(FIXTURE) == pairs


def test_read_headerless_stsb_with_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "sts-dev.tsv"
    path.write_text("main-captions\tMSRvid\t2012\t0001\t3.5\tA dog runs.\tA dog is running.\tsrc1\tsrc2\n"
                    "main-news\theadlines\t2013\t0002\t0.5\tIt rains.\tStocks rise.\n")
    assert read_sts(path) == [("A dog runs.", "A dog is running.", 3.5), ("It rains.", "Stocks rise.", 0.5)]


def test_read_plain_csv_with_and_without_header(tmp_path: Path) -> None:
    with_header = tmp_path / "a.csv"
    with_header.write_text('sentence1,sentence2,score\n"Hello, world",Hi world,4\n')
    without = tmp_path / "b.csv"
    without.write_text("x,y,1.5\n")
    assert read_sts_csv(with_header) == [("Hello, world", "Hi world", 4.0)]
    assert read_sts(without) == [("x", "y", 1.5)]


def test_sts_readers_name_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,1\nc,d,high\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: score 'high' is not a number"):
        read_sts(bad)
    short = tmp_path / "short.tsv"
    short.write_text("g\tf\t2012\t1\t2.0\tonly one sentence\n")
    with pytest.raises(ValueError, match=r"short.tsv:1: expected at least 7 columns"):
        read_sts(short)
    with pytest.raises(FileNotFoundError, match="STS file not found"):
        read_sts(tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match="expected .tsv"):
        read_sts(tmp_path / "x.json")


def test_sts_correlations_by_hand() -> None:
    # sentences are points on the circle; cos(a, b) = cos of the angle between them
    angle = {"s0": 0, "s1": 10, "s2": 60, "s3": 120, "s4": 170}
    pairs = [("s0", "s1", 4.5), ("s0", "s2", 3.0), ("s0", "s3", 1.0), ("s0", "s4", 0.0)]

    def encode(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[math.cos(math.radians(angle[t])), math.sin(math.radians(angle[t]))] for t in texts])

    m = STSEvaluator(pairs, dataset="toy").evaluate_encoder(encode).metrics
    cosines = [math.cos(math.radians(d)) for d in (10, 60, 120, 170)]
    assert m["spearman"] == pytest.approx(1.0)
    assert m["pearson"] == pytest.approx(np.corrcoef(cosines, [4.5, 3.0, 1.0, 0.0])[0, 1])
    reversed_gold = [(a, b, 5 - s) for a, b, s in pairs]
    assert STSEvaluator(reversed_gold).evaluate_encoder(encode).metrics["spearman"] == pytest.approx(-1.0)


def test_sts_through_model_encode_text_and_degenerate_cases() -> None:
    names = ["cat", "dog", "car"]
    model = FakeCLIP(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]))
    pairs = [("a cat", "a dog", 3.0), ("a cat", "a car", 0.5), ("the dog", "dog", 5.0)]
    result = STSEvaluator(pairs, tokenizer=FakeTokenizer(names)).evaluate(model)
    assert result.metrics["spearman"] == pytest.approx(1.0) and result.info["num_pairs"] == 3
    assert correlations([0.5, 0.5, 0.5], [1, 2, 3]) == {"spearman": 0.0, "pearson": 0.0}
    with pytest.raises(ValueError, match="all equal"):
        correlations([0.1, 0.2], [3, 3])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        STSEvaluator(pairs[:1])


def test_fixture_gold_agrees_with_a_real_sentence_encoder(tmp_path: Path) -> None:
    """The hand-written gold scores are honest: MiniLM (offline) ranks the pairs the same way."""
    from alignclip.semantic import SemanticEncoder

    encoder = SemanticEncoder(cache_dir=tmp_path)
    metrics = STSEvaluator.from_file(FIXTURE).evaluate_encoder(encoder.encode).metrics
    assert metrics["spearman"] > 0.85 and metrics["pearson"] > 0.85


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    return centres[labels] + 0.15 * torch.randn(n, 4, generator=g), labels


def test_linear_probe_separable_blobs_and_no_signal() -> None:
    x_train, y_train = blobs(90, 0)
    x_test, y_test = blobs(60, 1)
    probe = LinearProbe(Cs=(0.01, 1.0, 100.0), dataset="blobs")
    result = probe.evaluate_features(x_train, y_train, x_test, y_test)
    assert result.task == "linear_probe" and result.dataset == "blobs"
    assert result.metrics["top1"] >= 0.95 and result.info["best_C"] in (0.01, 1.0, 100.0)
    assert set(result.metrics) == {"top1"}  # the chosen C and the validation score are bookkeeping
    shuffled = y_test[torch.randperm(60, generator=torch.Generator().manual_seed(2))]
    assert probe.evaluate_features(x_train, y_train, x_test, shuffled).metrics["top1"] < 0.6


def test_linear_probe_through_a_model() -> None:
    x_train, y_train = blobs(60, 3)
    x_test, y_test = blobs(30, 4)
    model = FakeCLIP(torch.eye(4))
    result = LinearProbe().evaluate(model, images_from(x_train), images_from(x_test), y_train, y_test)
    assert result.metrics["top1"] >= 0.9 and result.info["num_train"] == 60 and result.info["num_test"] == 30


def test_linear_probe_rejects_bad_labels() -> None:
    x, y = blobs(30, 5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LinearProbe().evaluate_features(x, torch.zeros(30), x, y)
    with pytest.raises(ValueError, match="train_labels has shape"):
        LinearProbe().evaluate_features(x, y[:10], x, y)


def test_synthetic_classification_scores_single_shape_scenes_only() -> None:
    """A two-shape scene has two right answers per attribute, so zero-shot and the probe skip those scenes."""
    import alignclip
    from alignclip.data.synthetic import SyntheticShapes
    from alignclip.evaluation.suite import evaluate_model

    model = alignclip.create_model("tiny", "clip", seed=0)
    results, _, _ = evaluate_model(model, "synthetic", tasks="zeroshot", num_samples=60)
    test = SyntheticShapes(60, seed=0, image_size=model.image_size, train=False)
    single = sum(test.labels_for(i)["num_shapes"] == 0 for i in range(60))
    assert 0 < single < 60
    assert {r.info["num_samples"] for r in results} == {single}
