"""Gap measures against hand-worked examples on the unit circle, brute-force N x N references, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignclip.evaluation.gap import GAP_KEYS, gap_metrics, gap_shift_sweep, shift_modalities, uniformity


def circle(*degrees: float) -> torch.Tensor:
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def brute_force(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The definitions written out with full N x N matrices (float64)."""
    x, y = F.normalize(x.double(), dim=1), F.normalize(y.double(), dim=1)
    n = x.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)

    def unif(f: torch.Tensor) -> float:
        sq = torch.cdist(f, f).pow(2)
        return math.log(torch.exp(-2 * sq)[off].mean())

    return {"l2m": float((x.mean(0) - y.mean(0)).norm()), "l2i": float((x - y).norm(dim=1).mean()),
            "paired_cosine": float((x * y).sum(1).mean()), "unpaired_cosine": float((x @ y.T)[off].mean()),
            "image_cosine": float((x @ x.T)[off].mean()), "text_cosine": float((y @ y.T)[off].mean()),
            "alignment": float((x - y).pow(2).sum(1).mean()), "uniformity_image": unif(x), "uniformity_text": unif(y)}


def test_exact_keys() -> None:
    m = gap_metrics(circle(0, 90, 200), circle(10, 80, 190))
    assert tuple(m) == GAP_KEYS
    assert all(isinstance(v, float) for v in m.values())


def test_opposite_pairs_by_hand() -> None:
    # x = e1, e2; y = -e1, -e2
    m = gap_metrics(circle(0, 90), circle(180, 270))
    assert m["l2m"] == pytest.approx(math.sqrt(2))  # ||(0.5, 0.5) - (-0.5, -0.5)||
    assert m["l2i"] == pytest.approx(2.0)
    assert m["paired_cosine"] == pytest.approx(-1.0)
    assert m["unpaired_cosine"] == pytest.approx(0.0, abs=1e-7)  # e1.(-e2) = e2.(-e1) = 0
    assert m["image_cosine"] == pytest.approx(0.0, abs=1e-7) and m["text_cosine"] == pytest.approx(0.0, abs=1e-7)
    assert m["rmg"] == pytest.approx(1.0 / (1.0 + 0.5))  # d_match = 1, d_img = d_txt = 0.5
    assert m["alignment"] == pytest.approx(4.0)
    assert m["uniformity_image"] == pytest.approx(-4.0)  # ||e1 - e2||^2 = 2 -> log exp(-4)
    assert m["uniformity_text"] == pytest.approx(-4.0)


def test_three_points_rotated_90_degrees_by_hand() -> None:
    # images at 0/120/240 degrees, each caption 90 degrees further: both centroids are 0
    m = gap_metrics(circle(0, 120, 240), circle(90, 210, 330))
    assert m["l2m"] == pytest.approx(0.0, abs=1e-7)
    assert m["l2i"] == pytest.approx(math.sqrt(2))
    assert m["paired_cosine"] == pytest.approx(0.0, abs=1e-7)
    assert m["unpaired_cosine"] == pytest.approx(0.0, abs=1e-7)  # cos 210 + cos(-30) cancel
    assert m["image_cosine"] == pytest.approx(-0.5) and m["text_cosine"] == pytest.approx(-0.5)
    assert m["rmg"] == pytest.approx(0.5 / (0.5 + 0.75))  # d_match 0.5, d_img = d_txt = 0.75
    assert m["alignment"] == pytest.approx(2.0)
    assert m["uniformity_image"] == pytest.approx(-6.0)  # ||x_i - x_j||^2 = 3
    assert m["uniformity_text"] == pytest.approx(-6.0)


def test_swapped_pairs_have_no_centroid_gap_but_unpaired_cosine_one() -> None:
    m = gap_metrics(circle(0, 90), circle(90, 0))
    assert m["l2m"] == pytest.approx(0.0, abs=1e-7)
    assert m["l2i"] == pytest.approx(math.sqrt(2))
    assert m["paired_cosine"] == pytest.approx(0.0, abs=1e-7)
    assert m["unpaired_cosine"] == pytest.approx(1.0)


def test_identical_modalities() -> None:
    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    m = gap_metrics(x, x.clone())
    assert m["l2m"] == pytest.approx(0.0, abs=1e-6)
    assert m["l2i"] == pytest.approx(0.0, abs=1e-6)
    assert m["paired_cosine"] == pytest.approx(1.0)
    assert m["alignment"] == pytest.approx(0.0, abs=1e-6)
    assert m["unpaired_cosine"] == pytest.approx(m["image_cosine"]) == pytest.approx(m["text_cosine"])
    assert m["uniformity_image"] == pytest.approx(m["uniformity_text"])
    d_intra = (1 - m["image_cosine"]) / 2
    assert m["rmg"] == pytest.approx(1e-3 / (1e-3 + d_intra))  # d_match floored at 1e-3
    assert m["separability"] == 0.5  # every test image has an identical test text: one of the two is wrong


def test_fully_separated_modalities() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 16, generator=g) * 0.1
    y = torch.randn(100, 16, generator=g) * 0.1
    x[:, 0] += 1.0
    y[:, 0] -= 1.0
    m = gap_metrics(x, y)
    assert m["separability"] == 1.0
    assert m["l2m"] > 1.5 and m["paired_cosine"] < -0.5 and m["rmg"] > 0.5


