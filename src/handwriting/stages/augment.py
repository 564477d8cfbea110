"""Stage augment: add ``augment.copies`` random variants of every balanced image.

Output arrays hold the originals (variant 0) and their variants (1..copies); every row records
the ``source_id`` of the image it came from, so the split stage can keep an original and its
variants together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from handwriting import labels
from handwriting.augmentation import AugmentSettings, augment_uint8, one_opencv_thread
from handwriting.datasets import load_arrays, replacing_directory, save_arrays
from handwriting.params import ParamsError, load_params
from handwriting.visualize import contact_sheet


def augment_arrays(images: np.ndarray, copies: int, seed: int,
                   settings: AugmentSettings) -> tuple[np.ndarray, np.ndarray]:
    """Originals followed by their variants, grouped per original.

    Returns (images uint8 [n * (copies + 1), H, W], variant number per row, 0 = original).
    """
    if copies < 0:
        raise ParamsError(f"augment.copies must be 0 or more, got {copies}")
    out = np.empty((len(images) * (copies + 1),) + images.shape[1:], dtype=np.uint8)
    variants = np.tile(np.arange(copies + 1), len(images))
    for index in tqdm(range(len(images)), desc="augment", unit="img"):
        row = index * (copies + 1)
        out[row] = images[index]
        original = images[index].astype(np.float32) / 255.0
        for copy in range(1, copies + 1):
            # Keyed by (seed, image, copy): a variant does not depend on the others.
            rng = np.random.default_rng([seed, index, copy])
            out[row + copy] = augment_uint8(original, rng, settings)
    return out, variants


def run(params_path: Path, balanced_dir: Path, out_dir: Path, preview_path: Path) -> int:
    """Augment the balanced arrays; returns the number of rows written."""
    params = load_params(params_path)
    data = load_arrays(balanced_dir, "images", "labels", "source_ids")
    copies = params.augment.copies
    one_opencv_thread()
    images, variants = augment_arrays(data["images"], copies, params.base.seed,
                                      AugmentSettings.from_params(params))
    with replacing_directory(out_dir) as staging:
        save_arrays(staging, images=images, labels=np.repeat(data["labels"], copies + 1),
                    source_ids=np.repeat(data["source_ids"], copies + 1), variants=variants)
    # Preview: one original per class (the first) followed by its variants.
    firsts = {char: int(np.flatnonzero(data["labels"] == labels.index_of(char))[0])
              for char in labels.CLASSES if np.any(data["labels"] == labels.index_of(char))}
    contact_sheet({char: list(images[i * (copies + 1):(i + 1) * (copies + 1)])
                   for char, i in firsts.items()}, preview_path, tile=32,
                  title=f"augmentation: an original (left) and its {copies} variants")
    return len(images)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.augment",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--balanced", type=Path, required=True, help="balanced array folder")
    parser.add_argument("--out", type=Path, required=True, help="augmented array folder")
    parser.add_argument("--preview", type=Path, required=True, help="PNG of variants")
    args = parser.parse_args(argv)
    try:
        rows = run(args.params, args.balanced, args.out, args.preview)
    except ParamsError as error:
        raise SystemExit(f"augment: {error}") from None
    print(f"augment: {rows} images (originals and variants) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
