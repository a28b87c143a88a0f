"""The demo's report page (index.html) and overview picture, from the runs that demo/run.py trained and measured."""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignclip.demo.curves import QUANTITIES
from alignclip.demo.table import html_table

if TYPE_CHECKING:
    from alignclip.demo.run import DemoSettings


def write_overview(out_dir: Path, evals: dict[str, Path], rows: dict[str, list[dict[str, float]]],
                   eval_name: str) -> None:
    """overview.png: every method's 2-D projection (first seed) in one picture, each titled with its l2m."""
    from PIL import Image, ImageDraw

    from alignclip.data.images import load_image

    names = list(evals)
    paths = [evals[n] / "projection.png" for n in names]
    if not all(p.is_file() for p in paths):
        return
    tiles = [load_image(p) for p in paths]
    tiles = [t.resize((t.width // 2, t.height // 2), Image.LANCZOS) for t in tiles]
    columns, (width, height), title = min(3, len(tiles)), tiles[0].size, 24
    canvas = Image.new("RGB", (width * columns, (height + title) * -(-len(tiles) // columns)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, tile) in enumerate(zip(names, tiles)):
        x, y = (i % columns) * width, (i // columns) * (height + title)
        l2m = rows[name][0].get(f"{eval_name}/modality_gap/l2m", float("nan"))
        draw.text((x + 10, y + 6), f"{name}: l2m {l2m:.3f}", fill="black")
        canvas.paste(tile, (x, y + title))
    canvas.save(out_dir / "overview.png", optimize=True)


def write_index(out_dir: Path, evals: dict[str, Path], rows: dict[str, list[dict[str, float]]],
                settings: "DemoSettings", columns: dict[str, Any]) -> None:
    """index.html: the comparison table (`columns`: keyword arguments of html_table), curves and figures."""
    from alignclip.evaluation.pages import figure_grid, figure_html, html_page
    from alignclip.evaluation.report import FIGURES

    def figures(items: list[tuple[str, str]]) -> str:
        return figure_grid([figure_html(src, caption) for src, caption in items])

    per_method = "".join(
        f"<h3>{html.escape(kind)}</h3>" + figures([(f"{evals[n].relative_to(out_dir).as_posix()}/{file}", n)
                                                   for n in rows if (evals[n] / file).is_file()])
        for kind, file in FIGURES.items() if any((evals[n] / file).is_file() for n in rows))
    curves = figures([(file, label) for _, file, label in QUANTITIES if (out_dir / file).is_file()])
    heldout = f"{settings.eval_samples} held-out samples" if settings.eval_data is None else \
        f"held-out pairs of {html.escape(settings.eval_data)} (at most {settings.eval_samples} images)" + \
        (f" and {settings.eval_samples} {html.escape(settings.zeroshot)} images for zero-shot" if settings.zeroshot else "")
    body = (f"<p>Preset <code>{html.escape(settings.preset)}</code>, {settings.num_steps} steps × "
            f"{settings.batch_size} samples per method (post-training rows: {settings.posttrain_steps} more steps "
            f"from the same seed's trained clip) on {html.escape(settings.data_label)}, seeds {settings.seed_list} "
            f"(weights and data order), the same {heldout} for every run. Cells: mean ± sample std over seeds. Bold: "
            "best trained method in its column. Collapsed: seeds whose mean intra-modal cosine ended above the "
            "collapse threshold. Files: <a href=\"table.md\">table.md</a>, <a href=\"table.csv\">table.csv</a> "
            "(every seed), <a href=\"metrics.json\">metrics.json</a>; each run's own report is in "
            "<code>METHOD/seed-S/eval/index.html</code>.</p>\n"
            f"<h2>Comparison</h2>{html_table(rows, **columns)}\n<h2>Training curves</h2>{curves}\n"
            "<h2>Overview (first seed)</h2>"
            + figure_html("overview.png", "2-D projections of every method, each titled with its l2m", width=1400)
            + f"\n<h2>Figures (first seed)</h2>{per_method}")
    (out_dir / "index.html").write_text(html_page("alignclip demo: CLIP vs SharedCLIP vs AlignCLIP", body))
