"""Stage split: stratified train/validation/test split BY SOURCE IMAGE.

An original and all of its augmented variants land in the same subset, and validation and test
hold originals only, so no augmented copy of a test image is ever trained on. Writes
``<out>/{train,val,test}/{images,labels,source_ids,variants}.npy`` (uint8 images) and
``<out>/manifest.csv`` (file, label, subset, source_id, variant).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from handwriting import labels
from handwriting.datasets import (
    load_arrays,
    replacing_directory,
    save_arrays,
    write_csv,
    write_json,
)
from handwriting.params import ParamsError, Split, load_params

SUBSETS = ("train", "val", "test")


class TooFewSourcesError(ValueError):
    """A class has too few source images to give train, validation and test one each."""


def assign_sources(source_ids: np.ndarray, source_labels: np.ndarray, ratios: Split,
                   seed: int) -> dict[str, str]:
    """Subset of every source image: per class, a seeded shuffle cut by the ratios.

    Every class with 3 or more sources gets at least one validation and one test source.
    """
    values = (ratios.train, ratios.val, ratios.test)
    if min(values) <= 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ParamsError(f"split.train/val/test must be positive and sum to 1, got {values}")
    rng = np.random.default_rng(seed)
    subset_of: dict[str, str] = {}
    for class_id in range(labels.NUM_CLASSES):
        sources = np.sort(source_ids[source_labels == class_id])
        if len(sources) == 0:
            continue
        if len(sources) < 3:
            raise TooFewSourcesError(
                f"class {labels.char_of(class_id)!r} has {len(sources)} source images; "
                "at least 3 are needed (one each for train, val and test)")
        sources = sources[rng.permutation(len(sources))]
        n_val = max(1, round(len(sources) * ratios.val))
        n_test = max(1, round(len(sources) * ratios.test))
        n_val = min(n_val, len(sources) - n_test - 1)
        for position, source in enumerate(sources):
            subset_of[str(source)] = ("val" if position < n_val else
                                      "test" if position < n_val + n_test else "train")
    return subset_of


def run(params_path: Path, augmented_dir: Path, out_dir: Path,
        metrics_path: Path) -> dict[str, int]:
    """Split the augmented arrays; returns the image count per subset."""
    params = load_params(params_path)
    data = load_arrays(augmented_dir, "images", "labels", "source_ids", "variants")
    originals = data["variants"] == 0
    subset_of = assign_sources(data["source_ids"][originals], data["labels"][originals],
                               params.split, params.base.seed)
    row_subset = np.array([subset_of[str(s)] for s in data["source_ids"]])
    keep = {
        "train": row_subset == "train",
        # Validation and test measure real inputs: originals only.
        "val": (row_subset == "val") & originals,
        "test": (row_subset == "test") & originals,
    }
    counts = {}
    manifest = []
    with replacing_directory(out_dir) as staging:
        for subset in SUBSETS:
            rows = np.flatnonzero(keep[subset])
            save_arrays(staging / subset, **{name: array[rows] for name, array in data.items()})
            counts[subset] = len(rows)
            for row in rows:
                source, variant = str(data["source_ids"][row]), int(data["variants"][row])
                manifest.append((source if variant == 0 else f"{source}#variant{variant}",
                                 labels.char_of(data["labels"][row]), subset, source, variant))
        write_csv(staging / "manifest.csv", ["file", "label", "subset", "source_id", "variant"],
                  manifest)
    counts["sources"] = len(subset_of)
    write_json(metrics_path, counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.split",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--augmented", type=Path, required=True, help="augmented array folder")
    parser.add_argument("--out", type=Path, required=True, help="split array folder to write")
    parser.add_argument("--metrics", type=Path, required=True, help="subset sizes JSON")
    args = parser.parse_args(argv)
    try:
        counts = run(args.params, args.augmented, args.out, args.metrics)
    except (ParamsError, TooFewSourcesError) as error:
        raise SystemExit(f"split: {error}") from None
    print("split: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