def test_noise_estimates_match_fresh_samples_and_the_binomial_formula() -> None:
    """l2m_std and separability_std are bootstrap estimates of sampling noise; the references: the spread of l2m
    over 40 independent samples of the same distribution, and sqrt(p(1 - p) / N) over the 2 x 300 held-out rows."""
    def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(1000, 64, generator=g) + 0.15, torch.randn(1000, 64, generator=g)

    m = gap_metrics(*draw(0))
    fresh = torch.tensor([brute_force(*draw(100 + s))["l2m"] for s in range(40)])
    assert m["l2m_std"] == pytest.approx(float(fresh.std()), rel=0.35)
    p = m["separability"]
    assert 0.6 < p < 0.95  # away from 0 and 1, where the binomial formula is a fair reference
    assert m["separability_std"] == pytest.approx(math.sqrt(p * (1 - p) / 600), rel=0.25)


def test_matches_brute_force_on_random_pairs() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(70, 12, generator=g) + 0.5, torch.randn(70, 12, generator=g) * 3
    m = gap_metrics(x, y, chunk_size=16)  # several blocks, incl. a ragged last one
    for key, value in brute_force(x, y).items():
        assert m[key] == pytest.approx(value, abs=1e-6), key


def test_scale_and_numpy_invariance() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g)
    a = gap_metrics(x, y)
    b = gap_metrics((x * 7).numpy(), (y * 0.01).numpy().astype(np.float64))
    assert a == pytest.approx(b, abs=1e-6)


def test_uniformity_subsample_is_deterministic_and_close() -> None:
    x = F.normalize(torch.randn(400, 8, generator=torch.Generator().manual_seed(4)), dim=1)
    exact = uniformity(x, chunk_size=64)
    estimate = uniformity(x, chunk_size=64, max_samples=150, seed=7)
    assert estimate == uniformity(x, chunk_size=64, max_samples=150, seed=7)
    assert estimate != exact and estimate == pytest.approx(exact, abs=0.1)


def test_shift_half_closes_centroid_gap_by_hand() -> None:
    x, y = shift_modalities(circle(0, 90), circle(180, 270), 0.5)  # delta = (1, 1)
    s = 1 / math.sqrt(2)
    assert torch.allclose(x, torch.tensor([[s, -s], [-s, s]]), atol=1e-6)
    assert torch.allclose(y, torch.tensor([[-s, s], [s, -s]]), atol=1e-6)
    assert gap_metrics(x, y)["l2m"] == pytest.approx(0.0, abs=1e-6)


def test_shift_zero_is_identity_and_keeps_numpy() -> None:
    x, y = np.random.default_rng(0).normal(size=(2, 30, 5))
    sx, sy = shift_modalities(x, y, 0.0)
    assert isinstance(sx, np.ndarray) and isinstance(sy, np.ndarray)
    assert np.allclose(sx, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)


def test_shift_sweep_reduces_centroid_gap_and_runs_callback() -> None:
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(80, 10, generator=g), torch.randn(80, 10, generator=g)
    x[:, 0] += 2.0
    calls = []

    def downstream(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
        calls.append(a.shape)
        return {"recall@1": float(((a @ b.T).argmax(1) == torch.arange(len(a))).float().mean())}

    rows = gap_shift_sweep(x, y, [0.0, 0.25, 0.5], evaluate_fn=downstream)
    assert [row["lambda"] for row in rows] == [0.0, 0.25, 0.5] and len(calls) == 3
    assert rows[0]["l2m"] == pytest.approx(gap_metrics(x, y)["l2m"])
    assert rows[0]["l2m"] > rows[1]["l2m"] > rows[2]["l2m"]
    assert rows[2]["l2m"] < 0.25 * rows[0]["l2m"]
    assert all("recall@1" in row and set(GAP_KEYS) <= set(row) for row in rows)


@pytest.mark.parametrize("x, y, message", [
    (torch.ones(3, 4), torch.ones(2, 4), "3 rows but text_features has 2"),
    (torch.ones(3, 4), torch.ones(3, 5), "dim 4 but text_features has dim 5"),
    (torch.ones(1, 4), torch.ones(1, 4), "at least 2 pairs"),
    (torch.ones(4), torch.ones(4), "must be 2-D"),
    (torch.tensor([[1.0, float("nan")], [1.0, 0.0]]), torch.ones(2, 2), "NaN or inf"),
    (torch.ones(2, 2), torch.tensor([[1.0, float("inf")], [1.0, 0.0]]), "text_features contains NaN or inf"),
    (torch.zeros(2, 2), torch.ones(2, 2), "all-zero row"),
    ([[1.0, 0.0]], [[1.0, 0.0]], "torch.Tensor or numpy.ndarray"),
])
def test_bad_input_raises_one_line_value_error(x: object, y: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        gap_metrics(x, y)
    assert "\n" not in str(info.value)


def test_sweep_needs_lambdas() -> None:
    with pytest.raises(ValueError, match="at least one lambda"):
        gap_shift_sweep(circle(0, 90), circle(10, 80), [])


def test_agrees_with_the_in_batch_training_diagnostics() -> None:
    """Training logs (batch_gap_diagnostics) and evaluation use the same definitions."""
    from alignclip.models.diagnostics import batch_gap_diagnostics

    g = torch.Generator().manual_seed(6)
    x = F.normalize(torch.randn(50, 8, generator=g) + 1, dim=1)
    y = F.normalize(torch.randn(50, 8, generator=g), dim=1)
    m, d = gap_metrics(x, y), batch_gap_diagnostics(x, y)
    assert m["l2m"] == pytest.approx(float(d["l2m"]), abs=1e-5)
    for key in ("paired_cosine", "image_cosine", "text_cosine"):
        assert m[key] == pytest.approx(float(d[key]), abs=1e-5)
