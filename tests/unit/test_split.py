"""Split by source image: stratified, seeded, no leakage."""

import numpy as np
import pytest

from handwriting import labels
from handwriting.params import Split
from handwriting.stages.split import assign_sources

RATIOS = Split(train=0.7, val=0.15, test=0.15)


def sources(per_class: int):
    ids = np.array([f"{c}/{k}" for c in range(52) for k in range(per_class)])
    return ids, np.repeat(np.arange(52), per_class)


def test_every_source_gets_one_subset_in_the_ratios_per_class():
    ids, class_ids = sources(20)
    subset_of = assign_sources(ids, class_ids, RATIOS, seed=1)
    assert set(subset_of) == set(ids)
    for class_id in range(52):
        mine = [subset_of[i] for i in ids[class_ids == class_id]]
        assert (mine.count("train"), mine.count("val"), mine.count("test")) == (14, 3, 3)


def test_seeded():
    ids, class_ids = sources(10)
    assert assign_sources(ids, class_ids, RATIOS, 5) == assign_sources(ids, class_ids, RATIOS, 5)
    assert assign_sources(ids, class_ids, RATIOS, 5) != assign_sources(ids, class_ids, RATIOS, 6)


def test_tiny_classes_still_get_val_and_test():
    ids, class_ids = sources(3)
    subset_of = assign_sources(ids, class_ids, RATIOS, seed=0)
    for class_id in range(52):
        assert sorted(subset_of[i] for i in ids[class_ids == class_id]) == ["test", "train", "val"]


def test_too_few_sources_is_a_clear_error():
    ids, class_ids = sources(2)
    with pytest.raises(SystemExit, match=f"class {labels.char_of(0)!r} has 2 source images"):
        assign_sources(ids, class_ids, RATIOS, seed=0)


def test_bad_ratios_are_a_clear_error():
    ids, class_ids = sources(5)
    with pytest.raises(SystemExit, match="sum to 1"):
        assign_sources(ids, class_ids, Split(0.8, 0.15, 0.15), seed=0)
