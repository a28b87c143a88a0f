"""Each loss against a straightforward reference written here, plus accumulation and 2-process equivalence."""
from __future__ import annotations

import math


import pytest
import torch
import torch.nn.functional as F

from alignclip.losses import AlignCLIPLoss, ClipLoss, MicroBatch, accumulated_backward
from conftest import gloo_loss_and_grads


def _features(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    y = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    s = torch.randn(n, 5, generator=g)
    return x, y, s


def _ce(logits: list[list[float]]) -> float:
    """Mean over rows of -log softmax at the diagonal, by hand."""
    total = 0.0
    for i, row in enumerate(logits):
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
    return total / len(logits)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


def ref_clip(x: torch.Tensor, y: torch.Tensor, t: float) -> float:
    n = len(x)
    i2t = [[t * _dot(x[i], y[j]) for j in range(n)] for i in range(n)]
    t2i = [[t * _dot(y[i], x[j]) for j in range(n)] for i in range(n)]
    return (_ce(i2t) + _ce(t2i)) / 2


def ref_separation(z: torch.Tensor, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, t: float,
                   weighting: str) -> float:
    n = len(x)
    s = F.normalize(s, dim=-1)
    logits = []
    for i in range(n):
        row = []
        for j in range(n):
            if i == j:
                row.append(t * _dot(x[i], y[i]))
            else:
                w = 1 - _dot(s[i], s[j])
                sim = t * _dot(z[i], z[j])
                row.append(sim * w if weighting == "logits" else sim + math.log(min(max(w, 1e-6), 2.0)))
        logits.append(row)
    return _ce(logits)


def test_clip_loss_matches_reference() -> None:
    x, y, _ = _features()
    out = ClipLoss()(x, y, torch.tensor(14.0))
    assert out["loss"].item() == pytest.approx(ref_clip(x, y, 14.0), rel=1e-5)
    assert out["contrastive_loss"].item() == out["loss"].item()


@pytest.mark.parametrize("weighting", ["logits", "negatives"])
@pytest.mark.parametrize("sep", [(True, True), (True, False), (False, True)])
def test_alignclip_loss_matches_reference(weighting: str, sep: tuple[bool, bool]) -> None:
    x, y, s = _features()
    t, alpha, beta = 12.0, 0.7, 0.4
    loss = AlignCLIPLoss(alpha=alpha, beta=beta, separate_text=sep[0], separate_image=sep[1], weighting=weighting)
    out = loss(x, y, torch.tensor(t), semantic_features=s)
    separation = beta * (sep[0] * ref_separation(y, x, y, s, t, weighting)
                         + sep[1] * ref_separation(x, x, y, s, t, weighting))
    assert set(out) == {"contrastive_loss", "separation_loss", "loss"}
    assert out["contrastive_loss"].item() == pytest.approx(ref_clip(x, y, t), rel=1e-5)  # the mean, as ClipLoss
    assert out["separation_loss"].item() == pytest.approx(separation, rel=1e-5)
    # The paper's total: alpha x the SUM of both directions.
    assert out["loss"].item() == pytest.approx(alpha * 2 * ref_clip(x, y, t) + separation, rel=1e-5)


def test_both_losses_log_the_same_contrastive_quantity() -> None:
    """One meaning per name: `contrastive_loss` is the mean of the two directions in both losses; AlignCLIP's total
    keeps the paper's alpha x sum, so with alpha=1, beta=0 it is exactly twice CLIP's total."""
    # Hand-worked: x = (e1, e2), y = (e1, e1), t = 1. i2t rows: [1, 1] and [0, 0] -> CE log 2 and log 2.
    # t2i rows: [1, 0] and [1, 0] -> CE log(1 + e^-1) for row 0 (label 0), 1 + log(1 + e^-1) for row 1 (label 1).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    i2t = math.log(2)
    t2i = (math.log(1 + math.exp(-1)) + 1 + math.log(1 + math.exp(-1))) / 2
    clip = ClipLoss()(x, y, torch.tensor(1.0))
    align = AlignCLIPLoss(alpha=1.0, beta=0.0, weighting="none")(x, y, torch.tensor(1.0))
    assert clip["contrastive_loss"].item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    assert align["contrastive_loss"].item() == clip["contrastive_loss"].item()
    assert align["separation_loss"].item() == 0.0
    assert align["loss"].item() == 2 * clip["loss"].item() == pytest.approx(i2t + t2i, rel=1e-6)


def test_beta_passed_per_call_equals_the_configured_beta() -> None:
    x, y, s = _features()
    t = torch.tensor(10.0)
    per_call = AlignCLIPLoss(beta=0.5)(x, y, t, semantic_features=s, beta=0.2)
    configured = AlignCLIPLoss(beta=0.2)(x, y, t, semantic_features=s)
    assert all(torch.equal(per_call[k], configured[k]) for k in configured)


def test_alignclip_unweighted_variant_is_explicit() -> None:
    x, y, s = _features()
    with pytest.raises(ValueError, match="needs semantic_features.*weighting='none'"):
        AlignCLIPLoss(beta=0.5)(x, y, torch.tensor(10.0))
    t = 10.0
    out = AlignCLIPLoss(beta=0.5, weighting="none")(x, y, torch.tensor(t))
    assert torch.equal(AlignCLIPLoss(beta=0.5, weighting="none")(x, y, torch.tensor(t), semantic_features=s)["loss"],
                       out["loss"])  # "none" ignores the caption embeddings
    xx = [[t * _dot(x[i], x[j]) for j in range(6)] for i in range(6)]
    yy = [[t * _dot(y[i], y[j]) for j in range(6)] for i in range(6)]
    assert out["separation_loss"].item() == pytest.approx(0.5 * (_ce(xx) + _ce(yy)), rel=1e-5)


def test_paper_weighting_rewards_collapse_for_synonyms_but_ours_does_not() -> None:
    """With w≈0 (synonyms) the paper's logits ignore the embeddings; ours drops them from the negatives."""
    x, y, _ = _features(4)
    s = torch.ones(4, 5)  # all captions identical in meaning: w = 0 everywhere
    t = torch.tensor(10.0)
    collapsed = F.normalize(torch.ones(4, 8), dim=-1)
    paper = AlignCLIPLoss(weighting="logits", alpha=0.0)
    ours = AlignCLIPLoss(weighting="negatives", alpha=0.0)
    # Paper: every negative logit is 0, so collapsing (x_i·y_i = 1) is the optimum of the separation term.
    assert paper(collapsed, collapsed, t, s)["separation_loss"] < paper(x, y, t, s)["separation_loss"]
    # Ours: negatives get log(1e-6) → the term is ≈0 whatever the embeddings: nothing rewards collapse.
    assert ours(collapsed, collapsed, t, s)["separation_loss"].item() == pytest.approx(0.0, abs=1e-3)


def test_bad_loss_configs() -> None:
    with pytest.raises(ValueError, match="separate_text or separate_image"):
        AlignCLIPLoss(separate_text=False, separate_image=False)
    with pytest.raises(ValueError, match="unknown weighting.*logits, negatives, none"):
        AlignCLIPLoss(weighting="both")
    x, y, s = _features()
    with pytest.raises(ValueError, match="semantic_features has 3 rows"):
        AlignCLIPLoss()(x, y, torch.tensor(1.0), semantic_features=s[:3])


class _Encoder(torch.nn.Module):
    """A tiny stand-in model with the alignclip forward contract."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(10, 8)
        self.text = torch.nn.Linear(12, 8)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_features": F.normalize(self.image(images), dim=-1),
                "text_features": F.normalize(self.text(tokens), dim=-1),
                "logit_scale": self.logit_scale.exp()}


def _data(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"images": torch.randn(n, 10, generator=g), "tokens": torch.randn(n, 12, generator=g),
            "semantic_features": torch.randn(n, 5, generator=g)}


LOSSES = {"clip": lambda: ClipLoss(), "alignclip": lambda: AlignCLIPLoss(),
          "alignclip_neg": lambda: AlignCLIPLoss(weighting="negatives", beta=0.3)}


def _full_batch_grads(loss_fn: torch.nn.Module) -> tuple[float, dict[str, torch.Tensor]]:
    model, data = _Encoder(), _data()
    out = model(data["images"], data["tokens"])
    loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                   semantic_features=data["semantic_features"])["loss"]
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_accumulation_equals_big_batch(name: str) -> None:
    ref_loss, ref_grads = _full_batch_grads(LOSSES[name]())
    model, data = _Encoder(), _data()
    micro = [MicroBatch(**{k: v[i:i + 2] for k, v in data.items()}) for i in range(0, 8, 2)]
    terms, out = accumulated_backward(model, LOSSES[name](), micro)
    assert terms["loss"].item() == pytest.approx(ref_loss, rel=1e-5)
    with torch.no_grad():
        full = _Encoder()(data["images"], data["tokens"])
    for key in ("image_features", "text_features"):  # the whole batch's features, not the last micro-batch's
        assert torch.allclose(out[key], full[key], atol=1e-6)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref_grads[n], atol=1e-5, rtol=1e-4), n


def _ddp_step(rank: int, world: int, name: str, local_loss: bool) -> tuple[torch.Tensor, torch.nn.Module]:
    from torch.nn.parallel import DistributedDataParallel as DDP
    loss_fn = LOSSES[name]()
    loss_fn.local_loss = local_loss
    model = DDP(_Encoder())
    data = {k: v.chunk(world)[rank] for k, v in _data().items()}
    out = model(data["images"], data["tokens"])
    terms = loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                    semantic_features=data["semantic_features"])
    terms["loss"].backward()
    return terms["loss"], model


@pytest.mark.parametrize("name,local_loss", [("clip", False), ("clip", True), ("alignclip", False),
                                             ("alignclip_neg", True)])
@pytest.mark.slow
def test_two_process_gloo_equals_single_process(name: str, local_loss: bool, tmp_path) -> None:
    loss, grads = gloo_loss_and_grads(_ddp_step, (name, local_loss), tmp_path)
    ref_loss, ref_grads = _full_batch_grads(LOSSES[name]())
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for n, g in grads.items():
        assert torch.allclose(g, ref_grads[n], atol=1e-5, rtol=1e-4), n
