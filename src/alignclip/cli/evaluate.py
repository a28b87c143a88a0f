"""`alignclip eval|embed|gap|compare`: measure checkpoints, write and measure any embeddings, compare runs.

Bad input raises ValueError/FileNotFoundError with a one-line message; cli/main.py prints it as
`alignclip: error: ...` and exits 2.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP_EVAL = "evaluate a checkpoint: zero-shot, retrieval, STS, linear probe and modality-gap measures"
HELP_GAP = "modality-gap measures from two embedding files (.npy/.npz/.safetensors) of any model"
HELP_COMPARE = "one table (Markdown + CSV) and one index.html of several runs' metrics.json"
HELP_EMBED = "write image and caption embeddings of your pairs (.npy + pairs.csv) for `alignclip gap` or any tool"
CHECKPOINT = ("a run folder (its checkpoints/best, else the newest checkpoint), our checkpoint (folder or "
              ".safetensors), an AlignCLIP/open_clip .pt or a Hugging Face CLIPModel folder")
DATASETS = ("synthetic | fashion-mnist | classes:DIR (one sub-folder per class) | your "
            "held-out pairs: csv:PATH, tsv:PATH, captions:DIR (image + same-name .txt), wds:PATTERN (local, pipe:, "
            "http(s)); default synthetic")


def _lambdas(spec: str) -> list[float]:
    try:
        return [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shift-lambdas must be comma-separated numbers, got {spec!r}") from None


def _print_results(results: list[Any]) -> None:
    """Scores as one table, then each task's bookkeeping on one line."""
    from alignclip.evaluation.report import flatten_metrics, format_table, info_line
    from alignclip.evaluation.result import GAP_NOTE

    print(format_table(flatten_metrics(results)))
    if any("separability" in r.metrics for r in results):
        print(GAP_NOTE)
    for r in results:
        info = info_line(r.info)
        if info:
            print(f"  {r.dataset}/{r.task}: {info}")


def model_info(checkpoint: str | Path, model: Any) -> dict[str, Any]:
    """What a reader needs to know which model this is: the training method (from the config.yaml of the run the
    checkpoint belongs to, when there is one), the architecture and the model's size."""
    import yaml

    from alignclip.rundir import RunDir

    info: dict[str, Any] = {"architecture": getattr(model, "architecture", None),
                            "family": getattr(model, "family", None)}  # clip, sharedclip or siglip
    run = RunDir.of_checkpoint(checkpoint)
    if run is not None and run.config_path.is_file():
        try:
            train = yaml.safe_load(run.config_path.read_text()) or {}
        except yaml.YAMLError:
            train = {}
        method, loss = train.get("method"), train.get("loss") or {}
        if method == "alignclip":
            method = f"alignclip (IMSep, {loss.get('weighting', 'logits')} weighting, β={loss.get('beta')})"
        if method and (train.get("model") or {}).get("init_from"):
            method = f"{method}, post-trained from {train['model']['init_from']}"
        info["method"] = method
    path = Path(checkpoint)
    weights_config = path / "config.json"  # `alignclip interpolate` records its two models and alpha there
    document = json.loads(weights_config.read_text()) if weights_config.is_file() else {}
    mix = document.get("interpolation") if isinstance(document, dict) else None
    if isinstance(mix, dict) and {"base", "tuned", "alpha"} <= set(mix):
        info["interpolation"] = mix
        info["method"] = f"WiSE-FT: {1 - mix['alpha']:g}·{mix['base']} + {mix['alpha']:g}·{mix['tuned']}"
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "vision_cfg"):
        v, t = config.vision_cfg, config.text_cfg
        info["model_size"] = (f"embed {config.embed_dim}; vision {v.image_size}px/patch {v.patch_size}, width "
                              f"{v.width} x {v.layers} layers; text width {t.width} x {t.layers} layers")
    return {k: v for k, v in info.items() if v is not None}


