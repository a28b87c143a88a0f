"""`alignclip eval / gap / compare` end to end on the real tiny model, and one-line errors with exit status 2."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from alignclip.evaluation.gap import GAP_KEYS, gap_metrics
from test_eval_data import make_folder, write_fashion

FIXTURE = Path(__file__).parent / "fixtures" / "sts_small.tsv"


def cli(argv: list[str]) -> int:
    from alignclip.cli.main import main

    return main([str(a) for a in argv])


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], message: str) -> None:
    capsys.readouterr()  # drop progress bars of earlier calls
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignclip: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def eval_run(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    assert cli(["eval", checkpoint, "--num-samples", 24, "--batch-size", 64, "--out", out]) == 0
    return out


def test_eval_synthetic_writes_every_task_and_report(eval_run: Path, capsys: pytest.CaptureFixture) -> None:
    from alignclip.evaluation.report import format_table

    printed = format_table({"synthetic/retrieval/t2i_recall@5": 0.5, "synthetic/modality_gap/l2m": 0.1})
    assert "synthetic/retrieval/t2i_recall@5 (T→I)  0.5000" in printed and "l2m (" not in printed
    document = json.loads((eval_run / "metrics.json").read_text())
    assert document["dataset"] == "synthetic" and document["architecture"] == "clip"
    found = {(r["dataset"], r["task"]) for r in document["results"]}
    for attribute in ("shape", "color", "size", "position"):
        assert (f"synthetic/{attribute}", "zeroshot_classification") in found
        assert (f"synthetic/{attribute}", "linear_probe") in found
    assert {("synthetic", "retrieval"), ("synthetic", "modality_gap"), ("synthetic-sts", "sts")} <= found
    by_task = {(r["dataset"], r["task"]): r["metrics"] for r in document["results"]}
    retrieval = by_task[("synthetic", "retrieval")]
    info = {(r["dataset"], r["task"]): r["info"] for r in document["results"]}
    assert info[("synthetic", "retrieval")] == {"num_images": 24, "num_captions": 24 * 5}
    for way in ("i2t", "t2i"):
        recalls = [retrieval[f"{way}_recall@{k}"] for k in (1, 5, 10)]
        assert 0 <= recalls[0] <= recalls[1] <= recalls[2] <= 1
    assert set(by_task[("synthetic", "modality_gap")]) == set(GAP_KEYS)
    assert -1 <= by_task[("synthetic-sts", "sts")]["spearman"] <= 1
    for name in ("index.html", "projection.png", "sphere.png", "cosines.png"):
        assert (eval_run / name).is_file()


def test_suite_gap_is_gap_metrics_of_returned_pairs(checkpoint: Path) -> None:
    import alignclip
    from alignclip.evaluation.suite import evaluate_model

    model = alignclip.load_checkpoint(checkpoint)
    results, image_features, text_features = evaluate_model(model, tasks="gap,zeroshot", num_samples=16)
    assert image_features.shape == text_features.shape == (16, model.embed_dim)
    gap = next(r.metrics for r in results if r.task == "modality_gap")
    assert gap == pytest.approx(gap_metrics(image_features, text_features))
    # the text side of each pair is that image's own caption, encoded by the model
    from alignclip.data.synthetic import SyntheticShapes
    from alignclip.evaluation.features import encode_texts

    captions = [SyntheticShapes(16, train=False).captions_for(i, 1)[0] for i in range(16)]
    assert torch.allclose(text_features, encode_texts(model, captions), atol=1e-5)


def test_eval_sts_file_only(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["eval", checkpoint, "--tasks", "sts", "--sts-file", FIXTURE, "--out", tmp_path]) == 0
    assert "sts_small/sts/spearman" in capsys.readouterr().out
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert [(r["dataset"], r["task"]) for r in document["results"]] == [("sts_small", "sts")]
    assert document["results"][0]["info"]["num_pairs"] == 20
    assert not (tmp_path / "projection.png").exists()  # no image-text pairs were embedded


def test_eval_fashion_mnist_from_idx(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    write_fashion(tmp_path, 30, "t10k")
    write_fashion(tmp_path, 40, "train")
    monkeypatch.setenv("ALIGNCLIP_FASHION_MNIST", str(tmp_path))
    assert cli(["eval", checkpoint, "--dataset", "fashion-mnist", "--num-samples", 20,
                "--tasks", "zeroshot,linear_probe,gap"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist/zeroshot_classification/top5" in out
    assert re.search(r"fashion-mnist/linear_probe: .*num_train=20", out)
    assert "fashion-mnist/class_prompt_gap/l2m" in out and "modality_gap" not in out  # not the pair gap


def test_eval_image_folder(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_folder(tmp_path / "pets")
    assert cli(["eval", checkpoint, "--dataset", f"classes:{root}", "--out", tmp_path / "out",
                "--tasks", "zeroshot,linear_probe,gap"]) == 0
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    tasks = {(r["dataset"], r["task"]): r["info"] for r in document["results"]}
    assert tasks[("classes/pets", "linear_probe")]["num_train"] == 4  # stratified halves of 2 x 3 images
    assert tasks[("classes/pets", "zeroshot_classification")]["num_samples"] == 2
    # 1000 requested, 6 images in the folder, the probe's stratified half trains on 4: 2 evaluated
    assert document["num_samples"] == 2 and document["max_samples"] == 1000
    assert ("classes/pets", "class_prompt_gap") in tasks and (tmp_path / "out" / "sphere.png").is_file()
    gap = next(r for r in document["results"] if r["task"] == "class_prompt_gap")
    assert "class prompt" in gap["info"]["pairs"] and "not comparable" in gap["info"]["pairs"]
    page = (tmp_path / "out" / "index.html").read_text()
    assert "image-to-class-prompt gap (not the pair gap" in page and "modality gap (image vs its own" not in page


@pytest.mark.parametrize("args, message", [
    (["eval", "/nonexistent/ckpt"], "checkpoint not found"),
    (["eval"], "give a CHECKPOINT or --open-clip"),
    (["eval", "CKPT", "--open-clip", "ViT-B-32"], "not both"),
    (["eval", "CKPT", "--weights", "w.pt"], "--weights is only used with --open-clip"),
    (["eval", "CKPT", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["eval", "CKPT", "--dataset", "classes:/nonexistent/dir", "--tasks", "zeroshot"], "image folder not found"),
    (["eval", "CKPT", "--dataset", "folder:/some/dir"], "classes:DIR (one sub-folder per class)"),
    (["eval", "CKPT", "--dataset", "fashion-mnist", "--tasks", "retrieval"], "retrieval needs several captions"),
    (["eval", "CKPT", "--tasks", "zeroshot,captioning"], "unknown task 'captioning'"),
    (["eval", "CKPT", "--tasks", "sts", "--sts-file", "/nonexistent.tsv"], "STS file not found"),
    (["eval", "CKPT", "--num-samples", "1"], "num_samples must be at least 2"),
])
def test_eval_errors(checkpoint: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    one_line_error(capsys, [checkpoint if a == "CKPT" else a for a in args], message)


def test_eval_open_clip_without_package(capsys: pytest.CaptureFixture) -> None:
    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed")
    one_line_error(capsys, ["eval", "--open-clip", "ViT-B-32"], "optional open_clip package")


def save_pairs(tmp_path: Path, n: int = 50, shift: float = 2.0) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, 8)), rng.normal(size=(n, 8))
    x[:, 0] += shift
    np.save(tmp_path / "img.npy", x)
    np.savez(tmp_path / "txt.npz", text=y, other=y[:3])
    return tmp_path / "img.npy", tmp_path / "txt.npz", x, y


def test_gap_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image, text, x, y = save_pairs(tmp_path)
    rc = cli(["gap", image, text, "--key-text", "text", "--shift-lambdas", "0,0.25,0.5", "--json", tmp_path / "g.json",
              "--out", tmp_path / "report"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "separability" in out and "shift sweep" in out
    assert "chance 0.5" in out and "separability_std" in out  # the classifier's chance level and its noise
    document = json.loads((tmp_path / "g.json").read_text())
    expected = gap_metrics(x.astype(np.float32), y.astype(np.float32))
    assert document["results"][0]["metrics"] == pytest.approx(expected)
    assert [row["lambda"] for row in document["shift_sweep"]] == [0.0, 0.25, 0.5]
    assert document["num_pairs"] == 50 and document["dim"] == 8
    for name in ("metrics.json", "index.html", "projection.png", "sphere.png", "cosines.png", "shift_sweep.png"):
        assert (tmp_path / "report" / name).is_file()


def test_gap_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image, text, x, y = save_pairs(tmp_path)
    one_line_error(capsys, ["gap", image, text], "holds 2 arrays ['other', 'text']")
    np.save(tmp_path / "short.npy", y[:40])
    one_line_error(capsys, ["gap", image, tmp_path / "short.npy"], "image_features has 50 rows but text_features has 40")
    y[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", y)
    one_line_error(capsys, ["gap", image, tmp_path / "nan.npy"], "text_features contains NaN or inf values in 1 row(s)")
    np.save(tmp_path / "one.npy", x[:1])
    one_line_error(capsys, ["gap", tmp_path / "one.npy", tmp_path / "one.npy"], "at least 2 pairs")
    one_line_error(capsys, ["gap", image, tmp_path / "missing.npy"], "embedding file not found")
    (tmp_path / "garbage.npy").write_bytes(bytes(range(256)))
    one_line_error(capsys, ["gap", image, tmp_path / "garbage.npy"], f"cannot read {tmp_path / 'garbage.npy'} as .npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    one_line_error(capsys, ["gap", tmp_path / "objects.npy", text], "not a numeric array file")
    with pytest.raises(SystemExit) as info:
        cli(["gap", image, tmp_path / "nan.npy", "--shift-lambdas", "a,b"])
    assert info.value.code == 2 and "--shift-lambdas must be comma-separated numbers" in capsys.readouterr().err


def test_compare_command(eval_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image, text, _, _ = save_pairs(tmp_path)
    assert cli(["gap", image, text, "--key-text", "text", "--out", tmp_path / "gap_run"]) == 0
    assert cli(["compare", eval_run, tmp_path / "gap_run", "--out", tmp_path / "cmp"]) == 0
    out = capsys.readouterr().out
    assert "synthetic/modality_gap/l2m" in out and "embeddings/modality_gap/l2m" in out
    # one retrieval naming everywhere, with the direction spelled out where a person reads it
    assert "| synthetic/retrieval/i2t_recall@1 (I→T) |" in (tmp_path / "cmp" / "comparison.md").read_text()
    assert "retrieval_recall" not in (tmp_path / "cmp" / "index.html").read_text()
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"comparison.md", "comparison.csv", "index.html",
                                                              "projection.png"}  # both runs on shared axes
    one_line_error(capsys, ["compare", tmp_path / "nowhere", "--out", tmp_path / "cmp2"], "no metrics.json for run")


class _FakeOpenClipModel(torch.nn.Module):
    """Just enough of an open_clip CLIP: visual.image_size tuple, context_length, encode_*(x, normalize)."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Module()
        self.visual.image_size = (8, 8)
        self.context_length = 3
        self.embed = torch.nn.Embedding(64, 3)
        self.normalize_flags: list[bool] = []

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        self.normalize_flags.append(normalize)
        features = images.mean(dim=(2, 3)) + 2.0
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.embed(tokens).sum(dim=1)
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features


