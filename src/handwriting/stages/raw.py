"""Stage raw: write ``data/raw/{upper,lower}/<letter>/*.png`` from the chosen source.

Sources (``raw.source`` in params.yaml):

- ``synthetic``: the embedded dataset, drawn by the handwriting generator, deterministic from
  ``base.seed``;
- ``folder``: a user's dataset in the ``upper/A ... lower/z`` layout at ``raw.folder``. Every file
  is checked with the shared preprocessing; files that cannot be used are listed, with the
  reason, in the skipped-files report and left out, never silently.

Corrections saved by users in the feedback folder (same layout) are added to either source.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from handwriting import labels
from handwriting.datasets import replacing_directory, scan_class_folders, write_csv, write_json
from handwriting.imaging import ImageError, PreprocessSettings, decode, fit_to_square, ink_map
from handwriting.params import Params, ParamsError, Synthetic, load_params
from handwriting.synth import DrawSettings
from handwriting.synth.sheet import allograph_sheet
from handwriting.visualize import contact_sheet

SAMPLES_PER_CLASS_ON_SHEET = 8


class NoUsableImageError(ValueError):
    """The dataset folder (raw.folder) holds no image that can be imported."""


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _draw_class(job: tuple[str, int, int, DrawSettings, str]) -> int:
    """Draw every sample of one letter into its class folder (runs in a worker process)."""
    from handwriting.synth import draw_letter, sample_rng

    char, count, seed, drawing, out_dir = job
    folder = Path(out_dir) / labels.folder_of(char)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        image = draw_letter(char, sample_rng(seed, char, number), drawing)
        cv2.imwrite(str(folder / f"synthetic-{number:05d}.png"), image)
    return count


def drawing_settings(synthetic: Synthetic) -> DrawSettings:
    """The generator's settings in ``raw.synthetic`` (every key besides the counts); a
    ParamsError names a bad or unknown key."""
    try:
        return DrawSettings.from_mapping(synthetic.drawing)
    except ValueError as error:
        raise ParamsError(f"params.yaml: raw.synthetic.{error}") from None


def generate_synthetic(synthetic: Synthetic, seed: int, out_dir: Path) -> int:
    """Draw the synthetic dataset into ``out_dir``; returns the number of images."""
    unknown = sorted(set(synthetic.per_class_overrides) - set(labels.CLASSES))
    if unknown:
        raise labels.LabelError(
            f"params.yaml: raw.synthetic.per_class_overrides names {unknown}, which are not "
            "letters; use single letters A-Z or a-z as keys")
    drawing = drawing_settings(synthetic)
    jobs = [(char, synthetic.per_class_overrides.get(char, synthetic.per_class), seed, drawing,
             str(out_dir)) for char in labels.CLASSES]
    total = sum(job[1] for job in jobs)
    with ProcessPoolExecutor(_workers()) as pool, \
            tqdm(total=total, desc="raw: drawing letters", unit="img") as progress:
        for done in pool.map(_draw_class, jobs):
            progress.update(done)
    return total


def _check_file(job: tuple[str, str, str, PreprocessSettings]) -> tuple[str, str]:
    """Decode and preprocess one file; save its grayscale as PNG. Returns (relative, problem)."""
    path, relative, target, settings = job
    try:
        gray = decode(path, name=relative, max_pixels=settings.max_pixels)
        fit_to_square(ink_map(gray, name=relative), settings.image_size,
                      margin=settings.margin, name=relative)
    except ImageError as error:
        return relative, str(error).removeprefix(f"{relative}: ")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(target, np.round(gray * 255.0).astype(np.uint8))
    return relative, ""


def import_folder(root: Path, out_dir: Path, settings: PreprocessSettings, *,
                  origin: str = "") -> tuple[int, list[tuple[str, str]]]:
    """Copy every usable image of a class-folder dataset into ``out_dir`` as grayscale PNG.

    ``origin`` (e.g. "feedback") prefixes the saved names and the reported paths.
    Returns the number imported and (file, reason) for every file left out.
    """
    report_prefix = f"{origin}/" if origin else ""
    name_prefix = f"{origin}-" if origin else ""
    entries = scan_class_folders(root)
    skipped = [(report_prefix + e.relative, e.problem) for e in entries if e.problem]
    jobs = []
    for entry in entries:
        if entry.problem:
            continue
        name = Path(entry.relative).name
        # A non-PNG keeps its old suffix inside the new name, so a.jpg and a.png both survive.
        file_name = name if name.lower().endswith(".png") else f"{name}.png"
        target = out_dir / labels.folder_of(str(entry.char)) / f"{name_prefix}{file_name}"
        jobs.append((str(entry.path), report_prefix + entry.relative, str(target), settings))
    imported = 0
    with ProcessPoolExecutor(_workers()) as pool:
        results = pool.map(_check_file, jobs, chunksize=64)
        for relative, problem in tqdm(results, total=len(jobs),
                                      desc=f"raw: importing {origin or root}", unit="img"):
            if problem:
                skipped.append((relative, problem))
            else:
                imported += 1
    return imported, sorted(skipped)


def _sample_sheet(raw_dir: Path, path: Path, title: str) -> None:
    images: dict[str, list[np.ndarray]] = {}
    for char in labels.CLASSES:
        files = sorted((raw_dir / labels.folder_of(char)).glob("*.png"))
        read = (cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
                for f in files[:SAMPLES_PER_CLASS_ON_SHEET])
        images[char] = [image for image in read if image is not None]
    contact_sheet(images, path, title=title)


def run(params: Params, out_dir: Path, feedback_dir: Path, report_path: Path,
        skipped_path: Path, samples_path: Path, allographs_path: Path | None = None
        ) -> dict[str, int]:
    """Build the raw dataset; returns the figures written to the report."""
    settings = params.preprocessing
    # The allograph sheet is drawn from the styles whatever the source: check them first.
    drawing = drawing_settings(params.raw.synthetic)
    skipped: list[tuple[str, str]] = []
    started = time.perf_counter()
    with replacing_directory(out_dir) as staging:
        if params.raw.source == "synthetic":
            count = generate_synthetic(params.raw.synthetic, params.base.seed, staging)
            elapsed = time.perf_counter() - started
            print(f"raw: drew {count} images in {elapsed:.1f} s "
                  f"({count / max(elapsed, 1e-9):.0f} images/s)")
        elif params.raw.source == "folder":
            folder = Path(params.raw.folder).expanduser()
            if not params.raw.folder or not folder.is_dir():
                raise ParamsError(
                    f"params.yaml: raw.folder={params.raw.folder!r} is not a directory; set "
                    "raw.folder to a dataset laid out as upper/A ... lower/z")
            count, skipped = import_folder(folder, staging, settings)
            if count == 0:
                raise NoUsableImageError(
                    f"no usable image found in {folder} ({len(skipped)} files skipped, see "
                    f"{skipped_path}); lay it out as upper/A/*.png ... lower/z/*.png")
        else:
            raise ParamsError(f"params.yaml: raw.source must be 'synthetic' or 'folder', "
                              f"got {params.raw.source!r}")
        feedback = 0
        if feedback_dir.is_dir():
            feedback, feedback_skipped = import_folder(feedback_dir, staging, settings,
                                                       origin="feedback")
            skipped += feedback_skipped
        counts = Counter(p.parent.name for p in staging.rglob("*.png"))
    write_csv(skipped_path, ["file", "reason"], skipped)
    for file, reason in skipped:
        print(f"raw: skipped {file}: {reason}", file=sys.stderr)
    missing = [char for char in labels.CLASSES if counts[char] == 0]
    if missing:
        print(f"raw: warning: no images for {' '.join(missing)}", file=sys.stderr)
    report = {"images": sum(counts.values()), "skipped": len(skipped),
              "feedback_images": feedback, "classes_present": 52 - len(missing)}
    write_json(report_path, report)
    _sample_sheet(out_dir, samples_path,
                  title=f"raw dataset ({params.raw.source}): first {SAMPLES_PER_CLASS_ON_SHEET} "
                        "images of every class")
    if allographs_path is not None:
        allograph_sheet(allographs_path, drawing.styles)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.raw",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--feedback", type=Path, required=True,
                        help="folder of user corrections (upper/A ... lower/z); may be empty")
    parser.add_argument("--out", type=Path, required=True, help="raw dataset folder to write")
    parser.add_argument("--report", type=Path, required=True, help="JSON summary to write")
    parser.add_argument("--skipped", type=Path, required=True,
                        help="CSV of files left out and why")
    parser.add_argument("--samples", type=Path, required=True, help="contact sheet PNG")
    parser.add_argument("--allographs", type=Path,
                        help="PNG of every form of every letter the generator draws")
    args = parser.parse_args(argv)
    try:
        report = run(load_params(args.params), args.out, args.feedback, args.report,
                     args.skipped, args.samples, args.allographs)
    except (ParamsError, labels.LabelError, NoUsableImageError) as error:
        raise SystemExit(f"raw: {error}") from None
    print(f"raw: {report['images']} images, {report['skipped']} skipped "
          f"({report['feedback_images']} from feedback) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
