"""Keras model -> ONNX (float32), -> int8 ONNX, and how closely an export follows its model.

* :func:`export_onnx` writes the model's forward pass as ONNX through Keras 3's
  ``model.export(format="onnx")`` (tf2onnx underneath), with one input ``image`` of shape
  ``(batch, S, S, 1)`` float32 and one output ``probabilities`` of shape ``(batch, 52)``; the
  class labels and the image size are stored in the file's metadata, and the graph is put in
  its canonical form (:mod:`handwriting.serving.onnx_graph`: the same model, the same bytes).
* :func:`quantize_int8` makes an int8 copy with ONNX Runtime's quantisation tools: dynamic
  quantisation (weights int8, activations quantised on the fly); given real preprocessed
  images it also tries static quantisation calibrated on them and keeps whichever follows the
  float model more closely.
* :func:`agreement` compares an ONNX file with the Keras model on images, batched: the share
  of images whose top-1 class matches and the largest absolute probability difference.

TensorFlow, Keras, ONNX and ONNX Runtime are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from handwriting import labels
from handwriting.keras_inference import (
    BATCH_SIZE,
    ModelOrPath,
    as_model_input,
    image_size_of,
    keras_probabilities,
    load_keras_model,
    missing_model,
)
from handwriting.serving.onnx_graph import (
    INPUT_NAME,
    canonical_names,
    captured_constants,
    inline_constants,
    tidy,
)

# ONNX opset of the exports: ONNX Runtime 1.17+ runs it and it has every op tf2onnx needs here.
OPSET = 17
# tf2onnx's switch for catching a failing graph optimizer (tf2onnx.constants names it)
TF2ONNX_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"


@contextlib.contextmanager
def _tf2onnx_quiet_and_strict() -> Iterator[None]:
    """For the length of an export: silence tf2onnx's INFO chatter, and let a failing graph
    optimizer raise instead of being skipped with a warning. Catching costs a deep copy of the
    graph, weights included, before each of its dozen optimizers, round after round (the
    export stage: 122 s with it, 115 s without, one run each); the ONNX files are the same
    bytes, since no optimizer fails on our models."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    catch = os.environ.get(TF2ONNX_CATCH_ERRORS)
    logger.setLevel(logging.ERROR)
    os.environ[TF2ONNX_CATCH_ERRORS] = "FALSE"
    try:
        yield
    finally:
        logger.setLevel(level)
        if catch is None:
            os.environ.pop(TF2ONNX_CATCH_ERRORS, None)
        else:
            os.environ[TF2ONNX_CATCH_ERRORS] = catch


def _save_atomically(proto, path: Path) -> None:
    """Save beside the target, then rename: a reader never sees a half-written model."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        onnx.save(proto, str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def export_onnx(model_or_path: ModelOrPath, path: str | os.PathLike, *,
                opset: int = OPSET) -> Path:
    """Write a Keras model (or a ``.keras`` file) as ONNX to ``path``; returns the path.

    The ONNX model takes ``image``: (batch, S, S, 1) float32 and returns ``probabilities``:
    (batch, 52). Raises FileNotFoundError for a missing ``.keras`` file and ValueError for a
    model that does not take square grayscale images or return 52 probabilities.
    """
    import onnx
    import tensorflow as tf

    model = load_keras_model(model_or_path)
    size = image_size_of(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = tf.TensorSpec((None, size, size, 1), tf.float32, name=INPUT_NAME)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with _tf2onnx_quiet_and_strict():
            model.export(str(raw), format="onnx", verbose=False, input_signature=[spec],
                         opset_version=opset)
        proto = onnx.load(str(raw))
    if len(proto.graph.input) > 1:
        inline_constants(proto, captured_constants(model, spec))
    tidy(proto, model, size)
    canonical_names(proto)
    onnx.checker.check_model(proto)
    _save_atomically(proto, path)
    return path


def open_session(path: str | os.PathLike, *, intra_op_threads: int = 1,
                 inter_op_threads: int = 1):
    """An ONNX Runtime CPU session with a fixed number of threads (1: best single-image
    latency, and no contention between concurrent requests)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise missing_model(path, "ONNX model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads)
    options.inter_op_num_threads = int(inter_op_threads)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def _run_session(session, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: images[start:start + batch_size]})[0]
               for start in range(0, len(images), batch_size)]
    if not outputs:
        return np.zeros((0, labels.NUM_CLASSES), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32, copy=False)


class _CalibrationReader:
    """Feeds preprocessed images to ONNX Runtime's static-quantisation calibration."""

    def __init__(self, images: np.ndarray, batch_size: int = 64):
        self._batches = [{INPUT_NAME: images[start:start + batch_size]}
                         for start in range(0, len(images), batch_size)]
        self._index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self._batches):
            return None
        self._index += 1
        return self._batches[self._index - 1]

    def rewind(self) -> None:
        self._index = 0


def _final_matmul(proto) -> list[str]:
    """Name of the last MatMul/Gemm node (the classifier feeding the softmax), if any."""
    names = [node.name for node in proto.graph.node if node.op_type in ("MatMul", "Gemm")]
    return names[-1:]


