"""One-GPU step time and peak memory of ViT-B-16 CLIP, SharedCLIP and AlignCLIP (bf16 autocast), and MiniLM
caption-encoding throughput: the figures to check before a paper-scale run. Under 5 minutes on one GPU.

    python benchmarks/gpu_step.py                      # batch 256, 10 timed steps per method
    python benchmarks/gpu_step.py --batch-size 128 --steps 20 --json gpu_step.json

Each step is the trainer's StepRunner (forward, loss, backward, AdamW, logit-scale clamp) on random 224 px images
and token ids. AlignCLIP's caption embeddings are looked up in a caption store (prefilled by MiniLM on the GPU, in a
temporary folder) inside the timed region, as in training. Peak memory is torch.cuda.max_memory_allocated over the
timed steps of one method. Without a GPU the script says so and runs a tiny shape check of the same code on CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

METHODS = ("clip", "sharedclip", "alignclip")


def captions_for(n: int, offset: int = 0) -> list[str]:
    colours, things = ["red", "green", "blue", "black", "white"], ["dog", "car", "tree", "house", "bird", "boat"]
    return [f"a photo of a {colours[i % 5]} {things[(i // 5) % 6]}, number {offset + i}" for i in range(n)]


def time_method(method: str, preset: str, batch_size: int, steps: int, warmup: int, device: torch.device,
                precision: str, cache_dir: str) -> dict[str, float]:
    import alignclip
    from alignclip.data.collate import Batch
    from alignclip.losses import AlignCLIPLoss, ClipLoss
    from alignclip.semantic import SemanticEncoder
    from alignclip.training.config import METHOD_ARCHITECTURE
    from alignclip.training.optim import create_optimizer
    from alignclip.training.step import StepRunner

    model = alignclip.create_model(preset, architecture=METHOD_ARCHITECTURE[method], seed=0).to(device)
    loss = AlignCLIPLoss() if method == "alignclip" else ClipLoss()
    runner = StepRunner(model, loss, create_optimizer(model, 5e-4, 0.2, (0.9, 0.98), 1e-6), None, precision, device,
                        1, None)
    size, context = model.image_size, model.context_length
    batches = [Batch(images=torch.randn(batch_size, 3, size, size), tokens=torch.randint(1, 400, (batch_size, context)),
                     captions=captions_for(batch_size, b * batch_size)) for b in range(2)]
    encoder = None
    if method == "alignclip":
        encoder = SemanticEncoder(cache_dir=cache_dir, device=str(device), show_progress=False)
        encoder.prefill(c for b in batches for c in b.captions)
    times = []
    for i in range(warmup + steps):
        if i == warmup and device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        batch = batches[i % 2]
        start = time.perf_counter()
        semantic = encoder.encode(batch.captions).to(device, non_blocking=True) if encoder is not None else None
        runner.step(batch, semantic, None, check_finite=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del runner, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    step = statistics.median(times)
    return {"step_ms": step * 1e3, "samples_per_s": batch_size / step, "peak_gib": peak}


def encode_throughput(device: torch.device, n: int, batch_size: int) -> float:
    """MiniLM captions/s (fp32 weights, as training's prefill runs it), after one warm-up batch."""
    from alignclip.semantic import load_sentence_model

    model = load_sentence_model(None, str(device))
    texts = captions_for(n, 10**6)
    model.encode(texts[:batch_size], batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                 show_progress_bar=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                       show_progress_bar=False)
    assert out.shape == (n, 384), out.shape
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--encode", type=int, default=20_000, help="captions for the MiniLM throughput")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if torch.cuda.is_available():
        device, preset, precision = torch.device("cuda"), "ViT-B-16", "bf16"
        name = torch.cuda.get_device_name(device)
        batch, steps, warmup, encode_n, encode_bs = args.batch_size, args.steps, args.warmup, args.encode, 512
    else:
        print("no GPU: running a tiny shape check of the same code on CPU (tiny preset, fp32, batch 8); "
              "the figures below are not GPU figures")
        device, preset, precision, name = torch.device("cpu"), "tiny", "fp32", "CPU"
        batch, steps, warmup, encode_n, encode_bs = 8, 2, 1, 64, 32
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        for method in METHODS:
            rows[method] = time_method(method, preset, batch, steps, warmup, device, precision, cache)
    rate = encode_throughput(device, encode_n, encode_bs)
    print(f"\n# {name}, {preset}, {precision} autocast, batch {batch}, median of {steps} steps\n")
    print("| method | step ms | samples/s | peak GiB |")
    print("|---|---:|---:|---:|")
    for method, r in rows.items():
        print(f"| {method} | {r['step_ms']:.1f} | {r['samples_per_s']:.0f} | {r['peak_gib']:.2f} |")
    print(f"\nAlignCLIP / SharedCLIP step time: {rows['alignclip']['step_ms'] / rows['sharedclip']['step_ms']:.3f}")
    print(f"MiniLM caption encoding: {rate:.0f} captions/s (batch {encode_bs}, {encode_n} captions)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "preset": preset, "precision": precision, "batch_size": batch,
                       "methods": rows, "minilm_captions_per_s": rate}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