def test_eval_open_clip_model_through_the_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    import types

    created: dict[str, object] = {}
    fake = types.ModuleType("open_clip")

    def create_model(name: str, pretrained: str | None = None, device: object = "cpu") -> _FakeOpenClipModel:
        created.update(name=name, pretrained=pretrained, model=_FakeOpenClipModel())
        return created["model"]  # type: ignore[return-value]

    fake.create_model = create_model
    fake.get_tokenizer = lambda name: (lambda texts: torch.tensor([[len(t) % 64, 1, 2] for t in texts]))
    monkeypatch.setitem(__import__("sys").modules, "open_clip", fake)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"fake")
    assert cli(["eval", "--open-clip", "ViT-Fake", "--weights", weights, "--num-samples", 8,
                "--tasks", "zeroshot,gap", "--out", tmp_path / "out"]) == 0
    assert created["name"] == "ViT-Fake" and created["pretrained"] == str(weights)
    assert created["model"].normalize_flags and all(created["model"].normalize_flags)
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert document["model"] == f"open_clip:ViT-Fake:{weights}" and document["architecture"] == "open_clip"
    assert ("synthetic", "modality_gap") in {(r["dataset"], r["task"]) for r in document["results"]}
    one_line_error(capsys, ["eval", "--open-clip", "ViT-Fake", "--weights", tmp_path / "none.pt"],
                   "open_clip weights not found")
