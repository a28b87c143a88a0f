"""The evaluation report rendered in a real headless browser (Debian's chromium): the page loads, its figures show
and the screenshot is neither blank nor tiny. CI has no chromium, so there this test skips."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignclip.evaluation.gap import gap_metrics, gap_shift_sweep
from alignclip.evaluation.report import write_report
from alignclip.evaluation.result import EvalResult
from test_eval_report import gapped_pairs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_reports.py"
spec = importlib.util.spec_from_file_location("screenshot_reports", SCRIPT)
screenshots = importlib.util.module_from_spec(spec)
sys.modules["screenshot_reports"] = screenshots
spec.loader.exec_module(screenshots)  # type: ignore[union-attr]

pytestmark = pytest.mark.skipif(screenshots.find_browser() is None, reason="no chromium installed (CI: expected)")


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    x, y = gapped_pairs(80)
    results = [EvalResult("toy", "modality_gap", gap_metrics(x, y), {"pairs": "image, its own caption"}),
               EvalResult("toy/shape", "zeroshot_classification", {"top1": 0.5, "top5": 0.9}, {"num_samples": 80})]
    paths = write_report(tmp_path / "report", {"method": "clip", "architecture": "clip", "results": results}, x, y,
                         sweep=gap_shift_sweep(x, y, [0.0, 0.5]))
    png = screenshots.screenshot(paths["index"], tmp_path / "page.png", width=1200, height=1600)
    with Image.open(png) as image:
        assert image.size == (1200, 1600)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.std() > 20, "blank page"
    # the figures loaded: the projection's modality colours are on the page, not only black text on white
    for colour in ((0x1f, 0x77, 0xb4), (0xff, 0x7f, 0x0e)):
        assert (np.abs(pixels - colour).max(axis=-1) < 40).sum() > 50, f"colour {colour} missing"
    assert (pixels.sum(axis=-1) < 200).sum() > 2000, "hardly any text rendered"


def test_missing_page_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="page not found"):
        screenshots.screenshot(tmp_path / "none.html", tmp_path / "x.png")


def test_comparison_page_fits_a_1200_px_window(tmp_path: Path) -> None:
    """Three runs with long paths and methods: the page is no wider than the window, and the run table needs no
    horizontal scrolling either (long values wrap)."""
    import subprocess

    from alignclip.evaluation.compare import write_comparison

    x, y = gapped_pairs(60)
    runs = []
    for i in range(3):
        run = tmp_path / f"runs-with-a-long-folder-name-number-{i}" / "eval"
        document = {"model": str(run.parent / "checkpoints" / "step_000360"), "architecture": "clip",
                    "method": f"alignclip (IMSep, negatives weighting, β=0.5), post-trained from {run.parent}/base",
                    "model_size": "embed 128; vision 32px/patch 8, width 128 x 2 layers; text width 128 x 2 layers",
                    "dataset": "csv:/data/some/long/path/heldout.csv", "results": [
                        EvalResult("d", "modality_gap", gap_metrics(x, y))]}
        write_report(run, document, x, y)
        runs.append(run)
    page = write_comparison(runs, tmp_path / "cmp")["index"]
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace(
        "</body>", "<script>const t = document.querySelector('div.scroll'); document.title = 'W=' + "
        "document.documentElement.scrollWidth + ',' + (t.scrollWidth - t.clientWidth);</script></body>"))
    done = subprocess.run([screenshots.find_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--window-size=1200,900", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    width, run_table_overflow = map(int, done.stdout.split("<title>W=")[1].split("<")[0].split(","))
    assert width <= 1200 and run_table_overflow == 0, (width, run_table_overflow)
