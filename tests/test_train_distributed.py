"""DDP on CPU: two gloo processes, each with half of every global batch, follow the loss curve of one process that
holds the whole batch (the data order is the same by construction, the losses all-gather with gradient)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignclip.training import load_config, train
from alignclip.training.metrics import read_metrics
from conftest import MICRO, spawn_train_ranks

STEPS = 12


@pytest.mark.slow
@pytest.mark.parametrize("method", ["alignclip"])
def test_two_gloo_processes_match_one_process(tmp_path, tmp_path_factory, method) -> None:
    preset = tmp_path / "micro.json"
    preset.write_text(json.dumps(MICRO))
    cache = tmp_path_factory.getbasetemp() / "semantic-cache"
    overrides = [f"method={method}", f"model.preset={preset}", "runtime.device=cpu", "runtime.threads=1",
                 "data.workers=0", "data.num_samples=128", "optim.batch_size=32", f"optim.steps={STEPS}",
                 "optim.lr=2e-3", "optim.warmup_steps=3", "loss.separation_warmup_steps=6",
                 "logging.progress=false", "logging.tensorboard=false", "logging.log_every=1",
                 "logging.checkpoint_every=0", f"loss.semantic_cache_dir={cache}", f"logging.out={tmp_path}"]

    single = train(load_config(overrides=overrides + ["logging.name=single"]))

    ranks = spawn_train_ranks(["--name", "ddp"], overrides)
    outputs = [p.communicate(timeout=180)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], "\n".join(outputs)
    assert "on 2 x cpu" in outputs[0]

    one, two = read_metrics(single.run_dir), read_metrics(tmp_path / "ddp")
    assert [r["step"] for r in two] == list(range(1, STEPS + 1))
    for key in ("loss", "contrastive_loss", "separation_loss", "logit_scale", "lr", "beta"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-4), key
    assert two[-1]["samples"] == one[-1]["samples"] == STEPS * 32
    assert one[-1]["loss"] < one[0]["loss"]  # it trained, not just matched

    a = load_file(str(Path(single.checkpoint) / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "checkpoints" / f"step_{STEPS:06d}" / "model.safetensors"))
    for name in a:
        if name.endswith("attn.in_proj_bias"):  # key bias: zero true gradient, rounding noise (see test_train_loop)
            width = a[name].shape[0] // 3
            keep = [*range(width), *range(2 * width, 3 * width)]
            a[name], b[name] = a[name][keep], b[name][keep]
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_ddp_prefill_longer_than_the_dist_timeout(tmp_path, micro_preset) -> None:
    """Two gloo ranks must encode more captions (real MiniLM) than one rank could within runtime.dist_timeout_s:
    each encodes its half and waits on files, not in a collective, so the run starts and finishes."""
    timeout_s, captions = 10, 6144
    overrides = ["method=alignclip", f"model.preset={micro_preset}", "runtime.device=cpu", "runtime.threads=1",
                 "data.workers=0", f"data.num_samples={captions}", "optim.batch_size=512", "optim.steps=12",
                 f"runtime.dist_timeout_s={timeout_s}", "logging.progress=false", "logging.tensorboard=false",
                 "logging.checkpoint_every=0", f"loss.semantic_cache_dir={tmp_path / 'cache'}",
                 f"logging.out={tmp_path}"]
    ranks = spawn_train_ranks(["--name", "ddp"], overrides)
    outputs = [p.communicate(timeout=600)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], "\n".join(outputs)
    done = [re.search(r"rank (\d)/2: encoded (\d+) new captions in ([\d.]+)s", out) for out in outputs]
    assert all(done), "\n".join(outputs)
    counts = [int(m.group(2)) for m in done]
    assert sum(counts) == captions and min(counts) > 0.4 * captions  # every caption once, split about in half
    assert sum(float(m.group(3)) for m in done) > timeout_s  # what one rank alone would have needed
    assert read_metrics(tmp_path / "ddp")[-1]["step"] == 12
