"""save_keras: the same model gives the same bytes, and the file loads back to the same model."""

from __future__ import annotations

import hashlib
import json
import time
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from handwriting import labels  # noqa: E402
from handwriting.keras_files import ZIP_EPOCH, save_keras  # noqa: E402
from handwriting.models.zoo import build  # noqa: E402


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_model_built_twice_gives_identical_bytes(tmp_path):
    # Two builds from the same seed, as two runs of the train stage: equal weights, but other
    # Python objects (ids) and another save time.
    paths = []
    for run in ("a", "b"):
        keras.utils.set_random_seed(0)
        model = build("lenet5_gru", (32, 32, 1), labels.NUM_CLASSES, units=8)
        paths.append(save_keras(model, tmp_path / run / "model.keras"))
        time.sleep(1.1)  # the save date has a one-second resolution
    assert digest(paths[0]) == digest(paths[1])
    with zipfile.ZipFile(paths[0]) as archive:
        assert all(entry.date_time == ZIP_EPOCH for entry in archive.infolist())
        assert "date_saved" not in json.loads(archive.read("metadata.json"))


def test_the_saved_file_loads_back_to_the_same_model(tmp_path):
    keras.utils.set_random_seed(1)
    model = build("lenet5", (32, 32, 1), labels.NUM_CLASSES)
    path = save_keras(model, tmp_path / "model.keras")
    images = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(images)),
                                  keras.ops.convert_to_numpy(loaded(images)))
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no scratch left behind
