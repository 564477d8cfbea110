"""Keras model -> ONNX (float32), -> int8 ONNX, and how closely an export follows its model.

* :func:`export_onnx` writes the model's forward pass as ONNX through Keras 3's
  ``model.export(format="onnx")`` (tf2onnx underneath), with one input ``image`` of shape
  ``(batch, S, S, 1)`` float32 and one output ``probabilities`` of shape ``(batch, 52)``; the
  class labels and the image size are stored in the file's metadata.
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
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
BATCH_DIM = "batch"
# ONNX opset of the exports: ONNX Runtime 1.17+ runs it and it has every op tf2onnx needs here.
OPSET = 17


@contextlib.contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    """Silence tf2onnx's INFO chatter for the length of an export."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _rename(graph, old: str, new: str) -> None:
    """Rename a value everywhere in a graph (node inputs and outputs, graph outputs)."""
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.output) + list(graph.input):
        if value.name == old:
            value.name = new


def _tidy(proto, model, image_size: int) -> None:
    """Name the output ``probabilities``, the batch dimension ``batch``; add metadata."""
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {len(graph.input)} inputs "
                         f"and {len(graph.output)} outputs")
    _rename(graph, graph.input[0].name, INPUT_NAME)
    _rename(graph, graph.output[0].name, OUTPUT_NAME)
    for value in (graph.input[0], graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM
    output_shape = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim[1:]]
    if output_shape != [labels.NUM_CLASSES]:
        raise ValueError(f"model {model.name!r} outputs shape {output_shape}; expected "
                         f"[{labels.NUM_CLASSES}] class probabilities")
    metadata = {"labels": json.dumps(list(labels.CLASSES)), "image_size": str(image_size),
                "keras_model": model.name}
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"{model.name}: (batch, {image_size}, {image_size}, 1) float32 images "
                        f"in [0, 1], ink = 1 -> (batch, {labels.NUM_CLASSES}) probabilities of "
                        "A-Z then a-z")


def _subgraphs(node) -> Iterator:
    """The graphs held in a node's attributes (a ``Loop``'s body, an ``If``'s branches)."""
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs


def _canonical_names(proto) -> None:
    """Make an export's bytes depend only on what its graph computes, not on tf2onnx's names.

    tf2onnx names the nodes, constants and unnamed dimensions it creates from counters that
    run on through a process (``Transpose__44``, ``unk__579``) and orders nodes and constants
    by such names, so two exports of the same model differed in their bytes. Here the nodes
    are first put in an order fixed by what they compute (:func:`_canonical_order`); then
    every value other than ``image`` and ``probabilities`` becomes ``t<n>`` in the order the
    nodes first use it (subgraphs included: they refer to values of the graph around them by
    name), the n-th node becomes ``<op type>_<n>``, constants are stored in that order, and
    constants no node uses are dropped. Unnamed dimensions become ``d<n>``, and documentation
    strings that name the traced TensorFlow function (``__inference___call___1906``) are
    emptied.
    """
    mapping: dict[str, str] = {INPUT_NAME: INPUT_NAME, OUTPUT_NAME: OUTPUT_NAME, "": ""}

    def claim(name: str) -> None:
        if name not in mapping:
            mapping[name] = f"t{len(mapping) - 3}"

    def collect(graph) -> None:
        stored = {value.name for value in graph.initializer}
        for value in graph.input:
            if value.name not in stored:
                claim(value.name)
        for node in graph.node:
            for name in node.input:
                claim(name)
            for subgraph in _subgraphs(node):
                collect(subgraph)
            for name in node.output:
                claim(name)
        for value in graph.output:
            claim(value.name)

    nodes = 0
    dims: dict[str, str] = {}

    def rename(graph) -> None:
        nonlocal nodes
        graph.doc_string = ""
        used = [value for value in graph.initializer if value.name in mapping]
        used.sort(key=lambda value: int(mapping[value.name][1:]))
        del graph.initializer[:]
        graph.initializer.extend(used)
        kept = [value for value in graph.value_info if value.name in mapping]
        kept.sort(key=lambda value: int(mapping[value.name][1:]))
        del graph.value_info[:]
        graph.value_info.extend(kept)
        for value in list(graph.input) + list(graph.output) + list(graph.value_info) \
                + list(graph.initializer):
            value.name = mapping[value.name]
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            for dim in _dims(value.type):
                if dim.HasField("dim_param") and dim.dim_param != BATCH_DIM:
                    dim.dim_param = dims.setdefault(dim.dim_param, f"d{len(dims)}")
        for node in graph.node:
            node.name, node.doc_string = f"{node.op_type}_{nodes}", ""
            if not node.domain:
                node.ClearField("domain")  # written as "" by some passes, absent by others
            nodes += 1
            node.input[:] = [mapping[name] for name in node.input]
            node.output[:] = [mapping[name] for name in node.output]
            for index, subgraph in enumerate(_subgraphs(node)):
                subgraph.name = f"{node.name}_graph{index}"
                rename(subgraph)

    if any(graph.sparse_initializer for graph in _all_graphs(proto.graph)):
        raise ValueError("the exported graph has sparse constants, which this export does "
                         "not expect")
    _canonical_order(proto.graph, {})
    collect(proto.graph)
    rename(proto.graph)


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def _free_names(graph) -> set[str]:
    """The values a graph (a loop body) uses from the graphs around it."""
    defined = {value.name for value in list(graph.input) + list(graph.initializer)}
    used: set[str] = set()
    for node in graph.node:
        used.update(node.input)
        for subgraph in _subgraphs(node):
            used |= _free_names(subgraph)
        defined.update(node.output)
    return used - defined - {""}


