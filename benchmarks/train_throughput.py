"""Training throughput and peak memory of CLIP, SharedCLIP and AlignCLIP, and AlignCLIP's step-time overhead.

    python benchmarks/train_throughput.py                        # tiny + small, all three methods, auto device
    python benchmarks/train_throughput.py --presets small --batch-size 256 --device cuda --steps 50

Each optimizer step runs the trainer's own StepRunner (forward, loss, backward, clip-free AdamW step, logit-scale
clamp) on pre-collated synthetic batches; AlignCLIP's caption embeddings come from the prefilled SemanticEncoder
cache inside the timed region, as in training. The three methods of a preset are timed in interleaved rounds in
one process (so machine-load drift hits all of them alike) and compared by median step time. Peak memory is
measured per (preset, method) in a fresh subprocess: peak RSS (VmHWM) on CPU, max allocated CUDA memory on GPU.

AlignCLIP/CLIP mixes two changes (shared transformer AND the separation loss); AlignCLIP/SharedCLIP is the
like-for-like cost of the loss plus the caption lookups.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import alignclip
from alignclip.data.collate import Collate
from alignclip.data.synthetic import SyntheticShapes
from alignclip.training.config import METHOD_ARCHITECTURE
from alignclip.training.distributed import DistInfo, device_for_rank
from alignclip.training.optim import create_optimizer
from alignclip.training.step import StepRunner
from alignclip.training.precision import resolve_precision

METHODS = ("clip", "sharedclip", "alignclip")


class Bench:
    """One method's model + loss + optimizer + batches, stepped like the trainer does."""

    def __init__(self, preset: str, method: str, batch_size: int, device: torch.device, precision: str,
                 num_batches: int, cache_dir: str) -> None:
        from alignclip.losses import AlignCLIPLoss, ClipLoss
        from alignclip.semantic import SemanticEncoder

        self.model = alignclip.create_model(preset, architecture=METHOD_ARCHITECTURE[method], seed=0).to(device)
        loss = AlignCLIPLoss() if method == "alignclip" else ClipLoss()
        optimizer = create_optimizer(self.model, 5e-4, 0.2, (0.9, 0.98), 1e-6)
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.runner = StepRunner(self.model, loss, optimizer, scaler, precision, device, 1, None)
        data = SyntheticShapes(batch_size * num_batches, seed=0, image_size=self.model.image_size)
        collate = Collate(alignclip.get_tokenizer(self.model.context_length), self.model.image_size)
        self.batches = [collate([data[i] for i in range(b * batch_size, (b + 1) * batch_size)])
                        for b in range(num_batches)]
        self.encoder = None
        if method == "alignclip":
            self.encoder = SemanticEncoder(cache_dir=cache_dir, device=str(device), show_progress=False)
            self.encoder.prefill(c for b in self.batches for c in b["captions"])  # "once captions are cached"
        self.device, self.step_num = device, 0

    def step(self) -> float:
        batch = self.batches[self.step_num % len(self.batches)]
        sync()
        start = time.perf_counter()
        semantic = None
        if self.encoder is not None:
            semantic = self.encoder.encode(batch.captions).to(self.device, non_blocking=True)
        self.runner.step(batch, semantic, None, check_finite=False)  # None: the loss's own beta, as configured
        sync()
        self.step_num += 1
        return time.perf_counter() - start


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_preset(preset: str, args: argparse.Namespace, device: torch.device, precision: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache:
        benches = {m: Bench(preset, m, args.batch_size, device, precision, args.num_batches, cache)
                   for m in args.methods}
        for _ in range(args.warmup):
            for bench in benches.values():
                bench.step()
        times: dict[str, list[float]] = {m: [] for m in benches}
        for _ in range(args.steps):  # interleaved: load drift hits every method alike
            for method, bench in benches.items():
                times[method].append(bench.step())
    return {m: statistics.median(t) for m, t in times.items()}


def measure_memory(preset: str, method: str, args: argparse.Namespace) -> float:
    """Peak memory (MiB) of a few steps of one method, in a fresh process."""
    cmd = [sys.executable, __file__, "--memory-of", preset, method, "--batch-size", str(args.batch_size),
           "--device", args.device, "--precision", args.precision]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: that one survives exec(), so a child started
    from a big parent would report the parent's size."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (bytes on macOS)


def memory_child(preset: str, method: str, args: argparse.Namespace) -> None:
    device = device_for_rank(args.device, DistInfo())
    precision = resolve_precision(args.precision, device)
    with tempfile.TemporaryDirectory() as cache:
        bench = Bench(preset, method, args.batch_size, device, precision, 2, cache)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            bench.step()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mib()
    print(json.dumps({"peak_mib": peak}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per method first")
    parser.add_argument("--num-batches", type=int, default=4, help="distinct batches cycled through")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    parser.add_argument("--memory-of", nargs=2, metavar=("PRESET", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        memory_child(*args.memory_of, args)
        return 0

    device = device_for_rank(args.device, DistInfo())
    precision = resolve_precision(args.precision, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {name}, {precision}, global batch {args.batch_size}, median of {args.steps} interleaved steps\n")
    print("| preset | method | step ms | samples/s | peak memory MiB |")
    print("|---|---|---:|---:|---:|")
    ratios = []
    for preset in args.presets:
        medians = time_preset(preset, args, device, precision)
        for method, seconds in medians.items():
            memory = "-" if args.no_memory else f"{measure_memory(preset, method, args):.0f}"
            print(f"| {preset} | {method} | {seconds * 1e3:.1f} | {args.batch_size / seconds:.0f} | {memory} |",
                  flush=True)
        if {"clip", "sharedclip", "alignclip"} <= set(medians):
            ratios.append((preset, medians["alignclip"] / medians["clip"],
                           medians["alignclip"] / medians["sharedclip"]))
    if ratios:
        print("\n| preset | AlignCLIP / CLIP step time | AlignCLIP / SharedCLIP (like for like) |")
        print("|---|---:|---:|")
        for preset, vs_clip, vs_shared in ratios:
            print(f"| {preset} | {vs_clip:.3f} | {vs_shared:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
