"""Debian's Open Clip Art (`openclipart-png` + `openclipart-svg`) as a real-data benchmark: image-title pairs.

It lives beside the demo because it exists for `alignclip demo --benchmark clipart`. Each PNG is paired with the
SVG of the same relative path, whose title is the pair's caption. The split hashes the relative path, so adding or
removing files never moves another image between train and held-out. Images are flattened onto white, padded to a
square (a tall bottle keeps its neck; a centre crop would cut it) and stored as small thumbnails, so that training
reads 4 KB files instead of decoding 600-px PNGs every step.
"""
from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from tqdm.auto import tqdm

from alignclip.data.images import load_image

if TYPE_CHECKING:
    from alignclip.demo.run import DemoSettings

CLIPART_ROOT = "/usr/share/openclipart"  # where the Debian packages install png/ and svg/
INSTALL_HINT = "apt-get install openclipart-png openclipart-svg"
_DC, _CC, _SVG = "{http://purl.org/dc/elements/1.1/}", "{http://web.resource.org/cc/}", "{http://www.w3.org/2000/svg}"
# Titles that name nothing: editor defaults and placeholders ("Untitled", "Layer 1", "New document 2", ...).
_PLACEHOLDER = re.compile(r"^(untitled|no title|none|title|image|drawing|picture|clip ?art|svg|layer|new document|"
                          r"document|unnamed|sans titre|senza titolo)[\s_\-#]*\d*$", re.IGNORECASE)
_FILE_NAME = re.compile(r"\.(svgz?|png|jpe?g|gif|ai|eps|pdf|wmf)$", re.IGNORECASE)


def svg_title(path: str | Path) -> tuple[str | None, str | None]:
    """(title, creator): the metadata's cc:Work dc:title (else the SVG's own <title>) and the work's creator name.

    Only the Work's own dc:title: the metadata also has dc:title elements naming the publisher, creator and rights.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, ValueError):
        return _regex_title(Path(path))
    text = lambda element: "".join(element.itertext()) if element is not None else ""  # noqa: E731
    for work in root.iter(f"{_CC}Work"):
        title, creator = text(work.find(f"{_DC}title")), text(work.find(f"{_DC}creator/{_CC}Agent/{_DC}title"))
        if title.strip():
            return title, creator or None
    for element in (root.find(f"{_SVG}title"), root.find("title")):
        if text(element).strip():
            return text(element), None
    return None, None


def _regex_title(path: Path) -> tuple[str | None, str | None]:
    """Fallback for SVGs that are not well-formed XML (undeclared entities, stray bytes): the first Work title."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    match = re.search(r"<cc:Work\b.*?<dc:title>(.*?)</dc:title>", text, re.DOTALL) or \
        re.search(r"<title>(.*?)</title>", text, re.DOTALL)
    return (html.unescape(match.group(1)) if match else None), None


def clean_title(title: str | None, creator: str | None = None) -> tuple[str | None, str | None]:
    """(caption, None) for a usable title, or (None, why it was dropped). Underscores become spaces ("Hot_Dog" is
    a title spelled as a file name) and whitespace is collapsed. A title equal to the file's stem is kept: Debian
    derived the stems from the titles."""
    text = " ".join((title or "").replace("_", " ").split())
    if not text:
        return None, "no title"
    if creator and text.lower() == " ".join(creator.split()).lower():
        return None, "author name as title"
    if _PLACEHOLDER.match(text):
        return None, "placeholder title"
    if _FILE_NAME.search(text):
        return None, "file name as title"
    if not re.search(r"[^\W\d_]", text):
        return None, "no letters"
    return text, None


