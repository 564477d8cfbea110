"""The canonical form of an exported ONNX graph: one image input and one ``probabilities``
output with a named batch dimension and the labels in its metadata (:func:`tidy`), captured
constants inlined as initializers (:func:`inline_constants`), and value names that depend only
on what the graph computes (:func:`canonical_names`), so that the same model gives the same
bytes whatever names tf2onnx chose. ONNX is imported inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from handwriting import labels

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
BATCH_DIM = "batch"


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


def tidy(proto, model, image_size: int) -> None:
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


def subgraphs(node) -> Iterator:
    """The graphs held in a node's attributes (a ``Loop``'s body, an ``If``'s branches)."""
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs


def canonical_names(proto) -> None:
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
            for subgraph in subgraphs(node):
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
            for index, subgraph in enumerate(subgraphs(node)):
                subgraph.name = f"{node.name}_graph{index}"
                rename(subgraph)

    if any(graph.sparse_initializer for graph in all_graphs(proto.graph)):
        raise ValueError("the exported graph has sparse constants, which this export does "
                         "not expect")
    _canonical_order(proto.graph, {})
    collect(proto.graph)
    rename(proto.graph)


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def free_names(graph) -> set[str]:
    """The values a graph (a loop body) uses from the graphs around it."""
    defined = {value.name for value in list(graph.input) + list(graph.initializer)}
    used: set[str] = set()
    for node in graph.node:
        used.update(node.input)
        for subgraph in subgraphs(node):
            used |= free_names(subgraph)
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
    needs = [(set(node.input) | set().union(*map(free_names, subgraphs(node)))) - {""}
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
            outputs = [_canonical_order(subgraph, known) for subgraph in subgraphs(node)]
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


def all_graphs(graph) -> Iterator:
    """A graph and every graph nested in its nodes."""
    yield graph
    for node in graph.node:
        for subgraph in subgraphs(node):
            yield from all_graphs(subgraph)


def captured_constants(model, spec) -> dict[str, np.ndarray]:
    """The constant tensors (not variables) that the traced model captures, by the name of
    their placeholder inside the graph, such as the fixed ImageNet mean of the VGG models'
    Normalization layer. tf2onnx leaves them as extra graph inputs; their names are the same
    in this trace as in Keras' export trace."""
    import tensorflow as tf

    concrete = tf.function(lambda images: model(images, training=False)) \
        .get_concrete_function(spec)
    return {internal.name: external.numpy() for external, internal in concrete.graph.captures
            if external.dtype != tf.resource}


def inline_constants(proto, constants: dict[str, np.ndarray]) -> None:
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
