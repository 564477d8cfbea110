"""Throughput of the synthetic handwriting generator on one CPU core.

Run: ``python benchmarks/synth_speed.py [--n 2000] [--seed 0]`` (with the package importable, e.g.
``PYTHONPATH=src``). Prints images per second for drawing every letter in turn with the default
settings, after a warm-up pass that loads the fonts and fills the skeleton cache (a real run pays
that once, well under a second).
"""

from __future__ import annotations

import argparse
import os
import string
import time

# One core: keep OpenCV and any BLAS from spreading over more threads than the pipeline gets.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from handwriting.synth import FONT_STYLES, draw_letter  # noqa: E402

LETTERS = string.ascii_uppercase + string.ascii_lowercase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images to draw (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for style in FONT_STYLES:
        for ch in LETTERS:
            draw_letter(ch, rng, styles=(style,))
    warm = time.perf_counter() - t0

    pixels = 0
    t0 = time.perf_counter()
    for i in range(args.n):
        pixels += draw_letter(LETTERS[i % len(LETTERS)], rng).size
    elapsed = time.perf_counter() - t0
    warmed = len(FONT_STYLES) * len(LETTERS)
    print(f"warm-up (fonts + skeleton cache, {warmed} images): {warm:.2f} s")
    print(f"{args.n} images in {elapsed:.2f} s on one core: {args.n / elapsed:.0f} images/s "
          f"(mean {pixels / args.n:.0f} pixels per image)")


if __name__ == "__main__":
    main()
