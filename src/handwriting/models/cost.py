"""What one prediction costs, counted from the model graph: multiply-adds per image.

A count is the same on every machine and under any load, so a choice made on it (the
champion's compute budget, :mod:`handwriting.evaluation.champion`) is deterministic; measured
latencies stay reported figures. Counted: convolutions, dense layers (per time step when
applied to a sequence), LSTM and GRU layers (per step: gates x (inputs + units) x units, twice
when bidirectional) and dot products; normalisation, pooling and activations are left out
(they are a few per cent at most). Nested models (the VGG-16 base) are counted layer by layer.
"""

from __future__ import annotations

import math
from typing import Any

# Gates per recurrent cell: input, forget, cell, output (LSTM); update, reset, new (GRU).
RECURRENT_GATES = {"LSTM": 4, "GRU": 3}


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(size) for size in tensor.shape[1:])


def _layer_multiply_adds(layer: Any) -> int:
    kind = type(layer).__name__
    if hasattr(layer, "layers"):  # a nested model
        return sum(_layer_multiply_adds(inner) for inner in layer.layers)
    if kind == "Conv2D":
        out = _shape(layer.output)
        kernel = layer.kernel.shape  # (kh, kw, in / groups, out)
        return math.prod(out) * int(kernel[0]) * int(kernel[1]) * int(kernel[2])
    if kind == "Dense":
        inputs = _shape(layer.input)
        return math.prod(inputs[:-1]) * inputs[-1] * int(layer.units)
    if kind in RECURRENT_GATES:
        steps, features = _shape(layer.input)
        units = int(layer.units)
        return steps * RECURRENT_GATES[kind] * (features + units) * units
    if kind == "Bidirectional":
        steps, features = _shape(layer.input)
        units = int(layer.forward_layer.units)
        gates = RECURRENT_GATES[type(layer.forward_layer).__name__]
        return 2 * steps * gates * (features + units) * units
    if kind == "Dot":  # attention pooling: each output sums over the contracted axis
        first = _shape(layer.input[0])
        axis = layer.axes if isinstance(layer.axes, int) else layer.axes[0]
        return math.prod(_shape(layer.output)) * first[axis - 1]
    return 0


def multiply_adds(model: Any) -> int:
    """Multiply-adds one image costs in ``model`` (a built Keras model)."""
    return sum(_layer_multiply_adds(layer) for layer in model.layers)


def mega_multiply_adds(model: Any) -> float:
    """:func:`multiply_adds` in millions, rounded to 3 decimals (the unit of the budget)."""
    return round(multiply_adds(model) / 1e6, 3)
