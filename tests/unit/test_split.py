"""Split by source image: stratified, seeded, no leakage."""

import numpy as np
import pytest
import yaml

from handwriting import labels
from handwriting.datasets import save_arrays
from handwriting.params import ParamsError, Split
from handwriting.stages import split
from handwriting.stages.split import TooFewSourcesError, assign_sources
from tests.conftest import repo_params

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
    with pytest.raises(TooFewSourcesError,
                       match=f"^class {labels.char_of(0)!r} has 2 source images"):
        assign_sources(ids, class_ids, RATIOS, seed=0)


def test_bad_ratios_are_a_clear_error():
    ids, class_ids = sources(5)
    with pytest.raises(ParamsError, match="^split.train/val/test must .* sum to 1"):
        assign_sources(ids, class_ids, Split(0.8, 0.15, 0.15), seed=0)


def test_the_stage_exits_with_one_line_naming_the_stage(tmp_path):
    ids, class_ids = sources(2)
    save_arrays(tmp_path / "augmented", images=np.zeros((len(ids), 8, 8), np.uint8),
                labels=class_ids, source_ids=ids, variants=np.zeros(len(ids), np.int64))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params()))
    with pytest.raises(SystemExit, match=f"^split: class {labels.char_of(0)!r} has 2 source "
                                         "images; at least 3 are needed"):
        split.main(["--params", str(tmp_path / "params.yaml"),
                    "--augmented", str(tmp_path / "augmented"), "--out", str(tmp_path / "split"),
                    "--metrics", str(tmp_path / "split.json")])
    assert not (tmp_path / "split").exists()
