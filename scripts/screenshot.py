#!/usr/bin/env python
"""Make the README's screenshot of a job page with regtune's own code.

Runs a small job that overfits (an MLP on few noisy samples) in-process, writes
its ``report.html`` with ``regtune run``'s own writer, and photographs the top of
the page in headless Chromium (Debian's ``chromium``, driven by Playwright).

    python scripts/screenshot.py                  # -> docs/job-page.png
    python scripts/screenshot.py --keep runs/shot  # also keep the job's report folder
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tuner import load_spec, run_job

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SPEC = """
name: overfit-demo
seed: 0
dataset:
  source: synthetic
  task: classification
  n_samples: 400
  n_features: 30
  n_informative: 5
  noise: 0.05
  split: {val: 0.25, test: 0.25}
model: {kind: mlp, hidden: [128, 128]}
training: {epochs: 60, batch_size: 32, lr: 0.002}
search:
  sampler: tpe
  pruner: none
  space:
    l1: {low: 1.0e-5, high: 1.0e-2, log: true, allow_zero: true}
    l2: {low: 1.0e-5, high: 1.0e-1, log: true}
    dropout: {low: 0.0, high: 0.6}
  stages:
    - {name: baseline, params: [], trials: 1}
    - {name: l2, params: [l2], trials: 8}
    - {name: dropout, params: [dropout], trials: 8}
    - {name: joint, params: [l1, l2, dropout], trials: 12}
report: {top_k: 3, seeds: 2}
"""


def screenshot(page: Path, out: Path, *, width: int = 1100, height: int = 1700) -> None:
    """The top ``height`` pixels of ``page`` in headless Chromium, as a PNG at ``out``."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("screenshot.py: no chromium on PATH (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": width, "height": height})
        tab.goto(page.resolve().as_uri(), wait_until="load")
        out.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": width, "height": height})
        browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "job-page.png", help="the PNG to write")
    ap.add_argument("--keep", type=Path, help="copy the job's report folder here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report_dir = Path(tmp) / "report"
        report = run_job(load_spec(SPEC), storage=f"sqlite:///{tmp}/runs.db", out_dir=report_dir)
        screenshot(report_dir / "report.html", args.out)
        if args.keep:
            shutil.copytree(report_dir, args.keep, dirs_exist_ok=True)
    print(report.diagnosis, file=sys.stderr)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
