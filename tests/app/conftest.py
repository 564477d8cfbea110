"""Shared by the app tests: tiny real models and a hand-drawn letter."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from handwriting import labels
from handwriting.synth import DrawSettings, draw_letter


def letter_png(char: str = "A", seed: int = 3) -> bytes:
    """A synthetic hand-drawn letter, dark on light, as PNG bytes."""
    image = draw_letter(char, np.random.default_rng(seed), DrawSettings(invert_probability=0.0,
                        canvas_sizes=(96,)))
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """models/lenet5/tuned.keras and models/gru/tuned.keras with seeded random weights: a CNN
    (feature maps, Grad-CAM) and a recurrent model (saliency), so the ensemble is offered."""
    keras = pytest.importorskip("keras")
    from handwriting.models.zoo import build_gru, build_lenet5

    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(11)
    for arch, model in (("lenet5", build_lenet5((32, 32, 1), labels.NUM_CLASSES)),
                        ("gru", build_gru((32, 32, 1), labels.NUM_CLASSES, units=8))):
        (root / arch).mkdir()
        model.save(root / arch / "tuned.keras")
    return root


@pytest.fixture(scope="session")
def champion_models_dir(models_dir, tmp_path_factory) -> Path:
    """The models of :func:`models_dir` plus models/serving/ (ONNX) made from the LeNet-5."""
    import shutil

    pytest.importorskip("onnxruntime")
    from handwriting.serving.predictor import write_serving_dir

    root = tmp_path_factory.mktemp("with-champion")
    shutil.copytree(models_dir, root, dirs_exist_ok=True)
    write_serving_dir(root / "serving", root / "lenet5" / "tuned.keras")
    return root
