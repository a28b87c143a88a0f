"""The caption store at paper scale: simulated stores of 1M / 3M / 10M captions (real caption keys, random fp16
rows, 384-d), and what a training process pays for them.

    nice -n 10 python benchmarks/semantic_store.py --sizes 1000000 3000000 10000000 --json store.json

Per size: the build (what compaction writes, done directly), the open time of the store in a fresh process (median
of 3), private memory of each of 2 processes mapping the store at once after 200 lookups of 4,096 captions
(/proc/self/smaps_rollup), the lookup of one 4,096-caption batch (keys only, and end to end from caption strings),
disk bytes per caption, and the time to compact a 50k-caption segment into the base. Once: a tiny AlignCLIP
training step (batch 256, 1 thread) with its caption lookups against the same step with no semantic term
(weighting="none"), and MiniLM's CPU encoding throughput. Every store is deleted after it is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, BATCH, MODEL = 384, 4096, "bench-model"


def caption(i: int) -> str:
    return f"a photo of thing number {i} in the benchmark"


def build_store(directory: Path, n: int, chunk: int = 1 << 18) -> float:
    """Write a base of n captions exactly as compaction lays it out; returns seconds."""
    from alignclip.fileio import atomic_write
    from alignclip.semantic.model import caption_key, split_keys
    from alignclip.semantic.search import bucket_index
    from alignclip.semantic.store import CaptionStore

    start = time.perf_counter()
    hi, lo = split_keys(b"".join(caption_key(caption(i)) for i in range(n)))
    order = np.lexsort((lo, hi))
    hi, lo = hi[order], lo[order]
    rng = np.random.default_rng(0)
    emb = np.lib.format.open_memmap(directory / "base-bench.emb.npy", mode="w+", dtype=np.float16, shape=(n, DIM))
    for a in range(0, n, chunk):
        emb[a:a + chunk] = rng.random((min(chunk, n - a), DIM), dtype=np.float32)
    emb.flush()
    del emb
    np.save(directory / "base-bench.keys.npy", np.stack([hi, lo]))
    index = bucket_index(hi)
    np.save(directory / "base-bench.index.npy", index)
    store = CaptionStore(directory, MODEL, show_progress=False)
    store.dim = DIM
    store._write_meta()
    atomic_write(directory / "store.json", lambda tmp: tmp.write_text(json.dumps(
        {"base": "base-bench", "rows": n, "max_bucket": int(np.diff(index).max()), "absorbed": []})))
    return time.perf_counter() - start


def smaps() -> dict[str, float]:
    """MiB of this process's memory by kind, from /proc/self/smaps_rollup."""
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return out


def child(directory: str, n: int, mode: str, barrier: str) -> None:
    """Runs in a fresh process: 'open' times the open; 'rss' maps, looks up, waits for its twin, reports smaps."""
    from alignclip.semantic import SemanticEncoder  # torch and all: what a training process has loaded anyway

    before = smaps()
    start = time.perf_counter()
    encoder = SemanticEncoder(MODEL, cache_dir=directory, show_progress=False)
    opened = time.perf_counter() - start
    result: dict = {"open_s": opened, "rows": len(encoder)}
    if mode == "rss":
        rng = np.random.default_rng(os.getpid())
        for _ in range(200):
            encoder.encode([caption(int(i)) for i in rng.integers(0, n, BATCH)])
        Path(f"{barrier}.{os.getpid()}").touch()
        while len(list(Path(barrier).parent.glob(Path(barrier).name + ".*"))) < 2:
            time.sleep(0.05)
        after = smaps()
        result.update({k: after.get(k, 0.0) for k in ("Rss", "Pss", "Shared_Clean", "Private_Clean",
                                                      "Private_Dirty", "Anonymous")})
        result["private_before"] = before.get("Private_Clean", 0) + before.get("Private_Dirty", 0)
        result["anonymous_before"] = before.get("Anonymous", 0)
        time.sleep(0.5)  # the twin reads its smaps while this one still maps the store
    print(json.dumps(result))


