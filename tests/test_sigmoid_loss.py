"""SigLipLoss against hand-worked values, open_clip's formula and a per-pair loop; gradients; accumulation; and two
gloo processes against one process holding the doubled batch."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignclip.losses import ClipLoss, MicroBatch, SigLipLoss, accumulated_backward
from alignclip.losses.sigmoid_loss import INIT_LOGIT_BIAS, INIT_LOGIT_SCALE
from conftest import gloo_loss_and_grads


def _features(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1),
            F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1))


def open_clip_formula(x: torch.Tensor, y: torch.Tensor, t: float, b: float | None) -> float:
    """open_clip's SigLipLoss on one process: labels 2I − 1, logits t·x@y.T + b, −logsigmoid(labels·logits).sum()/B."""
    logits = t * x @ y.T + (b if b is not None else 0.0)
    labels = 2 * torch.eye(len(x), dtype=x.dtype) - torch.ones(len(x), len(x), dtype=x.dtype)
    return float(-F.logsigmoid(labels * logits).sum() / len(x))


def paper_loop(x: torch.Tensor, y: torch.Tensor, t: float, b: float) -> float:
    """The paper's equation pair by pair: −1/|B| Σ_i Σ_j log 1 / (1 + exp(z_ij (−t x_i·y_j − b)))."""
    n, total = len(x), 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log(1 / (1 + math.exp(z * (-t * float(x[i] @ y[j]) - b))))
    return -total / n


