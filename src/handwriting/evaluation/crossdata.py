"""External datasets for cross-dataset evaluation: class folders read through the one
preprocessing (any size, either polarity)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.datasets import scan_class_folders
from handwriting.imaging import ImageError, PreprocessSettings, preprocess_with, to_uint8


def _load(job: tuple[str, str, PreprocessSettings]) -> np.ndarray | str:
    path, relative, settings = job
    try:
        return to_uint8(preprocess_with(settings, path, name=relative))
    except ImageError as error:
        return str(error)


def read_class_folder(root: str | Path, settings: PreprocessSettings, *, workers: int = 2
                      ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(images uint8 [N, S, S], class ids [N], skipped (file, reason)) of a folder laid out as
    upper/A ... lower/z. Unusable files are skipped and reported, never fatal."""
    entries = scan_class_folders(root)
    skipped = [(e.relative, e.problem) for e in entries if e.problem]
    usable = [e for e in entries if not e.problem]
    jobs = [(str(e.path), e.relative, settings) for e in usable]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_load, jobs, chunksize=128))
    images, class_ids = [], []
    for entry, result in zip(usable, results):
        if isinstance(result, str):
            skipped.append((entry.relative, result))
        else:
            images.append(result)
            class_ids.append(labels.index_of(str(entry.char)))  # usable: in a class folder
    size = settings.image_size
    stacked = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return stacked, np.array(class_ids, dtype=np.int64), skipped


def fingerprint(root: str | Path) -> dict[str, Any]:
    """What :func:`read_class_folder` would read from ``root``, as a digest: the number of files
    and the MD5 of their relative paths and bytes, in order; ``{"present": False}`` when the
    folder does not exist. Any change to the folder changes it."""
    root = Path(root)
    if not root.is_dir():
        return {"present": False}
    digest = hashlib.md5()
    entries = scan_class_folders(root)
    for entry in entries:
        digest.update(entry.relative.encode("utf-8") + b"\0")
        digest.update(hashlib.md5(entry.path.read_bytes()).digest())
    return {"present": True, "files": len(entries), "md5": digest.hexdigest()}
