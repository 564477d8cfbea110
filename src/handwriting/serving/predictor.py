"""Predict letters from images with a trained model: ONNX Runtime first, Keras as the fallback.

>>> predictor = Predictor.from_directory("models/serving")        # doctest: +SKIP
>>> predictor.predict("scan.png", top_k=3)                           # doctest: +SKIP
[('A', 0.93), ('R', 0.04), ('a', 0.01)]

Every image goes through the shared preprocessing (:func:`handwriting.imaging.preprocess`), the
same as in training, with the settings stored beside the model. A serving folder, written by
:func:`write_serving_dir`, holds::

    model.onnx        float32 ONNX export (served by default)
    model.int8.onnx   int8-quantised copy (smaller; Predictor.from_directory(..., variant="int8"))
    model.keras       the Keras model, the fallback when ONNX Runtime is unavailable
    serving.json      {"image_size", "margin", "max_pixels", "labels", "model" (optional)}

ONNX Runtime and TensorFlow are imported only when a predictor is built.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.imaging import PreprocessSettings, Source, preprocess_with
from handwriting.keras_files import save_keras
from handwriting.keras_inference import (
    as_model_input,
    compiled_predictor,
    image_size_of,
    load_keras_model,
)
from handwriting.serving.onnx_export import export_onnx, open_session, quantize_int8

SERVING_JSON = "serving.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
KERAS_FILE = "model.keras"
VARIANT_FILES = {"onnx": ONNX_FILE, "int8": INT8_FILE, "keras": KERAS_FILE}
_FIX = "run `dvc repro` to train and export the models, or pass --model with an existing model"

Prediction = list[tuple[str, float]]
# What the CLI, the REST endpoint and the app say when Predictor.is_unsure is true.
UNSURE_MESSAGE = "not sure this is a single letter"


def _have_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path}: {what} not found; {_FIX}")


class _OnnxBackend:
    def __init__(self, path: Path, intra_op_threads: int):
        self.session = open_session(path, intra_op_threads=intra_op_threads)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        if len(shape) != 4 or shape[3] != 1 or not isinstance(shape[1], int) \
                or shape[1] != shape[2]:
            raise ValueError(f"{path}: the ONNX model takes inputs of shape {shape}; "
                             "expected (batch, S, S, 1)")
        self.image_size = int(shape[1])
        self.num_outputs = self.session.get_outputs()[0].shape[-1]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class _KerasBackend:
    """A Keras model called through :func:`handwriting.keras_inference.compiled_predictor`."""

    def __init__(self, path: Path):
        self.model = load_keras_model(path)
        self.image_size = image_size_of(self.model)
        self.num_outputs = self.model.output_shape[-1]
        self._call = compiled_predictor(self.model)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._call(batch)


class Predictor:
    """Class probabilities and top-k letters from a model file and the preprocessing settings.

    Args:
        model_path: a ``.onnx`` file (served by ONNX Runtime, preferred) or a ``.keras`` file
            (served by Keras through a compiled ``tf.function``).
        settings: the shared preprocessing's settings (``load_params().preprocessing``);
            default: the defaults at the model's input size. Their ``image_size`` must match
            the model's input.
        intra_op_threads: ONNX Runtime threads per call; 1 (default) gives the best
            single-image latency and lets requests run side by side; raise it for big batches.
            (The Keras fallback uses TensorFlow's process-wide thread pools instead.)
        class_labels: the label of each output (default: A-Z then a-z).
        unsure_threshold: below this top-1 probability an answer is "not sure"
            (:meth:`is_unsure`; 0, the default: never). A serving folder stores the
            threshold chosen on the validation split.

    Raises:
        FileNotFoundError: the model file is missing (the message says to run ``dvc repro``).
        ValueError: an unsupported file type, or settings / labels that do not fit the model.
    """

    def __init__(self, model_path: str | os.PathLike, settings: PreprocessSettings | None = None,
                 *, intra_op_threads: int = 1,
                 class_labels: Sequence[str] = labels.CLASSES, unsure_threshold: float = 0.0):
        path = Path(model_path)
        if not path.is_file():
            raise _missing(path, "model file")
        if path.suffix == ".onnx":
            self.backend_name = "onnx"
            self._backend: Any = _OnnxBackend(path, intra_op_threads)
        elif path.suffix == ".keras":
            self.backend_name = "keras"
            self._backend = _KerasBackend(path)
        else:
            raise ValueError(f"{path}: unsupported model file; expected .onnx or .keras")
        self.model_path = path
        self.image_size = self._backend.image_size
        self.settings = settings or PreprocessSettings(image_size=self.image_size)
        if self.settings.image_size != self.image_size:
            raise ValueError(
                f"{path}: the model takes {self.image_size}x{self.image_size} images but the "
                f"preprocessing settings say image_size={self.settings.image_size}; use the "
                "params.yaml the model was trained with, or a serving folder")
        self.labels = tuple(class_labels)
        if not 0.0 <= unsure_threshold <= 1.0:
            raise ValueError(f"unsure_threshold must be a probability in [0, 1]; got "
                             f"{unsure_threshold!r}")
        self.unsure_threshold = float(unsure_threshold)
        if len(self.labels) != self._backend.num_outputs:
            raise ValueError(f"{path}: the model has {self._backend.num_outputs} outputs but "
                             f"{len(self.labels)} labels were given")

    def __repr__(self) -> str:
        return (f"Predictor({str(self.model_path)!r}, backend={self.backend_name!r}, "
                f"image_size={self.image_size})")

    # ---------------------------------------------------------------------------------------

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, *, variant: str = "onnx",
                       intra_op_threads: int = 1) -> Predictor:
        """Load a serving folder written by :func:`write_serving_dir`.

        ``variant``: ``"onnx"`` (default; falls back to ``model.keras`` when ``model.onnx`` is
        absent), ``"int8"`` or ``"keras"``.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise _missing(directory, "serving folder")
        if variant not in VARIANT_FILES:
            raise ValueError(f"variant must be one of {', '.join(VARIANT_FILES)}; "
                             f"got {variant!r}")
        config_path = directory / SERVING_JSON
        if not config_path.is_file():
            raise _missing(config_path, "serving configuration")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            settings = PreprocessSettings(image_size=int(config["image_size"]),
                                          margin=float(config["margin"]),
                                          max_pixels=int(config["max_pixels"]))
            class_labels = tuple(config["labels"])
            threshold = float(config.get("unsure_threshold", 0.0))  # older folders: never
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{config_path}: not a valid serving configuration "
                             f"({type(error).__name__}: {error}); write the folder again "
                             "with write_serving_dir") from None
        model_path = directory / VARIANT_FILES[variant]
        if variant == "onnx" and (not model_path.is_file() or not _have_onnxruntime()) \
                and (directory / KERAS_FILE).is_file():
            model_path = directory / KERAS_FILE
        if not model_path.is_file():
            raise _missing(directory / VARIANT_FILES[variant], "model file")
        return cls(model_path, settings, intra_op_threads=intra_op_threads,
                   class_labels=class_labels, unsure_threshold=threshold)

    # ---------------------------------------------------------------------------------------

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """(N, num_classes) float32 probabilities of already-preprocessed images, in one call.

        ``inputs``: (N, S, S) or (N, S, S, 1) arrays in [0, 1] with ink = 1, as
        :func:`handwriting.imaging.preprocess` returns them (one (S, S) image is also taken).
        """
        batch = as_model_input(inputs)
        if batch.shape[1] != self.image_size:
            raise ValueError(f"images of shape {np.shape(inputs)}: the model takes "
                             f"{self.image_size}x{self.image_size} images")
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.asarray(self._backend(batch), dtype=np.float32)

    def top(self, probabilities: np.ndarray, top_k: int = 5) -> Prediction:
        """The ``top_k`` (label, probability) pairs of one probability row, most likely first."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer; got {top_k!r}")
        row = np.asarray(probabilities, dtype=np.float32).reshape(-1)
        order = np.argsort(-row, kind="stable")[:top_k]
        return [(self.labels[index], float(row[index])) for index in order]

    def is_unsure(self, prediction: Prediction) -> bool:
        """Whether an answer's top-1 probability is below the "not sure" threshold: the image
        is probably not a single letter the model can read (say :data:`UNSURE_MESSAGE`)."""
        return bool(prediction) and prediction[0][1] < self.unsure_threshold

    def preprocess(self, source: Source, *, name: str | None = None) -> np.ndarray:
        """The shared preprocessing with this model's settings; raises ImageError."""
        return preprocess_with(self.settings, source, name=name)

    def predict(self, source: Source, top_k: int = 5, name: str | None = None) -> Prediction:
        """Top-k (label, probability) pairs for one image: a path, encoded bytes or an array.

        Raises:
            handwriting.imaging.ImageError: the image cannot be read or holds no ink (the
            message names ``name``, else the path).
        """
        return self.top(self.probabilities(self.preprocess(source, name=name)[None]), top_k)

    def predict_batch(self, sources: Sequence[Source], top_k: int = 5,
                      names: Sequence[str | None] | None = None) -> list[Prediction]:
        """:meth:`predict` for many images, preprocessed one by one and run in one model call.

        The first image that fails raises its ImageError; to go on past bad files, preprocess
        them yourself and call :meth:`probabilities` (as the ``handwriting predict`` command
        does).
        """
        names = list(names) if names is not None else [None] * len(sources)
        if len(names) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(names)} names")
        if len(sources) == 0:
            return []
        images = np.stack([self.preprocess(source, name=name)
                           for source, name in zip(sources, names)])
        return [self.top(row, top_k) for row in self.probabilities(images)]


