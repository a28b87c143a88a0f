"""HyCD, RaFA and the composite loss against hand-worked values and torch's own cross-entropy; accumulation and
two processes give the one-process, whole-batch loss and gradient."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignclip.losses import (AlignCLIPLoss, ClipLoss, CompositeLoss, HyCDLoss, MicroBatch, RaFALoss,
                              accumulated_backward)
from alignclip.losses.distill import hycd_direction
from conftest import gloo_loss_and_grads


def _features(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_hycd_on_a_two_by_two_example_worked_by_hand() -> None:
    # student logits [[1, 0], [0, 1]], teacher uniform, alpha 0.5, T 1: each row's target is [0.75, 0.25] (rolled)
    # and the student's softmax [e, 1] / (e + 1), so the KL is 0.75 ln(0.75 (e+1) / e) + 0.25 ln(0.25 (e+1)).
    student, teacher = torch.eye(2), torch.zeros(2, 2)
    e = math.e
    by_hand = 0.75 * math.log(0.75 * (e + 1) / e) + 0.25 * math.log(0.25 * (e + 1))
    got = hycd_direction(student, teacher, torch.arange(2), alpha=0.5, temperature=1.0)
    assert got.item() == pytest.approx(by_hand, abs=1e-7)  # float32: the KL is a difference of ~0.1 terms
    # T = 2: the same with logits halved, times T² = 4
    half = 0.75 * math.log(0.75 * (e ** 0.5 + 1) / e ** 0.5) + 0.25 * math.log(0.25 * (e ** 0.5 + 1))
    assert hycd_direction(student, teacher, torch.arange(2), 0.5, 2.0).item() == pytest.approx(4 * half, abs=4e-7)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_hycd_at_alpha_one_is_infonce_at_temperature_t(temperature: float) -> None:
    x, y = _features()
    scale = torch.tensor(14.0)
    tx, ty = _features(seed=5)  # any teacher: alpha = 1 ignores it
    xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    hycd = HyCDLoss(alpha=1.0, temperature=temperature)(xs, ys, scale, tx, ty, torch.tensor(30.0))["loss"]
    hycd.backward()
    xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    labels = torch.arange(len(x))
    infonce = (F.cross_entropy(scale * xr @ yr.T / temperature, labels)
               + F.cross_entropy(scale * yr @ xr.T / temperature, labels)) / 2 * temperature ** 2
    infonce.backward()
    assert hycd.item() == pytest.approx(infonce.item(), rel=1e-6)
    assert torch.allclose(xs.grad, xr.grad, atol=1e-7) and torch.allclose(ys.grad, yr.grad, atol=1e-7)
    if temperature == 1.0:  # and that is ClipLoss's contrastive term
        assert hycd.item() == pytest.approx(ClipLoss()(x, y, scale)["loss"].item(), rel=1e-6)


def test_a_teacher_identical_to_the_student_at_alpha_zero_gives_zero_loss() -> None:
    x, y = _features()
    xs = x.clone().requires_grad_(True)
    loss = HyCDLoss(alpha=0.0, temperature=1.0)(xs, y, torch.tensor(20.0), x, y, torch.tensor(20.0))["loss"]
    loss.backward()
    assert abs(loss.item()) < 1e-6 and xs.grad.abs().max().item() < 1e-6
    # a different teacher temperature is a different distribution: not zero
    assert HyCDLoss(alpha=0.0)(x, y, torch.tensor(20.0), x, y, torch.tensor(5.0))["loss"].item() > 1e-3


def test_rafa_on_an_example_worked_by_hand() -> None:
    image, text, reference = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    # MSE(image, r) = (0² + 2²) / 2 = 2; MSE(text, r) = (1² + 0²) / 2 = 0.5
    assert RaFALoss()(image, text, reference)["rafa_loss"].item() == pytest.approx(2.5)
    image = image.clone().requires_grad_(True)
    RaFALoss()(image, text, reference)["loss"].backward()
    assert image.grad.tolist() == [[0.0, 2.0]]  # d/dx of mean((x - r)²) = 2 (x - r) / 2
    with pytest.raises(ValueError, match="one shape"):
        RaFALoss()(image, text, reference[:, :1])


def _composite(rafa: bool = True, distill: bool = True, base=None, teacher=None) -> CompositeLoss:
    return CompositeLoss(base or ClipLoss(), 0.3, distill=HyCDLoss(0.5, 1.0) if distill else None, distill_weight=2.0,
                         teacher=teacher or _Encoder(seed=7), rafa=RaFALoss() if rafa else None, rafa_weight=0.5,
                         embed_dim=8)


def test_composite_total_and_named_terms() -> None:
    x, y = _features()
    raw_x, raw_y, r = 3 * x, 2 * y, torch.randn(6, 8)
    tx, ty = _features(seed=3)
    terms = _composite()(x, y, torch.tensor(10.0), dist_image_features=tx, dist_text_features=ty,
                         dist_logit_scale=torch.tensor(20.0), image_unnormalized=raw_x, text_unnormalized=raw_y,
                         rafa_reference=r)
    clip = ClipLoss()(x, y, torch.tensor(10.0))["contrastive_loss"]
    distill = HyCDLoss(0.5, 1.0)(x, y, torch.tensor(10.0), tx, ty, torch.tensor(20.0))["loss"]
    rafa = RaFALoss()(raw_x, raw_y, r)["loss"]
    assert set(terms) == {"contrastive_loss", "distill_loss", "rafa_loss", "loss"}
    assert terms["loss"].item() == pytest.approx((0.3 * clip + 2.0 * distill + 0.5 * rafa).item(), rel=1e-6)
    # the base's own arguments pass through (IMSep's beta, its caption embeddings)
    s = torch.randn(6, 5)
    both = CompositeLoss(AlignCLIPLoss(beta=0.5))(x, y, torch.tensor(10.0), semantic_features=s, beta=0.1)
    assert both["separation_loss"].item() == pytest.approx(
        AlignCLIPLoss()(x, y, torch.tensor(10.0), semantic_features=s, beta=0.1)["separation_loss"].item())


class SigmoidLoss(torch.nn.Module):
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): -mean over pairs of log σ(z_ij (t x_i·y_j + b)), z = ±1.
    It takes no semantic_features and needs a logit_bias: the shape of another contrastive term in the slot."""

    def forward(self, image, text, logit_scale, logit_bias):
        z = 2 * torch.eye(len(image)) - 1
        loss = -F.logsigmoid(z * (logit_scale * image @ text.T + logit_bias)).sum() / len(image)
        return {"contrastive_loss": loss, "loss": loss}


