"""Render report pages (index.html of `alignclip eval`, `compare`, `demo`) in headless Chromium and save PNGs.

Why: a report is read in a browser, so it is checked in one: figure sizes, legends, tables and labels are judged on
the rendered page, not on the HTML source. Needs Debian's `chromium` (apt-get install chromium); nothing else.

    python scripts/screenshot_reports.py runs/eval/index.html runs/cmp/index.html --out shots/
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    """Path of a Chromium-family browser on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(page: str | Path, png: str | Path, width: int = 1400, height: int = 2000,
               browser: str | None = None, timeout: float = 120.0) -> Path:
    """Screenshot of the top `height` pixels of `page` at a `width`-pixel-wide window; raises on any failure."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    page, png = Path(page).resolve(), Path(png).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"page not found: {page}")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
               "--no-first-run", "--disable-extensions", "--virtual-time-budget=5000",
               f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri()]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0 or not png.is_file():
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{browser} failed on {page} (exit {run.returncode}): {tail[0]}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", help="index.html files")
    parser.add_argument("--out", required=True, help="folder for the PNGs (one per page, named after its folder)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)
    for page in args.pages:
        name = Path(page).resolve().parent.name or "page"
        png = screenshot(page, Path(args.out) / f"{name}.png", args.width, args.height)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