def _canonical_order(graph, known: dict[str, str]) -> list[str]:
    """Put a graph's nodes (and its subgraphs') in an order that depends only on what they
    compute; returns the digests of the graph's outputs.

    tf2onnx lists the nodes in a topological order that follows its counter-numbered names,
    so one model's export listed them differently from one run to the next. Each value gets a
    digest of what computes it (a constant: its contents; a node's output: the node's type,
    attributes and input digests, and its position), and the nodes are sorted topologically,
    the one with the smallest digest first among those ready; then the outputs that are
    copies of one value are listed in that order (:func:`_order_aliased_outputs`). ``known``
    maps the values of the graphs around this one to their digests.
    """
    known = dict(known)
    for index, value in enumerate(graph.input):
        known[value.name] = _digest("input", index)
    for value in graph.initializer:
        contents = type(value)()
        contents.CopyFrom(value)
        contents.ClearField("name")
        known[value.name] = hashlib.blake2b(contents.SerializeToString(),
                                            digest_size=16).hexdigest()
    needs = [(set(node.input) | set().union(*map(_free_names, _subgraphs(node)))) - {""}
             for node in graph.node]
    pending, ordered = list(range(len(graph.node))), []
    signatures: dict[int, str] = {}  # of the nodes whose inputs are known
    while pending:
        ready = [index for index in pending if needs[index] <= known.keys()]
        if not ready:
            raise ValueError(f"graph {graph.name!r} is not a directed acyclic graph of its "
                             "values; cannot order it")
        for index in ready:
            if index not in signatures:
                signatures[index] = _node_digest(graph.node[index], known)
        chosen = min(ready, key=lambda index: (signatures[index], index))
        node = graph.node[chosen]
        for position, name in enumerate(node.output):
            known[name] = _digest(signatures[chosen], position)
        pending.remove(chosen)
        ordered.append(node)
    copies = [type(node)() for node in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    _order_aliased_outputs(graph)
    return [known.get(value.name, value.name) for value in graph.output]


def _node_digest(node, known: dict[str, str]) -> str:
    """A digest of what a node computes: its type, attributes (subgraphs by what they
    compute) and the digests of its inputs."""
    attributes = []
    for attribute in node.attribute:
        if attribute.HasField("g") or len(attribute.graphs):
            outputs = [_canonical_order(subgraph, known) for subgraph in _subgraphs(node)]
            attributes.append((attribute.name, outputs))
        else:
            attributes.append((attribute.name, attribute.SerializeToString()))
    return _digest(node.op_type, node.domain, sorted(attributes),
                   [known.get(name, "") for name in node.input])


def _order_aliased_outputs(graph) -> None:
    """Outputs that are copies of one value (through ``Identity`` nodes) take the copies in
    graph order. tf2onnx gives a ``Loop`` body's carried state and its scan output two such
    copies of one tensor and lists them in either order from one export to the next; which
    copy is listed where does not change what the graph computes."""
    source = {node.output[0]: node.input[0] for node in graph.node
              if node.op_type == "Identity"}
    produced = {name: index for index, node in enumerate(graph.node) for name in node.output}

    def root(name: str) -> str:
        while name in source:
            name = source[name]
        return name

    places: dict[str, list[int]] = {}
    for index, value in enumerate(graph.output):
        places.setdefault(root(value.name), []).append(index)
    for indices in places.values():
        names = sorted((graph.output[i].name for i in indices),
                       key=lambda name: produced.get(name, -1))
        for index, name in zip(indices, names):
            graph.output[index].name = name


def _dims(value_type) -> Iterator:
    """The dimensions of a value's type, through sequence and optional wrappers."""
    kind = value_type.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        yield from getattr(value_type, kind).shape.dim
    elif kind in ("sequence_type", "optional_type"):
        yield from _dims(getattr(value_type, kind).elem_type)


def _all_graphs(graph) -> Iterator:
    """A graph and every graph nested in its nodes."""
    yield graph
    for node in graph.node:
        for subgraph in _subgraphs(node):
            yield from _all_graphs(subgraph)


def _captured_constants(model, spec) -> dict[str, np.ndarray]:
    """The constant tensors (not variables) that the traced model captures, by the name of
    their placeholder inside the graph, such as the fixed ImageNet mean of the VGG models'
    Normalization layer. tf2onnx leaves them as extra graph inputs; their names are the same
    in this trace as in Keras' export trace."""
    import tensorflow as tf

    concrete = tf.function(lambda images: model(images, training=False)) \
        .get_concrete_function(spec)
    return {internal.name: external.numpy() for external, internal in concrete.graph.captures
            if external.dtype != tf.resource}


def _inline_constants(proto, constants: dict[str, np.ndarray]) -> None:
    """Turn the graph inputs that are captured constants into initializers, leaving the image
    as the only input; ValueError names any other extra input."""
    from onnx import numpy_helper

    graph = proto.graph
    extra = [value for value in graph.input if value.name in constants]
    unknown = [value.name for value in graph.input if value.name not in constants]
    if len(unknown) != 1:
        raise ValueError(f"the exported graph has inputs {unknown} besides its known constants; "
                         "expected exactly one image input")
    for value in extra:
        graph.initializer.append(numpy_helper.from_array(constants[value.name], value.name))
        graph.input.remove(value)


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
        with _quiet_tf2onnx():
            model.export(str(raw), format="onnx", verbose=False, input_signature=[spec],
                         opset_version=opset)
        proto = onnx.load(str(raw))
    if len(proto.graph.input) > 1:
        _inline_constants(proto, _captured_constants(model, spec))
    _tidy(proto, model, size)
    _canonical_names(proto)
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
