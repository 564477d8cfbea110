"""Fixtures shared by the unit tests of the tune stage (searches and their workers)."""

from __future__ import annotations

import numpy as np
import pytest

from handwriting import labels
from handwriting.datasets import save_arrays


@pytest.fixture()
def tiny_split(tmp_path):
    """Random 32x32 train (156) and val (52) arrays, every class present, under tmp_path/split
    (a module may define its own)."""
    rng = np.random.default_rng(0)
    for subset, count in (("train", 156), ("val", 52)):
        class_ids = np.arange(count) % labels.NUM_CLASSES
        save_arrays(tmp_path / "split" / subset,
                    images=rng.integers(0, 256, size=(count, 32, 32), dtype=np.uint8),
                    labels=class_ids)
    return tmp_path / "split"
