"""Training-free baselines as an embedding transform: I0T centring worked by hand, Liang's shift equal to the
reference gap.shift_modalities, the λ choice on training pairs, and `alignclip eval --offsets`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import alignclip
from alignclip.cli.main import main
from alignclip.evaluation.gap import shift_modalities
from alignclip.evaluation.transform import (OffsetModel, best_shift, centring_offsets, load_offsets, means,
                                            save_offsets, shift_offsets)
from conftest import MICRO


class Fixed(nn.Module):
    """encode_image/encode_text return given unit rows (the 'images' and 'tokens' are row indices)."""

    image_size, context_length = 16, 16

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.x, self.y = x, y

    def encode_image(self, index: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.x[index]

    def encode_text(self, index: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.y[index]


def test_centring_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # mean (0.5, 0.5): centred rows (0.5, -0.5), (-0.5, 0.5)
    y = torch.tensor([[0.6, 0.8], [0.6, 0.8]])  # one text twice: centred to zero would be undefined, so shift it
    model = OffsetModel(Fixed(x, y), *centring_offsets(*means(x, x)))
    r = 2 ** -0.5
    assert torch.allclose(model.encode_image(torch.arange(2)), torch.tensor([[r, -r], [-r, r]]))


def test_shift_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(20, 8, generator=g) + 2, dim=-1)
    y = torch.nn.functional.normalize(torch.randn(20, 8, generator=g) - 2, dim=-1)
    model = OffsetModel(Fixed(x, y), *shift_offsets(*means(x, y), 0.3))
    ref_x, ref_y = shift_modalities(x, y, 0.3)
    assert torch.allclose(model.encode_image(torch.arange(20)), ref_x, atol=1e-6)
    assert torch.allclose(model.encode_text(torch.arange(20)), ref_y, atol=1e-6)
    lam, scores = best_shift(x, y, [0.0, 0.5, 1.0])
    assert len(scores) == 3 and lam == [0.0, 0.5, 1.0][int(np.argmax(scores))]


def test_best_shift_by_hand():
    # Two pairs, text = image moved by the same vector: shifting by half the gap each way (λ = 0.5) restores exact
    # matches, no shift mixes them up (both images are closer to the first text).
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1]]), dim=-1)
    y = torch.nn.functional.normalize(x + torch.tensor([0.0, 3.0]), dim=-1)
    lam, scores = best_shift(x, y, [0.0, 0.5])
    assert scores[0] == 0.5 and lam == 0.5 and scores[1] == 1.0


def test_eval_offsets_zero_is_identity_and_bad_files_are_one_line(tmp_path, capsys):
    alignclip.save_checkpoint(alignclip.create_model(MICRO, "clip", seed=0), tmp_path / "m")
    save_offsets(tmp_path / "zero.npz", torch.zeros(32), torch.zeros(32))
    for name, extra in (("plain", []), ("zero", ["--offsets", str(tmp_path / "zero.npz")])):
        assert main(["eval", str(tmp_path / "m"), "--tasks", "gap,zeroshot", "--num-samples", "24",
                     "--out", str(tmp_path / name), *extra]) == 0
    plain, zero = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("plain", "zero"))
    assert zero["offsets"].endswith("zero.npz")
    for a, b in zip(plain["results"], zero["results"]):  # equal up to normalising twice
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-5)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not an offsets file") as error:
        load_offsets(tmp_path / "bad.npz")
    assert "\n" not in str(error.value)
