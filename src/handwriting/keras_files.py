"""Byte-reproducible ``.keras`` files: the same model always gives the same bytes.

Keras writes the save date into ``metadata.json``, Python object ids (``shared_object_id``)
into ``config.json`` and the current time into the zip entries, so retraining an identical
model gave a new file hash and DVC reran everything downstream. :func:`save_keras` writes the
file through Keras, then rewrites the archive without the date, with the shared-object ids
numbered in order of appearance and with fixed entry times. The weights are untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

# The earliest time a zip entry can hold: a fixed, meaningless stamp.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _renumber_shared_objects(config: Any, numbers: dict[int, int]) -> Any:
    if isinstance(config, dict):
        return {key: (numbers.setdefault(value, len(numbers) + 1)
                      if key == "shared_object_id" and isinstance(value, int)
                      else _renumber_shared_objects(value, numbers))
                for key, value in config.items()}
    if isinstance(config, list):
        return [_renumber_shared_objects(value, numbers) for value in config]
    return config


def _canonical(name: str, data: bytes) -> bytes:
    if name == "metadata.json":
        metadata = json.loads(data)
        metadata.pop("date_saved", None)
        return json.dumps(metadata).encode()
    if name == "config.json":
        return json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
    return data


def save_keras(model, path: str | os.PathLike) -> Path:
    """Save ``model`` as a ``.keras`` file whose bytes depend only on the model, atomically
    (written beside the target, then renamed: no half-written file that looks finished)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".save-") as scratch:
        written = Path(scratch) / "written.keras"
        model.save(written)
        canonical = Path(scratch) / path.name
        with zipfile.ZipFile(written) as source, zipfile.ZipFile(canonical, "w") as target:
            for entry in source.infolist():
                info = zipfile.ZipInfo(entry.filename, date_time=ZIP_EPOCH)
                info.compress_type = entry.compress_type
                info.external_attr = 0o644 << 16
                target.writestr(info, _canonical(entry.filename, source.read(entry)))
        os.replace(canonical, path)
    return path