def is_heldout(relative_path: str, fraction: float) -> bool:
    """Stable split: a hash of the path, so one file's side never depends on which other files exist."""
    bucket = int.from_bytes(hashlib.sha1(relative_path.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    return bucket < fraction


@dataclass
class ClipartSplit:
    out_dir: Path
    train: Path  # train.tsv: filepath (relative to out_dir) and title
    heldout: Path  # heldout.tsv
    counts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> images left out


def thumbnail(path: Path, size: int) -> Image.Image:
    """RGB on white, padded to a square, `size` x `size`."""
    flat = load_image(path)
    side = max(flat.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(flat, ((side - flat.width) // 2, (side - flat.height) // 2))
    return square.resize((size, size), Image.LANCZOS)


def build_clipart(out: str | Path, root: str | Path = CLIPART_ROOT, heldout_fraction: float = 0.15,
                  image_size: int = 64, max_title_share: float = 0.01) -> ClipartSplit:
    """Write out/images-SIZE/*.png, out/train.tsv, out/heldout.tsv, out/manifest.json and out/README.md.

    max_title_share: a title carried by more than this fraction of the images names a collection ("gramastar" on
    1,233 stars, "Part of the Flat Icon Collection ..."), not the picture; those images are dropped (1: keep all).
    A split with the same settings is reused (the manifest records them), and thumbnails already written are kept.
    """
    root, out = Path(root), Path(out)
    if not (root / "png").is_dir() or not (root / "svg").is_dir():
        raise FileNotFoundError(f"no clip art under {root} (expected png/ and svg/): {INSTALL_HINT}")
    if not 0 < heldout_fraction < 1 or image_size < 8 or not 0 < max_title_share <= 1:
        raise ValueError("heldout_fraction must be in (0, 1), image_size >= 8 and max_title_share in (0, 1], got "
                         f"{heldout_fraction}, {image_size}, {max_title_share}")
    settings = {"root": str(root.resolve()), "heldout_fraction": heldout_fraction, "image_size": image_size,
                "max_title_share": max_title_share}
    manifest = out / "manifest.json"
    if manifest.is_file():
        previous = json.loads(manifest.read_text())
        if previous.get("settings") == settings and (out / "train.tsv").is_file() and (out / "heldout.tsv").is_file():
            return ClipartSplit(out, out / "train.tsv", out / "heldout.tsv", previous["counts"], previous["dropped"])
    pngs = sorted(p.relative_to(root / "png") for p in (root / "png").rglob("*.png"))
    if not pngs:
        raise FileNotFoundError(f"no PNG files under {root / 'png'}: {INSTALL_HINT}")
    titles: dict[Path, str] = {}
    dropped: dict[str, int] = {}
    for relative in tqdm(pngs, desc="clip art titles", unit="svg"):
        svg = root / "svg" / relative.with_suffix(".svg")
        title, reason = clean_title(*svg_title(svg)) if svg.is_file() else (None, "no SVG")
        if title is None:
            dropped[reason] = dropped.get(reason, 0) + 1  # type: ignore[index]
        else:
            titles[relative] = title
    shared = Counter(t.lower() for t in titles.values())
    limit = max(max_title_share * len(pngs), 2)  # a title on two images is a pair of pictures, not a collection
    collections = {t for t, n in shared.items() if n > limit}
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "heldout": []}
    folder = f"images-{image_size}"
    for relative, title in tqdm(titles.items(), desc="clip art thumbnails", unit="image"):
        reason = f"collection title (on > {max_title_share:.0%} of the images)" if title.lower() in collections else None
        target = out / folder / relative
        if reason is None and not target.is_file():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                thumbnail(root / "png" / relative, image_size).save(target, optimize=True)
            except (OSError, ValueError) as error:  # UnreadableImage says why: corrupt, or over PIL's pixel limit
                reason = f"unreadable PNG ({getattr(error, 'reason', type(error).__name__)[:40]})"
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        split = "heldout" if is_heldout(relative.as_posix(), heldout_fraction) else "train"
        rows[split].append((f"{folder}/{relative.as_posix()}", title))
    for split, pairs in rows.items():
        with open(out / f"{split}.tsv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(["filepath", "title"])
            writer.writerows(pairs)
    counts = {"png": len(pngs), "train": len(rows["train"]), "heldout": len(rows["heldout"]),
              "dropped": sum(dropped.values()),
              "distinct_titles": len({t.lower() for pairs in rows.values() for _, t in pairs})}
    manifest.write_text(json.dumps({"settings": settings, "counts": counts, "dropped": dropped}, indent=2) + "\n")
    (out / "README.md").write_text(
        f"Open Clip Art image-title pairs built by `alignclip demo --benchmark clipart` from {root}.\n\n"
        f"{counts['png']} PNGs: {counts['train']} train, {counts['heldout']} held-out (sha1 of the relative path, "
        f"fraction {heldout_fraction}), {counts['dropped']} dropped: "
        + ", ".join(f"{n} {why}" for why, n in sorted(dropped.items(), key=lambda kv: -kv[1]))
        + f".\nImages: flattened onto white, padded square, {image_size} px. Titles: the SVG's work title, "
        "underscores as spaces, whitespace collapsed.\n")
    return ClipartSplit(out, out / "train.tsv", out / "heldout.tsv", counts, dropped)



# The benchmark's one budget (README "Real data: Open Clip Art"): 3 seeds x 4 methods + 3 post-training rows in
# under 30 minutes on 2 CPU cores.
BENCHMARK = {"preset": "tiny", "steps": 500, "batch_size": 64, "seeds": 3, "warmup_steps": 50}


def fashion_mnist_installed() -> bool:
    from alignclip.evaluation.datasets import FASHION_MNIST_DIR

    return Path(os.environ.get("ALIGNCLIP_FASHION_MNIST", FASHION_MNIST_DIR)).is_dir()


def benchmark_settings(data_dir: str | Path, root: str | Path = CLIPART_ROOT, **overrides: Any) -> "DemoSettings":
    """Build (or reuse) the split in data_dir and return the demo settings that train on it and evaluate on its
    held-out pairs, plus zero-shot Fashion-MNIST when installed; `overrides` win over the benchmark's budget."""
    from alignclip.demo.run import DemoSettings

    split = build_clipart(data_dir, root)
    data = {"train_data": f"tsv:{split.train}", "eval_data": f"tsv:{split.heldout}",
            "zeroshot": "fashion-mnist" if fashion_mnist_installed() else None}
    budget = {k: v for k, v in BENCHMARK.items() if not (k == "steps" and "budget" in overrides)}  # --budget wins
    return DemoSettings(**{**budget, **data, **overrides})
