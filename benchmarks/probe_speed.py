"""Linear-probe solver time on Fashion-MNIST features: one BLAS thread (what LinearProbe does) vs the default pool.

    python benchmarks/probe_speed.py [--samples 1000] [--seeds 0,1,2]

Features come from an untrained tiny CLIP (seed 0), 1000 train / 1000 test images, as `alignclip eval --dataset
fashion-mnist --tasks linear_probe` uses by default; only the solver (C search + refit + test) is timed.
"""
from __future__ import annotations

import argparse
import time

import alignclip
from alignclip.evaluation import linear_probe
from alignclip.evaluation.datasets import FashionMNIST
from alignclip.evaluation.features import extract_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    model = alignclip.create_model("tiny", architecture="clip", seed=0)
    splits = {}
    for train in (True, False):
        data = FashionMNIST(train=train, image_size=model.image_size).subset(args.samples, 0)
        splits[train] = (extract_features(model, data), data.targets)
    (x_train, y_train), (x_test, y_test) = splits[True], splits[False]
    for seed in map(int, args.seeds.split(",")):
        line = f"seed {seed}:"
        for name, limit in (("1 thread (LinearProbe)", 1), ("default threads (before)", None)):
            # the probe itself limits to one thread; the "before" row lifts the limit around sklearn's fit
            probe = linear_probe.LinearProbe(seed=seed)
            if limit is None:

                def fit(features, labels, C, probe=probe):  # the baseline: _fit without a thread limit
                    from sklearn.linear_model import LogisticRegression

                    return LogisticRegression(C=C, max_iter=probe.max_iter).fit(features, labels)
                probe._fit = fit  # type: ignore[method-assign]
            start = time.perf_counter()
            top1 = probe.evaluate_features(x_train, y_train, x_test, y_test).metrics["top1"]
            line += f"  {name} {time.perf_counter() - start:6.1f} s, top1 {top1:.4f};"
        print(line, flush=True)


if __name__ == "__main__":
    main()
