"""Speed and peak memory of the evaluation hot spots on random unit vectors (at the sizes of large evaluations).

    python benchmarks/eval_speed.py gap --pairs 100000 --dim 512
    python benchmarks/eval_speed.py retrieval --images 10000 --captions 50000 --dim 512 [--device cuda]

Peak memory is the process's peak RSS (getrusage) minus the RSS once the inputs exist, so it is what the measure
itself needed on top of its inputs; on CUDA the peak allocated GPU memory is printed too.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["gap", "retrieval"])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--captions", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    if args.what == "gap":
        from alignclip.evaluation.gap import gap_metrics

        x = torch.randn(args.pairs, args.dim, generator=g)
        y = torch.randn(args.pairs, args.dim, generator=g) + 0.05
        before = current_rss_mib()
        start = time.perf_counter()
        metrics = gap_metrics(x, y)
        seconds = time.perf_counter() - start
        size = {"pairs": args.pairs, "dim": args.dim}
    else:
        from alignclip.evaluation.retrieval import RetrievalEvaluator

        images = F.normalize(torch.randn(args.images, args.dim, generator=g), dim=1)
        owner = torch.arange(args.captions) % args.images  # every image has captions/images captions
        captions = F.normalize(images[owner] + 0.3 * torch.randn(args.captions, args.dim, generator=g), dim=1)
        before = current_rss_mib()
        start = time.perf_counter()
        metrics = RetrievalEvaluator(device=args.device).evaluate_features(images, captions, owner).metrics
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        size = {"images": args.images, "captions": args.captions, "dim": args.dim}
    report = {"what": args.what, **size, "device": args.device, "threads": torch.get_num_threads(),
              "seconds": round(seconds, 2), "rss_inputs_mib": round(before), "peak_rss_mib": round(rss_mib()),
              "peak_extra_mib": round(rss_mib() - before), "metrics": metrics}
    if args.device.startswith("cuda"):
        report["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