def run_child(directory: Path, n: int, mode: str, barrier: str = "") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", str(directory), str(n), mode, barrier],
                            stdout=subprocess.PIPE, text=True)


def lookup_times(directory: Path, n: int) -> dict[str, float]:
    """Median lookup of fresh random 4,096-caption batches: on a cold mapping (every page faulted in by the lookup
    itself) and once the background warm-up has mapped the store (keys only, and end to end from strings)."""
    from alignclip.semantic import SemanticEncoder
    from alignclip.semantic.model import caption_keys
    from alignclip.semantic.store import CaptionStore

    rng = np.random.default_rng(1)

    def batches(k: int) -> list[list[str]]:
        return [[caption(int(i)) for i in rng.integers(0, n, BATCH)] for _ in range(k)]

    def keys_ms(store: CaptionStore, captions: list[list[str]]) -> float:
        times = []
        for batch in captions:
            _, hi, lo = caption_keys(batch)
            start = time.perf_counter()
            found = store.lookup(hi, lo)[1]
            times.append(time.perf_counter() - start)
            assert found.all()
        return statistics.median(times) * 1e3

    cold = keys_ms(CaptionStore(directory, MODEL, show_progress=False, warm=False), batches(20))
    encoder = SemanticEncoder(MODEL, cache_dir=directory, show_progress=False)
    start = time.perf_counter()
    if encoder.store.warming is not None:
        encoder.store.warming.join()
    warm_s = time.perf_counter() - start
    warm = keys_ms(encoder.store, batches(20))
    end_to_end = []
    for batch in batches(20):
        start = time.perf_counter()
        encoder.encode(batch)
        end_to_end.append(time.perf_counter() - start)
    assert encoder.num_encoded == 0
    return {"lookup_cold_ms": cold, "warm_up_s": warm_s, "lookup_ms": warm,
            "encode_ms": statistics.median(end_to_end) * 1e3}


def compact_seconds(directory: Path, n: int) -> float:
    from alignclip.semantic.model import caption_keys
    from alignclip.semantic.store import CaptionStore

    store = CaptionStore(directory, MODEL, show_progress=False)
    _, hi, lo = caption_keys([caption(n + i) for i in range(50_000)])
    store.write_segment(hi, lo, np.random.default_rng(2).random((50_000, DIM), dtype=np.float32).astype(np.float16))
    start = time.perf_counter()
    store.compact()
    assert store.base_rows == n + 50_000
    return time.perf_counter() - start


