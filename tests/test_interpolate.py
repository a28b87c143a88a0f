"""WiSE-FT: the pure interpolation (endpoints bit for bit, a midpoint worked by hand, one-line errors), the CLI's
checkpoints that `alignclip eval` reads, and the l2m/accuracy trade-off `alignclip compare` draws from a sweep."""
from __future__ import annotations

import json

import pytest
import torch

import alignclip
from alignclip.cli.main import main
from alignclip.evaluation.compare import write_comparison
from alignclip.evaluation.result import EvalResult
from alignclip.evaluation.tradeoff import RETRIEVAL, ZEROSHOT, tradeoff_lines
from alignclip.models.interpolate import interpolate_state_dicts
from conftest import MICRO


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (torch.equal calls -0.0 and 0.0 equal, and NaN unequal to itself)."""
    return t.contiguous().view(torch.int32) if t.dtype == torch.float32 else t


def test_endpoints_are_the_inputs_bit_for_bit_and_the_midpoint_is_the_mean():
    base = {"w": torch.tensor([1.0, 0.0, -2.0, float("inf")]), "n": torch.tensor([3])}
    tuned = {"w": torch.tensor([3.0, -0.0, 2.0, 1.0]), "n": torch.tensor([3])}
    for alpha, expected in ((0.0, base), (1.0, tuned)):
        out = interpolate_state_dicts(base, tuned, alpha)
        assert all(torch.equal(bits(out[k]), bits(expected[k])) for k in expected)
        assert out["w"].data_ptr() != expected["w"].data_ptr()  # copies, never the caller's tensors
    # by hand: 0.75*1 + 0.25*3 = 1.5, 0.75*(-2) + 0.25*2 = -1; the integer counter agrees and is copied
    quarter = interpolate_state_dicts(base, tuned, 0.25)
    assert quarter["w"][[0, 2]].tolist() == [1.5, -1.0] and quarter["n"].tolist() == [3]


def test_real_models_endpoints(tmp_path):
    a, b = (alignclip.create_model(MICRO, "clip", seed=s).state_dict() for s in (0, 1))
    assert all(torch.equal(bits(interpolate_state_dicts(a, b, 1.0)[k]), bits(b[k])) for k in a)
    assert all(torch.equal(bits(interpolate_state_dicts(a, b, 0.0)[k]), bits(a[k])) for k in a)


@pytest.mark.parametrize("tuned, message", [
    ({"w": torch.zeros(3)}, r"^cannot interpolate models of different shapes: w is \(2,\) in the base and \(3,\)"),
    ({"v": torch.zeros(2)}, r"^cannot interpolate models with different weights: 'w' only in the base"),
    ({"w": torch.zeros(2, dtype=torch.float64)}, r"^cannot interpolate w: dtype torch.float32"),
])
def test_mismatches_are_one_line_errors(tuned, message):
    with pytest.raises(ValueError, match=message) as error:
        interpolate_state_dicts({"w": torch.zeros(2)}, tuned, 0.5)
    assert "\n" not in str(error.value)


def test_cli_writes_checkpoints_eval_reads(tmp_path, capsys):
    base, tuned = (alignclip.create_model(MICRO, "clip", seed=s) for s in (0, 1))
    alignclip.save_checkpoint(base, tmp_path / "base")
    alignclip.save_checkpoint(tuned, tmp_path / "tuned")
    assert main(["interpolate", str(tmp_path / "base"), str(tmp_path / "tuned"), "--alpha", "0,0.5,1",
                 "--out", str(tmp_path / "wise")]) == 0
    tuned_back = alignclip.load_checkpoint(tmp_path / "wise" / "alpha_1")
    assert all(torch.equal(bits(v), bits(tuned.state_dict()[k])) for k, v in tuned_back.state_dict().items())
    half = alignclip.load_checkpoint(tmp_path / "wise" / "alpha_0.5").state_dict()
    key = "logit_scale"
    assert half[key] == (base.state_dict()[key] + tuned.state_dict()[key]) / 2
    assert main(["eval", str(tmp_path / "wise" / "alpha_0.5"), "--tasks", "gap", "--num-samples", "16",
                 "--out", str(tmp_path / "ev")]) == 0
    info = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert info["interpolation"]["alpha"] == 0.5 and info["method"].startswith("WiSE-FT")


def test_cli_refuses_different_shapes(tmp_path, capsys):
    alignclip.save_checkpoint(alignclip.create_model(MICRO, "clip", seed=0), tmp_path / "a")
    alignclip.save_checkpoint(alignclip.create_model({**MICRO, "embed_dim": 16}, "clip", seed=0), tmp_path / "b")
    assert main(["interpolate", str(tmp_path / "a"), str(tmp_path / "b"), "--alpha", "0.5",
                 "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different configs: embed_dim is 32 in the base and 16" in err
    assert not (tmp_path / "w").exists()


def document(l2m: float, top1: float, alpha: float | None = None) -> dict:
    doc = {"results": [EvalResult("synthetic", "modality_gap", {"l2m": l2m}).to_dict(),
                       EvalResult("synthetic/shape", "zeroshot_classification", {"top1": top1}).to_dict()]}
    if alpha is not None:
        doc["interpolation"] = {"base": "runs/base", "tuned": "runs/post-keep", "alpha": alpha}
    return doc


def test_compare_draws_one_line_per_method(tmp_path):
    runs = []
    for name, doc in {"a1": document(0.2, 0.6, 1.0), "a0": document(0.8, 0.9, 0.0), "a5": document(0.5, 0.8, 0.5),
                      "control": document(0.7, 0.85)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(doc))
        runs.append(tmp_path / name)
    paths = write_comparison(runs, tmp_path / "cmp")
    assert (tmp_path / "cmp" / "tradeoff.png").is_file() and "tradeoff.png" in paths["index"].read_text()
    results = [(r.name, [EvalResult.from_dict(x) for x in json.loads((r / "metrics.json").read_text())["results"]],
                {"interpolation/alpha": a} | ({"interpolation/tuned": "runs/post-keep"} if a is not None else {}))
               for r, a in zip(runs, (1.0, 0.0, 0.5, None))]
    lines, kind = tradeoff_lines(results)
    assert kind == ZEROSHOT
    assert lines == {"WiSE-FT of post-keep": [(0.8, 0.9, 0.0), (0.5, 0.8, 0.5), (0.2, 0.6, 1.0)],
                     "control": [(0.7, 0.85, None)]}
    retrieval_only = [("r", [EvalResult("p", "modality_gap", {"l2m": 0.3}),
                             EvalResult("p", "retrieval", {"i2t_recall@1": 0.2,
                                                           "t2i_recall@1": 0.4})], {})]
    assert tradeoff_lines(retrieval_only + results[:1]) == ({"r": [(0.3, pytest.approx(0.3), None)]}, RETRIEVAL)