def test_hand_worked_values() -> None:
    eye = torch.eye(2, dtype=torch.float64)
    t, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    # Orthonormal pairs: positives have logit 10·1 − 10 = 0, negatives 10·0 − 10 = −10.
    out = SigLipLoss()(eye, eye, t, logit_bias=b)
    assert out["loss"].item() == pytest.approx(math.log(2) + math.log(1 + math.exp(-10)), abs=1e-6)
    # y_0 = (0.6, 0.8): logits [[6 − 10, −10], [8 − 10, 10 − 10]] = [[−4, −10], [−2, 0]].
    y = torch.tensor([[0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    hand = (math.log(1 + math.exp(4)) + math.log(1 + math.exp(-10)) + math.log(1 + math.exp(-2)) + math.log(2)) / 2
    out = SigLipLoss()(eye, y, t, logit_bias=b)
    assert out["loss"].item() == pytest.approx(hand, abs=1e-6)
    assert set(out) == {"contrastive_loss", "loss"} and out["contrastive_loss"].item() == out["loss"].item()


@pytest.mark.parametrize("bias", [-10.0, 2.5, None])
def test_matches_open_clip_formula_and_the_paper(bias: float | None) -> None:
    x, y = _features()
    t = 7.3
    b = None if bias is None else torch.tensor(bias, dtype=torch.float64)
    loss = SigLipLoss()(x, y, torch.tensor(t, dtype=torch.float64), logit_bias=b)["loss"].item()
    assert loss == pytest.approx(open_clip_formula(x, y, t, bias), abs=1e-6)
    assert loss == pytest.approx(paper_loop(x, y, t, bias or 0.0), abs=1e-6)


def test_init_values_are_the_papers() -> None:
    assert math.exp(INIT_LOGIT_SCALE) == pytest.approx(10.0) and INIT_LOGIT_BIAS == -10.0


def test_bias_and_scale_gradients_are_the_closed_form() -> None:
    """d/db = −Σ z σ(−z·l) / B and d/dt = −Σ z (x·y) σ(−z·l) / B, from d/dl −logσ(z·l) = −z σ(−z·l)."""
    x, y = _features()
    t = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    SigLipLoss()(x, y, t, logit_bias=b)["loss"].backward()
    cos = x @ y.T
    z = 2 * torch.eye(6, dtype=torch.float64) - 1
    s = torch.sigmoid(-z * (5.0 * cos - 3.0))
    assert b.grad.item() == pytest.approx(float(-(z * s).sum() / 6), abs=1e-9)
    assert t.grad.item() == pytest.approx(float(-(z * cos * s).sum() / 6), abs=1e-9)


class _BiasEncoder(torch.nn.Module):
    """A tiny stand-in with the forward contract of a SigLIP model (logit_bias returned beside logit_scale)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(10, 8)
        self.text = torch.nn.Linear(12, 8)
        self.logit_scale = torch.nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))
        self.logit_bias = torch.nn.Parameter(torch.tensor(INIT_LOGIT_BIAS))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_features": F.normalize(self.image(images), dim=-1),
                "text_features": F.normalize(self.text(tokens), dim=-1),
                "logit_scale": self.logit_scale.exp(), "logit_bias": self.logit_bias}


def _data(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"images": torch.randn(n, 10, generator=g), "tokens": torch.randn(n, 12, generator=g)}


# A SigLIP trained with its own loss, and with CLIP's (open_clip #1076: the bias then went unused and DDP stopped).
LOSSES = {"sigmoid": lambda local: SigLipLoss(local_loss=local), "infonce": lambda local: ClipLoss(local_loss=local)}


def _full_batch_grads(name: str = "sigmoid") -> tuple[float, dict[str, torch.Tensor]]:
    model, data = _BiasEncoder(), _data()
    out = model(data["images"], data["tokens"])
    loss = LOSSES[name](False)(out["image_features"], out["text_features"], out["logit_scale"],
                               logit_bias=out["logit_bias"])["loss"]
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_infonce_takes_a_bias_and_is_unchanged_by_it() -> None:
    """CLIP's loss on a SigLIP: the bias shifts a whole softmax row, so the value is the same and its gradient 0."""
    x, y = _features()
    t, b = torch.tensor(6.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    with_bias = ClipLoss()(x, y, t, logit_bias=b)["loss"]
    with_bias.backward()
    assert with_bias.item() == pytest.approx(ClipLoss()(x, y, t)["loss"].item(), abs=1e-12)
    assert b.grad is not None and abs(b.grad.item()) < 1e-12


def test_gradient_accumulation_equals_big_batch() -> None:
    ref_loss, ref_grads = _full_batch_grads()
    model, data = _BiasEncoder(), _data()
    micro = [MicroBatch(**{k: v[i:i + 2] for k, v in data.items()}) for i in range(0, 8, 2)]
    terms, _ = accumulated_backward(model, SigLipLoss(), micro)
    assert terms["loss"].item() == pytest.approx(ref_loss, rel=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref_grads[n], atol=1e-6, rtol=1e-5), n


def _ddp_step(rank: int, world: int, name: str, local_loss: bool) -> tuple[torch.Tensor, torch.nn.Module]:
    from torch.nn.parallel import DistributedDataParallel as DDP
    model = DDP(_BiasEncoder())  # find_unused_parameters off: an unused logit_bias would fail the 2nd step
    data = {k: v.chunk(world)[rank] for k, v in _data().items()}
    for _ in range(2):
        model.zero_grad()
        out = model(data["images"], data["tokens"])
        terms = LOSSES[name](local_loss)(out["image_features"], out["text_features"], out["logit_scale"],
                                         logit_bias=out["logit_bias"])
        terms["loss"].backward()
    return terms["loss"], model


@pytest.mark.slow
@pytest.mark.parametrize("name,local_loss", [("sigmoid", False), ("sigmoid", True), ("infonce", False)])
def test_two_process_gloo_equals_one_process_with_the_doubled_batch(name: str, local_loss: bool, tmp_path) -> None:
    loss, grads = gloo_loss_and_grads(_ddp_step, (name, local_loss), tmp_path)
    ref_loss, ref_grads = _full_batch_grads(name)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert grads["logit_bias"].abs().item() > 0 if name == "sigmoid" else grads["logit_bias"].abs().item() < 1e-6
    for n, g in grads.items():
        assert torch.allclose(g, ref_grads[n], atol=1e-6, rtol=1e-4), n