def measure_size(root: Path, n: int, compact: bool) -> dict:
    directory = Path(tempfile.mkdtemp(prefix=f"store-{n}-", dir=root))
    try:
        row: dict = {"captions": n, "build_s": build_store(directory, n)}
        row["disk_bytes_per_caption"] = sum(p.stat().st_size for p in directory.iterdir()) / n
        opens = [json.loads(run_child(directory, n, "open").communicate()[0])["open_s"] for _ in range(3)]
        row["open_s"] = statistics.median(opens)
        barrier = str(directory / "ready")
        twins = [run_child(directory, n, "rss", barrier) for _ in range(2)]
        row["rss"] = [json.loads(p.communicate()[0]) for p in twins]
        row.update(lookup_times(directory, n))
        if compact:
            row["compact_50k_s"] = compact_seconds(directory, n)
        return row
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def step_overhead(cache_root: Path, steps: int) -> dict[str, float]:
    """Median step of tiny AlignCLIP with store lookups vs the same step with no semantic term."""
    import torch

    import alignclip
    from alignclip.data.collate import Collate
    from alignclip.data.synthetic import SyntheticShapes
    from alignclip.losses import AlignCLIPLoss
    from alignclip.semantic import SemanticEncoder
    from alignclip.training.optim import create_optimizer
    from alignclip.training.step import StepRunner

    torch.set_num_threads(1)
    data = SyntheticShapes(512, seed=0, image_size=32)
    context = alignclip.create_model("tiny", architecture="shared").context_length
    collate = Collate(alignclip.get_tokenizer(context), 32)
    batches = [collate([data[i] for i in range(b * 256, (b + 1) * 256)]) for b in range(2)]
    encoder = SemanticEncoder(cache_dir=cache_root / "minilm", show_progress=False)
    encoder.prefill(c for b in batches for c in b.captions)
    runners = {}
    for name, weighting in (("semantic", "logits"), ("none", "none")):
        model = alignclip.create_model("tiny", architecture="shared", seed=0)
        runners[name] = StepRunner(model, AlignCLIPLoss(weighting=weighting),
                                   create_optimizer(model, 5e-4, 0.2, (0.9, 0.98), 1e-6), None, "fp32",
                                   torch.device("cpu"), 1, None)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(steps + 2):  # interleaved, so load drift on a shared machine hits both alike
        for name, runner in runners.items():
            batch = batches[i % 2]
            start = time.perf_counter()
            semantic = encoder.encode(batch.captions) if name == "semantic" else None
            runner.step(batch, semantic, None)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    lookup = [0.0]
    for i in range(20):
        start = time.perf_counter()
        encoder.encode(batches[i % 2].captions)
        lookup.append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"step_semantic_ms": med["semantic"] * 1e3, "step_none_ms": med["none"] * 1e3,
            "overhead": med["semantic"] / med["none"] - 1, "lookup_256_ms": statistics.median(lookup[1:]) * 1e3}


def encode_rate(n: int = 2048) -> float:
    import torch

    from alignclip.semantic import load_sentence_model

    torch.set_num_threads(1)
    model = load_sentence_model(None, "cpu")
    colours, sides = ("red", "blue", "green", "grey"), ("left", "right", "top", "bottom")
    texts = [f"a small {colours[i % 4]} shape at the {sides[i // 4 % 4]} of the picture, number {i}" for i in range(n)]
    model.encode(texts[:256], batch_size=256)
    start = time.perf_counter()
    model.encode(texts, batch_size=256, normalize_embeddings=True)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--dir", default=None, help="where the simulated stores go (default: the temp folder)")
    parser.add_argument("--no-compact", action="store_true", help="skip the compaction timing")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of the overhead comparison")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.child[3])
        return 0
    root = Path(args.dir or tempfile.gettempdir())
    results: dict = {"sizes": []}
    with tempfile.TemporaryDirectory(dir=root) as cache:
        results["step"] = step_overhead(Path(cache), args.steps)
        print(json.dumps(results["step"]), flush=True)
    results["minilm_cpu_1thread_captions_per_s"] = encode_rate()
    print(f"MiniLM, CPU, 1 thread: {results['minilm_cpu_1thread_captions_per_s']:.0f} captions/s", flush=True)
    for n in args.sizes:
        row = measure_size(root, n, not args.no_compact)
        results["sizes"].append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    print("\n| captions | open s | private MiB (clean + dirty) | anonymous MiB | lookup 4096 ms cold | warm-up s "
          "| lookup 4096 ms warm (keys / captions) | disk B/caption | compact +50k s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["sizes"]:
        private = "/".join(f"{r['Private_Clean'] + r['Private_Dirty']:.0f}" for r in row["rss"])
        anon = "/".join(f"{r['Anonymous']:.0f}" for r in row["rss"])
        print(f"| {row['captions']:,} | {row['open_s']:.3f} | {private} | {anon} | {row['lookup_cold_ms']:.1f} | "
              f"{row['warm_up_s']:.1f} | {row['lookup_ms']:.1f} / "
              f"{row['encode_ms']:.1f} | {row['disk_bytes_per_caption']:.1f} | {row.get('compact_50k_s', 0):.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
