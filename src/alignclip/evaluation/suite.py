"""One call that runs every evaluation task of a model on one dataset (what `alignclip eval` and the demo use).

Each dataset kind has one reader below; every reader returns `Evaluated`: its results and the held-out features the
report draws, so no helper writes into a list its caller owns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from alignclip.evaluation.datasets import (FashionMNIST, ImageFolderClasses, LabelledImages,
                                           split_stratified)
from alignclip.evaluation.features import TokenizeFn, encode_texts, extract_features
from alignclip.evaluation.gap import gap_metrics
from alignclip.evaluation.linear_probe import LinearProbe
from alignclip.evaluation.pairs import embed_pairs, is_pair_dataset, pair_dataset_name
from alignclip.evaluation.result import EvalResult
from alignclip.evaluation.retrieval import RetrievalEvaluator
from alignclip.evaluation.sts import STSEvaluator
from alignclip.evaluation.zeroshot import FASHION_TEMPLATES, GENERIC_TEMPLATES, ZeroShotClassifier

TASKS = ("zeroshot", "retrieval", "sts", "linear_probe", "gap")
CAPTIONS_PER_IMAGE = 5  # synthetic retrieval: several paraphrases per image, as COCO/Flickr have
GAP_PROMPT = "a photo of a {}."


@dataclass
class Evaluated:
    """One dataset's results, and the held-out image and paired text features they were computed on."""

    image_features: torch.Tensor | None = None
    text_features: torch.Tensor | None = None
    results: list[EvalResult] = field(default_factory=list)


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    tasks = [t.strip() for t in spec.split(",")] if isinstance(spec, str) else list(spec)
    tasks = [t for t in tasks if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    if not tasks:
        raise ValueError("no evaluation tasks given")
    return tasks


def supported_tasks(dataset: str) -> list[str]:
    """Retrieval needs captions (synthetic, your pairs); class sets have only class names, pairs have no classes."""
    if is_pair_dataset(dataset):
        return ["retrieval", "gap"]
    return list(TASKS) if dataset == "synthetic" else [t for t in TASKS if t != "retrieval"]


def dataset_name(dataset: str) -> str:
    """Name used in results: 'classes:/data/pets' -> 'classes/pets', 'csv:/d/val.csv' -> 'csv/val.csv'."""
    if dataset.startswith("classes:"):
        return f"classes/{Path(dataset.split(':', 1)[1]).name}"
    return pair_dataset_name(dataset) if is_pair_dataset(dataset) else dataset


def check_dataset(dataset: str) -> str:
    """A valid eval dataset spec, or a one-line error listing the valid ones."""
    if dataset in ("synthetic", "fashion-mnist") or is_pair_dataset(dataset):
        return dataset
    if not (dataset.startswith("classes:") and len(dataset) > 8):
        raise ValueError(f"unknown dataset {dataset!r}: expected synthetic, fashion-mnist, classes:DIR (one "
                         "sub-folder per class), or your pairs: csv:PATH, tsv:PATH, captions:DIR, wds:PATTERN")
    return dataset


def _labelled_set(dataset: str, image_size: int, train: bool) -> tuple[LabelledImages, list[str]]:
    """(image set, templates) for fashion-mnist and classes:DIR."""
    if dataset == "fashion-mnist":
        return FashionMNIST(train=train, image_size=image_size), FASHION_TEMPLATES
    return ImageFolderClasses(dataset.split(":", 1)[1], image_size=image_size), GENERIC_TEMPLATES


def _synthetic(model: torch.nn.Module, tasks: list[str], num_samples: int, seed: int,
               kw: dict[str, Any]) -> Evaluated:
    from alignclip.data.synthetic import SyntheticShapes, zeroshot_tasks

    results: list[EvalResult] = []
    test = SyntheticShapes(num_samples, seed=seed, image_size=model.image_size, train=False)
    image_features = extract_features(model, test, kw["batch_size"], kw["device"], desc="synthetic images")
    labels = [test.labels_for(i) for i in range(len(test))]
    # A two-shape scene has two correct answers per attribute, so classification scores single-shape scenes only.
    single = torch.tensor([row["num_shapes"] == 0 for row in labels])
    if "zeroshot" in tasks:
        for attribute, (classnames, templates) in zeroshot_tasks().items():
            classifier = ZeroShotClassifier(classnames, templates, dataset=f"synthetic/{attribute}", **kw)
            targets = torch.tensor([row[attribute] for row in labels])
            results.append(classifier.evaluate_features(model, image_features[single], targets[single]))
    text_features = None
    if "retrieval" in tasks or "gap" in tasks:
        k = CAPTIONS_PER_IMAGE if "retrieval" in tasks else 1
        captions = [c for i in range(len(test)) for c in test.captions_for(i, k)]
        all_text = encode_texts(model, captions, kw["tokenizer"], kw["batch_size"], kw["device"], desc="captions")
        if "retrieval" in tasks:
            evaluator = RetrievalEvaluator(dataset="synthetic", device=kw["device"])
            results.append(evaluator.evaluate_features(image_features, all_text,
                                                       torch.arange(len(test)).repeat_interleave(k)))
        text_features = all_text[::k]  # the first paraphrase is each image's own caption
    if "linear_probe" in tasks:
        train = SyntheticShapes(num_samples, seed=seed, image_size=model.image_size, train=True)
        train_features = extract_features(model, train, kw["batch_size"], kw["device"], desc="probe train images")
        train_labels = [train.labels_for(i) for i in range(len(train))]
        train_single = torch.tensor([row["num_shapes"] == 0 for row in train_labels])
        for attribute in zeroshot_tasks():
            probe = LinearProbe(seed=seed, dataset=f"synthetic/{attribute}")
            results.append(probe.evaluate_features(
                train_features[train_single], [row[attribute] for row in train_labels if row["num_shapes"] == 0],
                image_features[single], [row[attribute] for row in labels if row["num_shapes"] == 0]))
    return Evaluated(image_features, text_features, results)


def _labelled(model: torch.nn.Module, dataset: str, tasks: list[str], num_samples: int, seed: int,
              kw: dict[str, Any]) -> Evaluated:
    name, results = dataset_name(dataset), []
    full, templates = _labelled_set(dataset, model.image_size, train=False)
    probe_train = None
    if dataset.startswith("classes:") and "linear_probe" in tasks:  # no splits: stratified halves
        first, second = split_stratified(full.targets, 0.5, seed)
        probe_train, full = full.select(first), full.select(second)
    test = full.subset(num_samples, seed)
    image_features = extract_features(model, test, kw["batch_size"], kw["device"], desc=f"{name} images")
    if "zeroshot" in tasks:
        classifier = ZeroShotClassifier(test.classnames, templates, dataset=name, **kw)
        results.append(classifier.evaluate_features(model, image_features, test.targets))
    if "linear_probe" in tasks:
        if probe_train is None:
            probe_train = _labelled_set(dataset, model.image_size, train=True)[0]
        probe_train = probe_train.subset(num_samples, seed)
        train_features = extract_features(model, probe_train, kw["batch_size"], kw["device"], desc="probe train")
        results.append(LinearProbe(seed=seed, dataset=name).evaluate_features(
            train_features, probe_train.targets, image_features, test.targets))
    text_features = None
    if "gap" in tasks:
        prompts = [GAP_PROMPT.format(test.classnames[int(label)]) for label in test.targets]
        text_features = encode_texts(model, prompts, kw["tokenizer"], kw["batch_size"], kw["device"], desc="prompts")
    return Evaluated(image_features, text_features, results)


def _pairs(model: torch.nn.Module, dataset: str, tasks: list[str], num_samples: int, kw: dict[str, Any],
           csv_keys: tuple[str | None, str | None]) -> Evaluated:
    """Held-out pairs of your own: retrieval over all captions, the gap on each image's first caption."""
    pairs = embed_pairs(model, dataset, num_samples, **kw, csv_image_key=csv_keys[0], csv_caption_key=csv_keys[1])
    name = dataset_name(dataset)
    # What was read is bookkeeping, not a score: a "data" result with no metrics (the report shows it as run info).
    results = [EvalResult(name, "data", {}, {
        "num_images": len(pairs.images), "num_captions": len(pairs.captions),
        "num_bad_samples": len(pairs.bad_samples), "bad_samples": [list(b) for b in pairs.bad_samples]})]
    if "retrieval" in tasks:
        evaluator = RetrievalEvaluator(dataset=name, device=kw["device"])
        results.append(evaluator.evaluate_features(pairs.image_features, pairs.text_features, pairs.text_to_image))
    return Evaluated(pairs.image_features, pairs.paired_text(), results)


def _gap_result(dataset: str, image_features: torch.Tensor, text_features: torch.Tensor) -> EvalResult:
    """Caption pairs give the modality gap; on class sets the only "pair" of an image is its class prompt, which
    many images share, so that gap (l2m ~1 even for good models) gets its own task name and is never compared."""
    if dataset == "synthetic" or is_pair_dataset(dataset):
        task, pairs = "modality_gap", "image, its own caption"
    else:
        task, pairs = "class_prompt_gap", f"image, its class prompt '{GAP_PROMPT}' (not comparable with the " \
                                          "caption-pair gap)"
    info = {"pairs": pairs, "num_pairs": int(image_features.shape[0])}
    return EvalResult(dataset_name(dataset), task, gap_metrics(image_features, text_features), info)


def evaluate_model(model: torch.nn.Module, dataset: str = "synthetic", tasks: Sequence[str] | str | None = None,
                   num_samples: int = 1000, sts_file: str | Path | None = None, tokenizer: TokenizeFn | None = None,
                   batch_size: int = 256, device: str | torch.device | None = "cpu",
                   seed: int = 0, csv_keys: tuple[str | None, str | None] = (None, None),
                   ) -> tuple[list[EvalResult], torch.Tensor | None, torch.Tensor | None]:
    """Run `tasks` (default: all the dataset supports) -> (results, image features, paired text features).

    csv_keys: (image path column, caption column) of a csv:/tsv: pair dataset (None: filepath, title).

    The features (held-out pairs) feed the report's figures. On class sets the gap task is `class_prompt_gap`
    (each image vs its class prompt), a different quantity from the caption-pair `modality_gap`.
    """
    check_dataset(dataset)
    tasks = supported_tasks(dataset) if tasks is None else parse_tasks(tasks)
    if "retrieval" in tasks and dataset != "synthetic" and not is_pair_dataset(dataset):
        raise ValueError(f"retrieval needs several captions per image; dataset {dataset!r} only has class names")
    if is_pair_dataset(dataset) and {"zeroshot", "linear_probe"} & set(tasks):
        raise ValueError(f"zeroshot and linear_probe need class labels; {dataset!r} holds image-caption pairs "
                         "(use retrieval, gap, sts)")
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    kw = {"tokenizer": tokenizer, "batch_size": batch_size, "device": device}
    image_tasks = [t for t in tasks if t != "sts"]
    done = Evaluated()
    if image_tasks and is_pair_dataset(dataset):
        done = _pairs(model, dataset, image_tasks, num_samples, kw, csv_keys)
    elif image_tasks and dataset == "synthetic":
        done = _synthetic(model, image_tasks, num_samples, seed, kw)
    elif image_tasks:
        done = _labelled(model, dataset, image_tasks, num_samples, seed, kw)
    results, image_features, text_features = done.results, done.image_features, done.text_features
    if "gap" in tasks:
        results.append(_gap_result(dataset, image_features, text_features))
    if "sts" in tasks:
        if sts_file is not None:
            evaluator = STSEvaluator.from_file(sts_file, **kw)
        else:
            from alignclip.data.synthetic import synthetic_sts

            evaluator = STSEvaluator(synthetic_sts(max(50, min(num_samples, 1000)), seed), dataset="synthetic-sts", **kw)
        results.append(evaluator.evaluate(model))
    return results, image_features, text_features
