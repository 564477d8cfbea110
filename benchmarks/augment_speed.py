"""The cost of the on-the-fly variants that training draws beside its steps, per image.

The train and tune stages replace a share of every batch (``augment_on_the_fly``) by fresh
random variants (:func:`handwriting.models.fitting.fresh_variants`), made in a thread beside
the engine's steps: on 2 cores every CPU second they take is one the steps lack. This prints,
side by side in one run (alternating, the median of ``--repeats`` rounds), the wall and CPU
microseconds per variant with OpenCV's own thread pool (its default: one thread per core) and
on one thread (what training uses: :func:`handwriting.augmentation.one_opencv_thread`), and
checks that both draw the same pixels. The letters are drawn by the generator and preprocessed
as the pipeline does (the cost depends on the ink, so random pixels would mislead).

Run: ``python benchmarks/augment_speed.py [--images 2000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import string
import time
from pathlib import Path

import cv2
import numpy as np

from handwriting.augmentation import AugmentSettings, one_opencv_thread
from handwriting.imaging import preprocess, to_uint8
from handwriting.models.fitting import fresh_variants
from handwriting.params import load_params
from handwriting.synth import draw_letter

LETTERS = string.ascii_uppercase + string.ascii_lowercase


def letters(count: int, size: int, seed: int) -> np.ndarray:
    """``count`` generated letters, preprocessed to ``size``, uint8 [count, size, size]."""
    rng = np.random.default_rng(seed)
    return np.stack([to_uint8(preprocess(draw_letter(LETTERS[i % len(LETTERS)], rng), size))
                     for i in range(count)])


def per_variant(images: np.ndarray, settings: AugmentSettings) -> tuple[float, float,
                                                                          np.ndarray]:
    """(wall, CPU) microseconds per variant over ``images`` (every image varied), and the
    variants, in batches of 32 as training makes them."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = np.concatenate([fresh_variants(images[start:start + 32], 1.0, settings, 0, number)
                          for number, start in enumerate(range(0, len(images), 32))])
    return ((time.perf_counter() - wall) / len(images) * 1e6,
            (time.process_time() - cpu) / len(images) * 1e6, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="variants per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per setting")
    parser.add_argument("--size", type=int, default=32, help="image side (base.image_size)")
    parser.add_argument("--params", type=Path, default=Path(__file__).parents[1] / "params.yaml",
                        help="the augment ranges of this params.yaml (default: the project's)")
    args = parser.parse_args(argv)
    images = letters(args.images, args.size, seed=0)
    settings = AugmentSettings.from_params(load_params(args.params))
    pool = cv2.getNumThreads()
    results: dict[str, list[tuple[float, float]]] = {"pool": [], "one": []}
    variants = {}
    per_variant(images[:64], settings)  # warm-up
    for _ in range(args.repeats):
        for name, threads in (("pool", pool), ("one", 1)):
            if threads == 1:
                one_opencv_thread()
            else:
                cv2.setNumThreads(threads)
            wall, cpu, variants[name] = per_variant(images, settings)
            results[name].append((wall, cpu))
    same = np.array_equal(variants["pool"], variants["one"])
    print(f"{args.images} variants of generated {args.size}-pixel letters per round, median of "
          f"{args.repeats} rounds (microseconds per variant)")
    for name, label in (("pool", f"OpenCV's pool ({pool} threads)"), ("one", "one thread")):
        wall = statistics.median(r[0] for r in results[name])
        cpu = statistics.median(r[1] for r in results[name])
        print(f"  {label:<28} wall {wall:6.0f}   CPU {cpu:6.0f}")
    ratio = (statistics.median(r[1] for r in results["pool"])
             / statistics.median(r[1] for r in results["one"]))
    print(f"CPU time, pool / one thread: {ratio:.2f}x; the same pixels: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
