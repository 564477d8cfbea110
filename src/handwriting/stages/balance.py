"""Stage balance: undersample every class to the same count and preprocess into arrays.

Each class keeps a seeded random choice of ``balance.per_class`` images (default: the smallest
class's count). The kept images go through the shared preprocessing into uint8 arrays
(``images``, ``labels``, ``source_ids``). Class counts before and after go to the data metrics
and to a CSV that ``dvc plots`` draws as a bar chart.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from handwriting import labels
from handwriting.datasets import replacing_directory, save_arrays, write_csv, write_json
from handwriting.imaging import PreprocessSettings, preprocess_with, to_uint8
from handwriting.params import ParamsError, load_params
from handwriting.visualize import contact_sheet


class MissingClassError(ValueError):
    """Some class has no raw image at all."""


def list_raw(raw_dir: Path) -> dict[str, list[str]]:
    """Relative paths of the raw images of every class, sorted."""
    return {char: sorted(p.relative_to(raw_dir).as_posix()
                         for p in (raw_dir / labels.folder_of(char)).glob("*.png"))
            for char in labels.CLASSES}


def choose(files: dict[str, list[str]], per_class: int | None, seed: int) -> dict[str, list[str]]:
    """Seeded random undersampling of every class to ``per_class`` (default: the smallest)."""
    empty = [char for char, found in files.items() if not found]
    if empty:
        raise MissingClassError(
            f"no images for {' '.join(empty)}; every one of the 52 classes needs "
            "images (add them to the dataset or to data/feedback)")
    smallest = min(len(found) for found in files.values())
    target = smallest if per_class is None else per_class
    if target < 1 or target > smallest:
        short = [c for c, found in files.items() if len(found) < target]
        raise ParamsError(
            f"balance.per_class={per_class} but {' '.join(short) or 'no class'} "
            f"ha{'s' if len(short) == 1 else 've'} fewer images (smallest class: {smallest}); "
            "set balance.per_class to null or to at most the smallest class count")
    rng = np.random.default_rng(seed)
    return {char: sorted(np.asarray(found)[rng.choice(len(found), target, replace=False)])
            for char, found in files.items()}


def _preprocess_file(job: tuple[Path, str, PreprocessSettings]) -> np.ndarray:
    raw_dir, relative, settings = job
    return to_uint8(preprocess_with(settings, raw_dir / relative, name=relative))


def run(params_path: Path, raw_dir: Path, out_dir: Path, metrics_path: Path,
        counts_path: Path, preview_path: Path) -> dict:
    """Balance and preprocess the raw dataset; returns the data metrics."""
    params = load_params(params_path)
    files = list_raw(raw_dir)
    chosen = choose(files, params.balance.per_class, params.base.seed)
    relatives = [rel for char in labels.CLASSES for rel in chosen[char]]
    jobs = [(raw_dir, rel, params.preprocessing) for rel in relatives]
    with ProcessPoolExecutor(2) as pool:
        images = list(tqdm(pool.map(_preprocess_file, jobs, chunksize=64), total=len(jobs),
                           desc="balance: preprocessing", unit="img"))
    class_ids = np.array([labels.index_of(char) for char in labels.CLASSES
                          for _ in chosen[char]], dtype=np.int64)
    with replacing_directory(out_dir) as staging:
        save_arrays(staging, images=np.stack(images), labels=class_ids,
                    source_ids=np.array(relatives))
    before = {char: len(found) for char, found in files.items()}
    after = {char: len(found) for char, found in chosen.items()}
    write_csv(counts_path, ["class", "folder", "before", "after"],
              [(char, labels.folder_of(char), before[char], after[char])
               for char in labels.CLASSES])
    metrics = {
        "before": {"images": sum(before.values()), "min_per_class": min(before.values()),
                   "max_per_class": max(before.values())},
        "after": {"images": sum(after.values()), "per_class": min(after.values())},
        "classes": labels.NUM_CLASSES,
    }
    write_json(metrics_path, metrics)
    stacked = np.stack(images)
    contact_sheet({char: list(stacked[class_ids == labels.index_of(char)][:8])
                   for char in labels.CLASSES}, preview_path, tile=32,
                  title=f"what the models see: preprocessed {params.base.image_size}x"
                        f"{params.base.image_size} inputs (ink = white)")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.balance",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw", type=Path, required=True, help="raw dataset folder to read")
    parser.add_argument("--out", type=Path, required=True, help="array folder to write")
    parser.add_argument("--metrics", type=Path, required=True, help="data metrics JSON")
    parser.add_argument("--counts", type=Path, required=True, help="class counts CSV (plot)")
    parser.add_argument("--preview", type=Path, required=True,
                        help="PNG of preprocessed samples")
    args = parser.parse_args(argv)
    try:
        metrics = run(args.params, args.raw, args.out, args.metrics, args.counts, args.preview)
    except (ParamsError, MissingClassError) as error:
        raise SystemExit(f"balance: {error}") from None
    print(f"balance: {metrics['before']['images']} -> {metrics['after']['images']} images "
          f"({metrics['after']['per_class']} per class) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