def run_eval(args: argparse.Namespace) -> int:
    from alignclip.evaluation.features import resolve_device
    from alignclip.evaluation.report import write_report
    from alignclip.evaluation.suite import check_dataset, parse_tasks, supported_tasks, evaluate_model

    check_dataset(args.dataset)
    if args.open_clip and args.checkpoint:
        raise ValueError("give either a CHECKPOINT or --open-clip MODEL_NAME, not both")
    if args.weights and not args.open_clip:
        raise ValueError("--weights is only used with --open-clip (our checkpoints carry their own weights)")
    tasks = parse_tasks(args.tasks) if args.tasks else supported_tasks(args.dataset)
    device = resolve_device(args.device)
    tokenizer = None
    if args.open_clip:
        from alignclip.evaluation.external import load_open_clip

        model, tokenizer = load_open_clip(args.open_clip, args.weights, device)
        source = f"open_clip:{args.open_clip}" + (f":{args.weights}" if args.weights else "")
    elif args.checkpoint:
        import alignclip
        from alignclip.rundir import resolve_checkpoint

        from alignclip.evaluation.features import default_tokenizer

        args.checkpoint = resolve_checkpoint(args.checkpoint)
        model = alignclip.load_checkpoint(args.checkpoint, config=args.model_config, device=device)
        tokenizer = default_tokenizer(model)  # a SigLIP folder's own vocabulary; checked before any image is read
        source = str(args.checkpoint)
    else:
        raise ValueError("give a CHECKPOINT or --open-clip MODEL_NAME")
    if args.offsets:  # a training-free gap baseline (I0T centring, Liang's shift): evaluation/transform.py
        from alignclip.evaluation.transform import OffsetModel, load_offsets

        model = OffsetModel(model, *load_offsets(args.offsets)).to(device)
    results, image_features, text_features = evaluate_model(
        model, args.dataset, tasks, args.num_samples, args.sts_file, tokenizer, args.batch_size, device, args.seed,
        csv_keys=(args.csv_image_key, args.csv_caption_key))
    _print_results(results)
    if args.out:
        described = model_info(args.checkpoint, model) if args.checkpoint else {"architecture": "open_clip"}
        # num_samples: the held-out images actually evaluated (a folder may hold fewer than --num-samples)
        evaluated = {"num_samples": int(image_features.shape[0])} if image_features is not None else {}
        described.update({"offsets": str(args.offsets)} if args.offsets else {})
        metrics = {"model": source, **described, "dataset": args.dataset, **evaluated,
                   "max_samples": args.num_samples, "seed": args.seed, "results": results}
        if text_features is None:  # no paired texts (e.g. --tasks zeroshot): metrics and page, no pair figures
            image_features = None
        paths = write_report(args.out, metrics, image_features, text_features, title=f"alignclip eval: {source}",
                             projection=args.projection, seed=args.seed)
        print(f"wrote {paths['index']}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    """DIR/image_embeddings.npy + text_embeddings.npy (row i: image i and its first caption, `alignclip gap` input),
    all_text_embeddings.npy (every caption) + pairs.csv (caption row -> image row), embed.json, bad_samples.tsv."""
    import csv

    import numpy as np

    import alignclip
    from alignclip.evaluation.features import default_tokenizer, resolve_device
    from alignclip.evaluation.pairs import embed_pairs, is_pair_dataset
    from alignclip.rundir import resolve_checkpoint

    if not is_pair_dataset(args.dataset):
        raise ValueError(f"embed needs image-caption pairs: csv:PATH, tsv:PATH, captions:DIR or wds:PATTERN, "
                         f"got {args.dataset!r}")
    device = resolve_device(args.device)
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    model = alignclip.load_checkpoint(args.checkpoint, config=args.model_config, device=device)
    pairs = embed_pairs(model, args.dataset, args.num_samples, default_tokenizer(model), args.batch_size, device,
                        args.csv_image_key, args.csv_caption_key)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "image_embeddings.npy", pairs.image_features.numpy())
    np.save(out / "text_embeddings.npy", pairs.paired_text().numpy())
    np.save(out / "all_text_embeddings.npy", pairs.text_features.numpy())
    with (out / "pairs.csv").open("w", newline="", encoding="utf-8", errors="backslashreplace") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text_row", "image_row", "image", "caption"])
        writer.writerows([j, int(i), pairs.images[i], c] for j, (i, c) in enumerate(zip(pairs.text_to_image,
                                                                                        pairs.captions)))
    if pairs.bad_samples:
        with (out / "bad_samples.tsv").open("w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.writelines(f"{b.source}\t{b.reason}\n" for b in pairs.bad_samples)
    summary = {"model": str(args.checkpoint), "dataset": args.dataset, "num_images": len(pairs.images),
               "num_captions": len(pairs.captions), "num_bad_samples": len(pairs.bad_samples),
               "dim": int(pairs.image_features.shape[1])}
    (out / "embed.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {summary['num_images']} image and {summary['num_captions']} caption embeddings to {out} "
          f"({summary['num_bad_samples']} bad samples skipped); next: alignclip gap {out / 'image_embeddings.npy'} "
          f"{out / 'text_embeddings.npy'}")
    return 0


def _pair_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv-image-key", default=None, help="csv:/tsv: image path column (default filepath)")
    p.add_argument("--csv-caption-key", default=None, help="csv:/tsv: caption column (default title)")


def run_gap(args: argparse.Namespace) -> int:
    from alignclip.evaluation.features import load_embeddings
    from alignclip.evaluation.gap import gap_metrics, gap_shift_sweep
    from alignclip.evaluation.report import format_table, json_safe, write_report
    from alignclip.evaluation.result import GAP_NOTE, EvalResult

    image = load_embeddings(args.image_embeddings, args.key_image)
    text = load_embeddings(args.text_embeddings, args.key_text)
    gap = gap_metrics(image, text)
    print(format_table(gap))
    print(GAP_NOTE)
    sweep = gap_shift_sweep(image, text, args.shift_lambdas) if args.shift_lambdas else None
    if sweep:
        keys = ["l2m", "rmg", "paired_cosine", "unpaired_cosine", "separability"]
        print("\nshift sweep (x - lambda*delta, y + lambda*delta):")
        print("  ".join(f"{k:>15}" for k in ["lambda"] + keys))
        for row in sweep:
            print("  ".join(f"{row[k]:>15.4f}" for k in ["lambda"] + keys))
    document = {"image_embeddings": str(args.image_embeddings), "text_embeddings": str(args.text_embeddings),
                "num_pairs": int(image.shape[0]), "dim": int(image.shape[1]),
                "results": [EvalResult("embeddings", "modality_gap", gap, {"num_pairs": int(image.shape[0])})]}
    if sweep:
        document["shift_sweep"] = sweep
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(json_safe(document), indent=2) + "\n")
    if args.out:
        paths = write_report(args.out, document, image, text, title="alignclip gap", projection=args.projection,
                             sweep=sweep)
        print(f"wrote {paths['index']}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from alignclip.evaluation.compare import write_comparison

    paths = write_comparison(args.runs, args.out)
    print(paths["markdown"].read_text(), end="")
    print(f"wrote {paths['markdown']}, {paths['csv']}, {paths['index']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help=HELP_EVAL, description=HELP_EVAL)
    p.add_argument("checkpoint", nargs="?", help=CHECKPOINT)
    p.add_argument("--tasks", default=None, help="comma list of zeroshot,retrieval,sts,linear_probe,gap "
                                                 "(default: all the dataset supports)")
    p.add_argument("--dataset", default="synthetic", help=DATASETS)
    p.add_argument("--sts-file", default=None, help="STS-B .tsv or sentence1,sentence2,score .csv "
                                                    "(default: synthetic STS pairs)")
    p.add_argument("--num-samples", type=int, default=1000,
                   help="held-out images (and probe training images); pairs: the first N images")
    p.add_argument("--out", default=None, help="write metrics.json, figures and index.html here")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--projection", default="pca", choices=["pca", "tsne", "umap"], help="2-D projection for the plot")
    p.add_argument("--open-clip", default=None, metavar="MODEL_NAME", help="evaluate an open_clip model (optional dep)")
    p.add_argument("--offsets", default=None, metavar="FILE.npz",
                   help="move image/text embeddings by these offsets and re-normalise (training-free baselines: "
                        "evaluation/transform.py writes them from training-set means)")
    p.add_argument("--weights", default=None, help="weights file for --open-clip")
    p.add_argument("--model-config", default=None, metavar="CONFIG",
                   help="what the checkpoint file does not record (heads, activation): a preset, an open_clip "
                        "model name such as ViT-B-16-quickgelu, or a JSON config (ours or open_clip's)")
    _pair_options(p)
    p.set_defaults(func=run_eval)

    e = subparsers.add_parser("embed", help=HELP_EMBED, description=HELP_EMBED)
    e.add_argument("checkpoint", help=CHECKPOINT)
    e.add_argument("--dataset", required=True, help="csv:PATH, tsv:PATH, captions:DIR or wds:PATTERN")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--num-samples", type=int, default=None, help="the first N images (default: all)")
    e.add_argument("--model-config", default=None, metavar="CONFIG", help="as for `alignclip eval`")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    e.add_argument("--batch-size", type=int, default=256)
    _pair_options(e)
    e.set_defaults(func=run_embed)

    g = subparsers.add_parser("gap", help=HELP_GAP, description=HELP_GAP)
    g.add_argument("image_embeddings", metavar="IMAGE_EMB")
    g.add_argument("text_embeddings", metavar="TEXT_EMB", help="row i pairs with row i of IMAGE_EMB")
    g.add_argument("--key-image", default=None, help="array name inside an .npz/.safetensors file")
    g.add_argument("--key-text", default=None, help="array name inside an .npz/.safetensors file")
    g.add_argument("--shift-lambdas", type=_lambdas, default=None, help="e.g. 0,0.25,0.5: post-hoc shift sweep")
    g.add_argument("--json", default=None, help="write the measures as JSON to this file")
    g.add_argument("--out", default=None, help="write metrics.json, figures and index.html here")
    g.add_argument("--projection", default="pca", choices=["pca", "tsne", "umap"])
    g.set_defaults(func=run_gap)

    c = subparsers.add_parser("compare", help=HELP_COMPARE, description=HELP_COMPARE)
    c.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders holding metrics.json (or eval/metrics.json)")
    c.add_argument("--out", required=True, help="output folder for comparison.md/.csv and index.html")
    c.set_defaults(func=run_compare)
