"""Running a Keras model of the pipeline: loading a ``.keras`` file, its input size, and the
two ways of calling it that every user shares (evaluate, export, the predictor, the app and the
benchmarks): :func:`compiled_predictor` for many small calls, :func:`keras_probabilities` for a
batch of images. TensorFlow and Keras are imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels

ModelOrPath = Any  # keras.Model | str | os.PathLike
# Images per model call in :func:`keras_probabilities`.
BATCH_SIZE = 256


def missing_model(path: Path, what: str = "model file") -> FileNotFoundError:
    """The error for a model file that is not there, naming it and the fix."""
    return FileNotFoundError(
        f"{path}: {what} not found; run `dvc repro` to train and export the models, "
        "or pass the path of an existing model")


def load_keras_model(model_or_path: ModelOrPath):
    """A ``keras.Model`` as is, or loaded (uncompiled) from a ``.keras`` file."""
    if not isinstance(model_or_path, (str, os.PathLike)):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise missing_model(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: expected a Keras 3 .keras file")
    import keras

    return keras.saving.load_model(path, compile=False)


def image_size_of(model) -> int:
    """The side S of a model taking (None, S, S, 1) images; ValueError for any other input."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1 or shape[1] is None:
        raise ValueError(f"model {model.name!r} takes inputs of shape {shape}; expected "
                         "(None, S, S, 1) grayscale square images")
    return int(shape[1])


def as_model_input(images: np.ndarray) -> np.ndarray:
    """(N, S, S) or (N, S, S, 1) images (or one (S, S) image) -> contiguous (N, S, S, 1) float32."""
    array = np.asarray(images, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] != 1 or array.shape[1] != array.shape[2]:
        raise ValueError(f"images of shape {np.shape(images)}: expected (N, S, S) or "
                         "(N, S, S, 1) preprocessed images")
    return np.ascontiguousarray(array)


def compiled_predictor(model) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` as one traced ``tf.function`` with a fixed input signature: (N, S, S, 1)
    float32 -> (N, 52) probabilities as NumPy, with no retracing per batch size and none of
    ``model.predict``'s ~100 ms of set-up per call."""
    import tensorflow as tf

    size = image_size_of(model)

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32,
                                                name="image")],
                 reduce_retracing=True)
    def predict(batch):
        return model(batch, training=False)

    return lambda batch: predict(tf.constant(batch, tf.float32)).numpy()


def keras_probabilities(model, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(N, 52) probabilities of (N, S, S[, 1]) preprocessed images from a Keras model, batched."""
    import keras

    batch = as_model_input(images)
    outputs = [keras.ops.convert_to_numpy(model(batch[start:start + batch_size],
                                                training=False))
               for start in range(0, len(batch), batch_size)]
    return (np.concatenate(outputs) if outputs
            else np.zeros((0, labels.NUM_CLASSES), np.float32))
