"""Augment stage: a negative ``augment.copies`` is a params error, one line from the stage."""

from dataclasses import fields

import cv2
import numpy as np
import pytest
import yaml

from handwriting.augmentation import AugmentSettings
from handwriting.datasets import save_arrays
from handwriting.params import ParamsError
from handwriting.stages import augment
from tests.conftest import repo_params


def test_negative_copies_is_a_params_error():
    settings = AugmentSettings(**{field.name: 0.0 for field in fields(AugmentSettings)})
    with pytest.raises(ParamsError, match="^augment.copies must be 0 or more, got -1"):
        augment.augment_arrays(np.zeros((2, 8, 8), np.uint8), -1, 0, settings)


def test_the_stage_exits_with_one_line_naming_the_stage(tmp_path):
    save_arrays(tmp_path / "balanced", images=np.zeros((2, 8, 8), np.uint8),
                labels=np.array([0, 1]), source_ids=np.array(["upper/A/0.png", "upper/B/0.png"]))
    values = repo_params()
    values["augment"]["copies"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    threads = cv2.getNumThreads()  # the stage runs OpenCV on one thread
    try:
        with pytest.raises(SystemExit, match="^augment: augment.copies must be 0 or more, got -1"):
            augment.main(["--params", str(tmp_path / "params.yaml"),
                          "--balanced", str(tmp_path / "balanced"),
                          "--out", str(tmp_path / "augmented"),
                          "--preview", str(tmp_path / "preview.png")])
    finally:
        cv2.setNumThreads(threads)
    assert not (tmp_path / "augmented").exists()
