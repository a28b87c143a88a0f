"""Post-training step time with and without HyCD distillation, as a ratio measured in one run.

    python benchmarks/distill_step.py                      # tiny preset, batch 64, CPU (what benchmarks/README shows)
    python benchmarks/distill_step.py --preset small --batch-size 128 --device cuda

The two arms are the recipes as the trainer builds them: `posttrain` (IMSep on a two-tower CLIP) and
`posttrain-keep` (the same plus HyCD from the frozen starting model), each stepped by the trainer's own StepRunner
(teacher forward under no_grad, student forward, loss, backward, AdamW, clamp) on the same pre-collated synthetic
batches. The caption embeddings IMSep needs are fixed random rows outside the timed region, so the ratio is
conservative (a real run's cache lookups add the same time to both arms). The arms are timed in interleaved rounds
(load drift on the machine hits both alike) and compared by median step time.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import alignclip
from alignclip.data.collate import Collate
from alignclip.data.synthetic import SyntheticShapes
from alignclip.training.recipes import RECIPES
from alignclip.training.resolve import load_config
from alignclip.training.objective import create_loss
from alignclip.training.init_model import create_run_model
from alignclip.training.optim import create_optimizer
from alignclip.training.step import StepRunner

TARGET = 1.4  # distillation may add at most 40% to the post-training step time


class Arm:
    """One recipe's model, loss (with its teacher) and optimizer, stepped like the trainer does."""

    def __init__(self, recipe: str, init: Path, batches: list, device: torch.device) -> None:
        config = load_config(overrides={**RECIPES[recipe], "model.init_from": str(init), "runtime.device": device.type})
        self.model, teacher = create_run_model(config, device)
        loss = create_loss(config, self.model.embed_dim, teacher)
        o = config.optim
        optimizer = create_optimizer(self.model, o.lr, o.weight_decay, o.betas, o.eps)
        self.runner = StepRunner(self.model, loss, optimizer, None, "fp32", device, 1, None)
        self.batches, self.device, self.beta = batches, device, config.loss.beta
        g = torch.Generator().manual_seed(0)
        self.semantic = [torch.randn(len(b), 384, generator=g).to(device) for b in batches]

    def step(self, i: int) -> float:
        """Seconds for one optimizer step on batch i (synchronised on CUDA)."""
        j = i % len(self.batches)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.runner.step(self.batches[j], self.semantic[j], self.beta)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def measure(preset: str = "tiny", batch_size: int = 64, steps: int = 20, warmup: int = 3, device: str = "cpu",
            num_batches: int = 4) -> dict[str, Any]:
    """Median step milliseconds of both arms and their ratio (distill / plain)."""
    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        init = alignclip.save_checkpoint(alignclip.create_model(preset, "clip", seed=0), Path(tmp) / "base")
        model = alignclip.load_checkpoint(init)
        data = SyntheticShapes(batch_size * num_batches, seed=0, image_size=model.image_size)
        collate = Collate(alignclip.get_tokenizer(model.context_length), model.image_size)
        batches = [collate([data[i] for i in range(b * batch_size, (b + 1) * batch_size)])
                   for b in range(num_batches)]
        arms = {"posttrain": Arm("posttrain", init, batches, dev), "posttrain-keep": Arm("posttrain-keep", init,
                                                                                      batches, dev)}
        times: dict[str, list[float]] = {name: [] for name in arms}
        for i in range(warmup + steps):  # interleaved: one step of each arm per round
            for name, arm in arms.items():
                seconds = arm.step(i)
                if i >= warmup:
                    times[name].append(seconds)
    plain, distill = (statistics.median(times[n]) * 1000 for n in ("posttrain", "posttrain-keep"))
    return {"preset": preset, "batch_size": batch_size, "device": device, "steps": steps,
            "plain_ms": plain, "distill_ms": distill, "ratio": distill / plain}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(args.preset, args.batch_size, args.steps, device=args.device)
    print(f"| preset | batch | posttrain step ms | posttrain-keep step ms | ratio |\n|---|---:|---:|---:|---:|\n"
          f"| {r['preset']} | {r['batch_size']} | {r['plain_ms']:.1f} | {r['distill_ms']:.1f} | {r['ratio']:.3f} |")
    print(f"target: ratio <= {TARGET}: {'met' if r['ratio'] <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
