"""A training run folder is accepted wherever a checkpoint is read (eval, embed, export, --init-from, the library),
and every reader picks the same one (`checkpoints/best`, else the newest step) and says which."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import alignclip
from alignclip.cli.main import main
from alignclip.rundir import RunDir, resolve_checkpoint
from alignclip.training.init_model import resolve_init_from
from test_eval_pairs import pairs_csv  # noqa: F401 - the shared pairs fixture


def _step(run: Path, name: str, seed: int) -> Path:
    path = run / "checkpoints" / name
    alignclip.save_checkpoint(alignclip.create_model("tiny", seed=seed), path)
    (path / "trainer_state.pt").write_bytes(b"")  # only its presence marks a step as complete
    return path


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run = tmp_path / "my-run"
    _step(run, "step_000002", 2)
    _step(run, "step_000010", 10)
    (run / "checkpoints" / "step_000020").mkdir()  # an incomplete step (no trainer state) is never chosen
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "clip", "model": {"init_from": None}}))
    return run


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_run_dir_resolves_newest_then_best(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert RunDir(run).latest == run / "checkpoints" / "step_000010"
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_000010"
    assert "using checkpoint" in capsys.readouterr().err
    assert RunDir.of_checkpoint(run / "checkpoints" / "step_000002") == RunDir(run)
    assert RunDir.of_checkpoint(run).config_path == run / "config.yaml"
    alignclip.save_checkpoint(alignclip.create_model("tiny", seed=99), run / "checkpoints" / "best")
    assert resolve_checkpoint(run) == run / "checkpoints" / "best"
    assert RunDir(run).latest == run / "checkpoints" / "step_000010"  # a resume continues from the newest step
    assert resolve_init_from(str(run)) == run / "checkpoints" / "best"
    # the library reads the same one
    assert _weights_equal(alignclip.load_checkpoint(run), alignclip.create_model("tiny", seed=99))


def test_empty_run_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    assert main(["export", str(tmp_path / "r"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no complete checkpoint" in err


def test_eval_embed_export_accept_a_run_folder(run: Path, pairs_csv: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    newest = run / "checkpoints" / "step_000010"
    assert main(["eval", str(run), "--tasks", "gap", "--num-samples", "16", "--out", str(tmp_path / "ev")]) == 0
    assert f"using checkpoint {newest}" in capsys.readouterr().err
    document = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert document["model"] == str(newest) and document["method"] == "clip"  # method: the run's config.yaml

    assert main(["embed", str(run), "--dataset", f"tsv:{pairs_csv}", "--out", str(tmp_path / "emb")]) == 0
    assert f"using checkpoint {newest}" in capsys.readouterr().err
    assert json.loads((tmp_path / "emb" / "embed.json").read_text())["model"] == str(newest)

    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert f"using checkpoint {newest}" in capsys.readouterr().err
    exported, expected = alignclip.load_checkpoint(tmp_path / "hf"), alignclip.load_checkpoint(newest)
    tokens = alignclip.get_tokenizer(expected.context_length)(["a red circle"])
    assert torch.allclose(exported.encode_text(tokens), expected.encode_text(tokens), atol=1e-5)
