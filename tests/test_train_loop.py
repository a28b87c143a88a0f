"""In-process training runs on a micro model: every method learns, accumulation equals the big batch, captions are
encoded once, unreadable samples are counted and limited, a non-finite loss stops without a new checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignclip.data.shards import BadSample
from alignclip.data.synthetic import SyntheticShapes
from alignclip.losses import ClipLoss
from alignclip.training import NonFiniteLossError, load_config, train
from alignclip.training.metrics import read_metrics



@pytest.fixture(scope="module")
def semantic_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.getbasetemp() / "semantic-cache")  # shared by this session's trainer tests


def micro_config(tmp_path: Path, preset: str, cache: str, *overrides: str):
    return load_config(overrides=[
        f"model.preset={preset}", "data.num_samples=256", "data.workers=0", "optim.batch_size=16",
        "optim.steps=8", "optim.warmup_steps=2", "optim.lr=2e-3", "runtime.threads=1", "runtime.device=cpu",
        f"logging.out={tmp_path}", "logging.log_every=1", "logging.progress=false", "logging.tensorboard=false",
        "logging.checkpoint_every=0", f"loss.semantic_cache_dir={cache}", *overrides])


def weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(Path(result.checkpoint) / "model.safetensors"))


@pytest.mark.parametrize("method", ["clip", "sharedclip", "alignclip"])
def test_each_method_trains_and_its_loss_falls(tmp_path, micro_preset, semantic_cache, method) -> None:
    # 32 samples, batch 32: every step sees the whole (reshuffled) set, so 30 steps are enough to fit it.
    config = micro_config(tmp_path, micro_preset, semantic_cache, f"method={method}", "optim.steps=30",
                          "data.num_samples=32", "optim.batch_size=32", "optim.lr=3e-3", "optim.warmup_steps=5",
                          "logging.log_every=5", "logging.tensorboard=true", "loss.separation_warmup_steps=20")
    result = train(config)
    records = read_metrics(result.run_dir)
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    for key in ("loss", "contrastive_loss"):
        assert records[-1][key] < 0.8 * records[0][key], [r[key] for r in records]
    expected = {"loss", "contrastive_loss", "logit_scale", "paired_cosine", "l2m", "image_cosine",
                "text_cosine", "lr", "samples_per_second", "skipped_samples"}
    assert expected <= set(records[-1])
    assert ("separation_loss" in records[-1]) == (method == "alignclip")
    if method == "alignclip":  # beta ramps linearly to its configured value over separation_warmup_steps
        assert [r["beta"] for r in records] == pytest.approx([0.5 * min(1.0, r["step"] / 20) for r in records])
    assert result.steps == 30 and result.samples == 30 * 32 and result.final_loss == records[-1]["loss"]
    assert Path(result.checkpoint).name == "step_000030"
    assert (Path(result.run_dir) / "config.yaml").is_file()
    assert list((Path(result.run_dir) / "tensorboard").glob("events.out.tfevents.*"))
    assert all(1.0 <= r["logit_scale"] <= 100.0 for r in records)


def test_accumulation_equals_the_big_batch(tmp_path, micro_preset, semantic_cache) -> None:
    big = train(micro_config(tmp_path / "big", micro_preset, semantic_cache, "optim.steps=5"))
    acc = train(micro_config(tmp_path / "acc", micro_preset, semantic_cache, "optim.steps=5", "optim.accum_freq=4"))
    big_losses = [r["loss"] for r in read_metrics(big.run_dir)]
    acc_losses = [r["loss"] for r in read_metrics(acc.run_dir)]
    assert acc_losses == pytest.approx(big_losses, rel=1e-5)
    a, b = weights(big), weights(acc)
    for name in a:
        if name.endswith("attn.in_proj_bias"):
            # The key bias has an exactly-zero true gradient (softmax ignores a per-query shift), so its gradient
            # is rounding noise that Adam rescales to lr-sized steps; compare only the query and value biases.
            width = a[name].shape[0] // 3
            a[name], b[name] = a[name][[*range(width), *range(2 * width, 3 * width)]], \
                b[name][[*range(width), *range(2 * width, 3 * width)]]
        # atol: 0.1% of the most Adam can move a weight here (lr 2e-3 x 5 steps); float-order noise in a rarely
        # used token row's tiny gradient is rescaled by Adam to ~1e-6.
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)


def test_every_unique_caption_is_encoded_once(tmp_path, micro_preset) -> None:
    cache = str(tmp_path / "fresh-cache")
    # 64 samples, 12 steps of 16 = 3 epochs: every caption is seen, most of them several times.
    config = micro_config(tmp_path, micro_preset, cache, "data.num_samples=64", "optim.steps=12")
    dataset = SyntheticShapes(64, seed=0, image_size=16)
    unique = {dataset[i]["caption"] for i in range(64)}
    first = train(config)
    assert first.semantic_encoded == len(unique)
    again = train(config)  # the disk cache already holds every caption
    assert again.semantic_encoded == 0

    class NoCaptionListing(torch.utils.data.Dataset):  # forces lazy encoding on first sight
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int) -> dict:
            return dataset[i]

    lazy = train(micro_config(tmp_path, micro_preset, str(tmp_path / "lazy-cache"), "data.num_samples=64",
                              "optim.steps=12"), dataset=NoCaptionListing())
    assert lazy.semantic_encoded == len(unique)


class SometimesBroken(torch.utils.data.Dataset):
    """Every `every`-th sample is unreadable (None), as the data contract has it."""

    def __init__(self, every: int) -> None:
        self.inner, self.every = SyntheticShapes(256, seed=0, image_size=16), every

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict | BadSample | None:
        if i % self.every:
            return self.inner[i]
        return BadSample(f"img{i}.png", "cannot identify image") if i % (2 * self.every) == 0 else None


def test_skipped_samples_are_counted(tmp_path, micro_preset, semantic_cache) -> None:
    config = micro_config(tmp_path, micro_preset, semantic_cache, "method=clip", "optim.steps=16",
                          "data.max_skip_fraction=0.2")
    result = train(config, dataset=SometimesBroken(every=10))
    bad = sum(1 for i in range(256) if i % 10 == 0)  # 16 steps x 16 = one full epoch: every index once
    assert result.skipped_samples == bad
    assert read_metrics(result.run_dir)[-1]["skipped_samples"] == bad
    assert result.samples == 256 - bad
    named = (Path(result.run_dir) / "bad_samples.tsv").read_text().splitlines()  # BadSamples are named, Nones not
    assert sorted(line.split("\t")[1] for line in named) == sorted(f"img{i}.png" for i in range(0, 256, 20))
    assert all(line.split("\t")[2] == "cannot identify image" for line in named)


def test_too_many_skipped_samples_stop_the_run(tmp_path, micro_preset, semantic_cache) -> None:
    config = micro_config(tmp_path, micro_preset, semantic_cache, "method=clip", "optim.steps=32",
                          "data.max_skip_fraction=0.05")
    with pytest.raises(ValueError, match=r"samples \(10\.\d%\) were unreadable, above data.max_skip_fraction=0.05"
                                         r"; each one is named in .*bad_samples.tsv") as stopped:
        train(config, dataset=SometimesBroken(every=10))
    listed = Path(str(stopped.value).split("named in ")[1].split(":")[0])
    assert listed.is_file() and "cannot identify image" in listed.read_text()


def test_a_dataset_smaller_than_a_batch_names_its_bad_rows(tmp_path, micro_preset, semantic_cache) -> None:
    (tmp_path / "all_bad.tsv").write_text("filepath\ttitle\nmissing.png\ta cat\ngone.png\ta dog\n")
    config = micro_config(tmp_path, micro_preset, semantic_cache, "method=clip", "optim.steps=4",
                          f"data.train=tsv:{tmp_path / 'all_bad.tsv'}")
    with pytest.raises(ValueError, match=r"2 samples \(2 of them unreadable, e.g. .*missing.png: image file not "
                                         r"found\), fewer than one batch"):
        train(config)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, micro_preset, semantic_cache,
                                                                 monkeypatch) -> None:
    calls = {"n": 0}
    original = ClipLoss.forward

    def poisoned(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 6:  # the 6th step (index 5)
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms

    monkeypatch.setattr(ClipLoss, "forward", poisoned)
    config = micro_config(tmp_path, micro_preset, semantic_cache, "method=clip", "optim.steps=10",
                          "logging.checkpoint_every=2", "logging.name=nan-run")
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 5: .*step_000004") as error:
        train(config)
    assert error.value.step == 5  # an int, for code that acts on it
    checkpoints = sorted(p.name for p in (tmp_path / "nan-run" / "checkpoints").iterdir())
    assert checkpoints == ["step_000002", "step_000004"]
    state = load_file(str(tmp_path / "nan-run" / "checkpoints" / "step_000004" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in state.values())
