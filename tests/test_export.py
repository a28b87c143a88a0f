"""`alignclip export` and `--model-config` on the CLI (the format checks themselves live in test_import_*.py)."""
from __future__ import annotations

import pytest
import torch

import alignclip
from alignclip.cli.main import build_parser, main


def test_export_cli_round_trips(tmp_path, capsys) -> None:
    model = alignclip.create_model("tiny", "clip", seed=4).eval()
    alignclip.save_checkpoint(model, tmp_path / "ours")
    assert main(["export", str(tmp_path / "ours"), "--format", "open_clip", "--out", str(tmp_path / "oc.pt")]) == 0
    assert main(["export", str(tmp_path / "oc.pt"), "--model-config", str(tmp_path / "oc.json"), "--format", "hf",
                 "--out", str(tmp_path / "hf")]) == 0
    back = alignclip.load_checkpoint(tmp_path / "hf")
    images, tokens = torch.randn(2, 3, 32, 32), alignclip.get_tokenizer(32)(["a red circle", "a blue square"])
    with torch.no_grad():
        assert (back.encode_image(images) - model.encode_image(images)).abs().max() < 1e-5
        assert (back.encode_text(tokens) - model.encode_text(tokens)).abs().max() < 1e-5
    assert "wrote" in capsys.readouterr().out


def test_export_cli_errors(tmp_path, capsys) -> None:
    alignclip.save_checkpoint(alignclip.create_model("tiny", "shared"), tmp_path / "shared")
    assert main(["export", str(tmp_path / "shared"), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shared model cannot be exported to Hugging Face" in err
    assert main(["export", str(tmp_path / "shared"), "--format", "open_clip", "--out", str(tmp_path / "x.pt")]) == 2
    assert "has no open_clip equivalent" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "export"])
def test_model_config_flag(command: str) -> None:
    extra = ["--format", "hf", "--out", "x"] if command == "export" else []
    args = build_parser().parse_args([command, "ckpt", "--model-config", "ViT-B-16-quickgelu", *extra])
    assert args.model_config == "ViT-B-16-quickgelu"