def _set_metadata(path: Path, **entries: str) -> None:
    import onnx

    proto = onnx.load(str(path))
    existing = {entry.key: entry for entry in proto.metadata_props}
    for key, value in entries.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def quantize_int8(onnx_path: str | os.PathLike, int8_path: str | os.PathLike,
                  calibration_images: np.ndarray | None = None, *,
                  method: str = "auto") -> Path:
    """Write an int8-quantised copy of an ONNX model; returns ``int8_path``.

    ``method``:

    * ``"dynamic"``: int8 weights for the matrix products of the dense layers, activations
      quantised per call from their actual range (recurrent layers, which tf2onnx writes as
      ``Loop`` ops, stay float). Needs no data. Convolutions stay float too: quantised
      dynamically (ConvInteger) they ran 3x slower than in float on the CPU and agreed less
      with the float model.
    * ``"static"``: QDQ quantisation with activation ranges calibrated (min/max) on
      ``calibration_images``, weights per channel; the final classifier stays float (quantising
      it cost the most agreement).
    * ``"auto"`` (default): dynamic without calibration images. With them, both are built and
      the one whose top-1 agrees more often with the float model on held-out calibration
      images is kept, dynamic on a tie. (For the tuned lenet5 on EMNIST images dynamic won:
      99.2% against 97.9% top-1 agreement.)

    ``calibration_images``: (N, S, S) preprocessed images, a few hundred real ones. The method
    used is stored in the int8 file's metadata under ``quantization``.
    """
    from onnxruntime import quantization as q

    if method not in ("auto", "dynamic", "static"):
        raise ValueError(f"method must be 'auto', 'dynamic' or 'static'; got {method!r}")
    onnx_path, int8_path = Path(onnx_path), Path(int8_path)
    if not onnx_path.is_file():
        raise missing_model(onnx_path, "ONNX model")
    images = None if calibration_images is None else as_model_input(calibration_images)
    if images is not None and len(images) == 0:
        raise ValueError("calibration_images is empty; pass some preprocessed images, or None "
                         "for dynamic quantisation")
    if method == "static" and images is None:
        raise ValueError("static quantisation needs calibration_images")
    if method == "auto":
        method = "dynamic" if images is None else "auto"
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=int8_path.parent, prefix=".quantize-") as tmp:
        import onnx

        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph cleanup first, as ONNX Runtime recommends (symbolic shape
        # inference would need sympy; ONNX's own shape inference is enough for these models).
        q.quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        candidates: dict[str, Path] = {}
        if method in ("dynamic", "auto"):
            candidates["dynamic"] = Path(tmp) / "dynamic.onnx"
            # Matrix products only: dynamically quantised convolutions (ConvInteger) measured
            # 3x slower than float ones and agreed less; the dense layers hold most weights.
            q.quantize_dynamic(str(prepared), str(candidates["dynamic"]),
                               weight_type=q.QuantType.QInt8,
                               op_types_to_quantize=["MatMul", "Gemm"])
        if method in ("static", "auto"):
            assert images is not None  # checked above: static needs calibration images
            # "auto" calibrates on the first half and compares on the second.
            calibrate = images if method == "static" or len(images) < 2 else \
                images[: len(images) // 2]
            candidates["static"] = Path(tmp) / "static.onnx"
            q.quantize_static(
                str(prepared), str(candidates["static"]), _CalibrationReader(calibrate),
                quant_format=q.QuantFormat.QDQ, per_channel=True,
                activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax,
                op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                nodes_to_exclude=_final_matmul(onnx.load(str(prepared))))
        chosen = method
        if method == "auto" and images is not None:
            held_out = images[len(images) // 2:]
            reference = _run_session(open_session(onnx_path), held_out).argmax(1)
            score = {name: float(np.mean(_run_session(open_session(path), held_out).argmax(1)
                                         == reference))
                     for name, path in candidates.items()}
            chosen = "static" if score["static"] > score["dynamic"] else "dynamic"
        _set_metadata(candidates[chosen], quantization=chosen)
        os.replace(candidates[chosen], int8_path)
    return int8_path


def agreement(keras_model: ModelOrPath, onnx_path: str | os.PathLike, images: np.ndarray, *,
              batch_size: int = BATCH_SIZE) -> dict[str, float]:
    """How closely an ONNX model follows its Keras model on (N, S, S[, 1]) images.

    Returns ``{"images": N, "top1_agreement": share of images whose argmax matches,
    "max_abs_diff": largest absolute probability difference, "mean_abs_diff": mean one}``.
    """
    batch = as_model_input(images)
    expected = keras_probabilities(load_keras_model(keras_model), batch, batch_size)
    return agreement_with(expected, onnx_path, batch, batch_size=batch_size)


def agreement_with(expected: np.ndarray, onnx_path: str | os.PathLike, images: np.ndarray, *,
                   batch_size: int = BATCH_SIZE) -> dict[str, float]:
    """:func:`agreement` against probabilities the Keras model already gave for ``images``
    (so that one model's float and int8 exports are checked with one Keras pass)."""
    batch = as_model_input(images)
    if len(expected) != len(batch):
        raise ValueError(f"{len(expected)} expected probabilities for {len(batch)} images")
    session = open_session(onnx_path, intra_op_threads=max(1, os.cpu_count() or 1))
    actual = _run_session(session, batch, batch_size)
    if len(batch) == 0:
        return {"images": 0, "top1_agreement": float("nan"), "max_abs_diff": float("nan"),
                "mean_abs_diff": float("nan")}
    difference = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    return {
        "images": int(len(batch)),
        "top1_agreement": float(np.mean(expected.argmax(1) == actual.argmax(1))),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
    }
