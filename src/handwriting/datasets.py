"""Reading and writing datasets: class folders of images, and folders of NumPy arrays.

Arrays are stored one ``.npy`` file per array rather than ``.npz``: a zip archive stamps the
time into every member, so identical data would not give identical bytes and DVC would see a
change on every run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handwriting import labels
from handwriting.imaging import is_image_file


@dataclass(frozen=True)
class FolderEntry:
    """A file found under a dataset folder: its path, the path relative to the folder, and
    its letter (None when the file is not inside a valid class folder)."""

    path: Path
    relative: str
    char: str | None
    problem: str = ""


def scan_class_folders(root: str | Path) -> list[FolderEntry]:
    """Every file under ``root``, sorted, with the letter its ``upper/A`` or ``lower/a`` folder
    names. Files outside a class folder, and non-image file types, carry a ``problem``."""
    root = Path(root)
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        parent = path.relative_to(root).parent
        if len(parent.parts) != 2:
            entries.append(FolderEntry(path, relative, None,
                                       "not inside a class folder (upper/A ... lower/z)"))
            continue
        try:
            char = labels.char_of_folder(parent)
        except labels.LabelError as error:
            entries.append(FolderEntry(path, relative, None, str(error)))
            continue
        if not is_image_file(path):
            entries.append(FolderEntry(path, relative, char,
                                       f"not an image file type ({path.suffix or 'no suffix'})"))
            continue
        entries.append(FolderEntry(path, relative, char))
    return entries


def save_arrays(directory: str | Path, **arrays: np.ndarray) -> None:
    """Write each array to ``directory/<name>.npy``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", np.asarray(array), allow_pickle=False)


def load_arrays(directory: str | Path, *names: str) -> dict[str, np.ndarray]:
    """Read ``directory/<name>.npy`` for each name (all ``.npy`` files when none are named)."""
    directory = Path(directory)
    if not names:
        names = tuple(sorted(p.stem for p in directory.glob("*.npy")))
    missing = [n for n in names if not (directory / f"{n}.npy").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory}: missing {', '.join(m + '.npy' for m in missing)}; "
            "run the stage that writes it (dvc repro)")
    return {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in names}


def write_json(path: str | Path, data: object) -> None:
    """Write JSON with sorted keys and a final newline (stable bytes for DVC and git)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_csv(path: str | Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    """Write a CSV file with a header row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(list(header))
        writer.writerows(rows)


@contextmanager
def replacing_directory(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target`` that replaces ``target`` only when
    the block finishes; an interrupted stage leaves the old output (or none), never half of one."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