# -------------------------------------------------------------------------------------------


def write_serving_dir(directory: str | os.PathLike, model_path_or_keras_model: Any,
                      settings: PreprocessSettings | None = None, *,
                      calibration_images: np.ndarray | None = None,
                      description: dict[str, Any] | None = None,
                      unsure_threshold: float = 0.0) -> Path:
    """Write a self-contained serving folder for :meth:`Predictor.from_directory`.

    Writes ``model.keras`` (a copy of the Keras model: the fallback), ``model.onnx``,
    ``model.int8.onnx`` (see :func:`~handwriting.serving.onnx_export.quantize_int8`; pass
    ``calibration_images`` to let it consider static quantisation) and ``serving.json`` with
    the preprocessing settings, the labels and ``description`` (under ``"model"``: what the
    model is, e.g. its name and validation score) and ``unsure_threshold`` (see
    :class:`Predictor`). Returns the folder.
    """
    directory = Path(directory)
    source = model_path_or_keras_model
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise _missing(Path(source), "Keras model file")
    model = load_keras_model(source)
    size = image_size_of(model)
    settings = settings or PreprocessSettings(image_size=size)
    if settings.image_size != size:
        raise ValueError(f"the model takes {size}x{size} images but settings.image_size is "
                         f"{settings.image_size}")
    if model.output_shape[-1] != labels.NUM_CLASSES:
        raise ValueError(f"the model has {model.output_shape[-1]} outputs; expected "
                         f"{labels.NUM_CLASSES}")
    directory.mkdir(parents=True, exist_ok=True)
    keras_path = directory / KERAS_FILE
    if isinstance(source, (str, os.PathLike)):
        if Path(source).resolve() != keras_path.resolve():
            shutil.copyfile(source, keras_path)
    else:
        save_keras(model, keras_path)
    onnx_path = export_onnx(model, directory / ONNX_FILE)
    quantize_int8(onnx_path, directory / INT8_FILE, calibration_images)
    config = {"image_size": settings.image_size, "margin": settings.margin,
              "max_pixels": settings.max_pixels, "labels": list(labels.CLASSES),
              "unsure_threshold": float(unsure_threshold)}
    if description:
        config["model"] = description
    (directory / SERVING_JSON).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory
