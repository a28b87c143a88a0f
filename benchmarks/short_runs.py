"""How many optimizer steps does a tiny CLIP need to leave chance? The figures behind training/health.py's
SHORT_RUN_STEPS: held-out zero-shot top-1 on the synthetic set after N steps, for a few seeds.

    python benchmarks/short_runs.py                      # 48, 100, 200 steps x seeds 0, 1 (2.5 min on 2 idle CPU cores)
    python benchmarks/short_runs.py --steps 48 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import tempfile

import alignclip
from alignclip.evaluation.suite import evaluate_model
from alignclip.training import load_config, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="48,100,200", help="comma-separated run lengths (optimizer steps)")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    p.add_argument("--batch-size", type=int, default=128)
    a = p.parse_args()
    print("steps  seed  warmup  final loss  zero-shot top-1 per attribute (chance: 1 / classes)")
    for steps in (int(s) for s in a.steps.split(",")):
        for seed in (int(s) for s in a.seeds.split(",")):
            with tempfile.TemporaryDirectory() as out:
                config = load_config(overrides=[
                    "method=clip", "model.preset=tiny", "data.num_samples=10240", "data.workers=1",
                    f"optim.batch_size={a.batch_size}", f"optim.steps={steps}", "optim.warmup_steps=20",
                    "optim.lr=1e-3", f"runtime.seed={seed}", "runtime.device=cpu", f"logging.out={out}",
                    "logging.progress=false", "logging.tensorboard=false", "logging.checkpoint_every=0"])
                result = train(config)
                model = alignclip.load_checkpoint(result.checkpoint)
                scores, _, _ = evaluate_model(model, "synthetic", tasks="zeroshot", num_samples=1000, seed=0)
            top1 = "  ".join(f"{r.dataset.split('/')[-1]} {r.metrics['top1']:.3f}" for r in scores)
            print(f"{steps:5d}  {seed:4d}  {result.warmup_steps:6d}  {result.final_loss:10.4f}  {top1}", flush=True)


if __name__ == "__main__":
    main()