def test_another_contrastive_term_slots_in_place_of_infonce() -> None:
    x, y = _features()
    tx, ty = _features(seed=3)
    loss = CompositeLoss(SigmoidLoss(), 1.0, distill=HyCDLoss(), distill_weight=1.0, teacher=_Encoder())
    terms = loss(x, y, torch.tensor(10.0), logit_bias=torch.tensor(-10.0), dist_image_features=tx,
                 dist_text_features=ty, dist_logit_scale=torch.tensor(10.0))
    sig = SigmoidLoss()(x, y, torch.tensor(10.0), torch.tensor(-10.0))["loss"]
    assert terms["loss"].item() == pytest.approx((sig + terms["distill_loss"]).item(), rel=1e-6)


class _Encoder(torch.nn.Module):
    """A tiny model with the alignclip forward contract, unnormalised projections included."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.image, self.text = torch.nn.Linear(10, 8), torch.nn.Linear(12, 8)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        raw_image, raw_text = self.image(images), self.text(tokens)
        return {"image_features": F.normalize(raw_image, dim=-1), "text_features": F.normalize(raw_text, dim=-1),
                "logit_scale": self.logit_scale.exp(), "image_unnormalized": raw_image,
                "text_unnormalized": raw_text}


def _data(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"images": torch.randn(n, 10, generator=g), "tokens": torch.randn(n, 12, generator=g)}


def _reference_grads(loss_fn: CompositeLoss, extra: dict) -> tuple[float, dict[str, torch.Tensor]]:
    model, data = _Encoder(), _data()
    out = model(data["images"], data["tokens"])
    loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"], **extra,
                   **{k: out[k] for k in loss_fn.model_outputs})["loss"]
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_accumulation_with_teacher_and_rafa_equals_the_big_batch() -> None:
    loss_fn, data = _composite(), _data()
    torch.manual_seed(11)
    extra = loss_fn.prepare(data["images"], data["tokens"])  # once per step: one set of references
    assert set(extra) == {"dist_image_features", "dist_text_features", "dist_logit_scale", "rafa_reference"}
    assert not torch.equal(extra["rafa_reference"], loss_fn.prepare(data["images"], data["tokens"])["rafa_reference"])
    ref_loss, ref_grads = _reference_grads(loss_fn, extra)
    model = _Encoder()
    micro = [MicroBatch(data["images"][i:i + 2], data["tokens"][i:i + 2]) for i in range(0, 8, 2)]
    import functools
    terms, _ = accumulated_backward(model, functools.partial(loss_fn, **extra), micro,
                                    outputs=loss_fn.model_outputs)
    assert terms["loss"].item() == pytest.approx(ref_loss, rel=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref_grads[n], atol=1e-5, rtol=1e-4), n


def _ddp_step(rank: int, world: int) -> tuple[torch.Tensor, torch.nn.Module]:
    from torch.nn.parallel import DistributedDataParallel as DDP
    loss_fn, data = _composite(rafa=False), _data()
    extra = loss_fn.prepare(data["images"], data["tokens"])
    model = DDP(_Encoder())
    shard = {k: v.chunk(world)[rank] for k, v in {**data, "dist_image_features": extra["dist_image_features"],
                                                   "dist_text_features": extra["dist_text_features"]}.items()}
    out = model(shard["images"], shard["tokens"])
    terms = loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                    dist_image_features=shard["dist_image_features"],
                    dist_text_features=shard["dist_text_features"], dist_logit_scale=extra["dist_logit_scale"])
    terms["loss"].backward()
    return terms["loss"], model


@pytest.mark.slow
def test_hycd_on_two_gloo_processes_equals_one_process(tmp_path) -> None:
    loss, grads = gloo_loss_and_grads(_ddp_step, (), tmp_path)
    loss_fn, data = _composite(rafa=False), _data()
    ref_loss, ref_grads = _reference_grads(loss_fn, loss_fn.prepare(data["images"], data["tokens"]))
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for n, g in grads.items():
        assert torch.allclose(g, ref_grads[n], atol=1e-5, rtol=1e-4), n
