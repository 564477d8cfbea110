"""The soft-vote ensemble as one Keras model, so it can be exported and served like any model.

The evaluate stage averages the tuned models' probabilities in NumPy
(:func:`handwriting.evaluation.metrics.soft_vote`); :func:`build_soft_vote_ensemble` builds the
same weighted average as layers (each member's output scaled by its normalised weight, then
summed), which ONNX export, the Predictor and the app handle without special cases.
"""

from __future__ import annotations

from collections.abc import Sequence

from handwriting import labels
from handwriting.serving.onnx_export import image_size_of


def build_soft_vote_ensemble(members: Sequence, weights: Sequence[float] | None = None, *,
                             name: str = "ensemble"):
    """One Keras model whose output is the weighted mean of the members' probabilities.

    ``members``: Keras models that all take the same (None, S, S, 1) images and return 52
    probabilities. ``weights``: one non-negative number per member, not all zero (default:
    equal); they are normalised to sum to 1. Members that share a name are renamed
    (``member_<i>_<name>``), as a model cannot hold two layers of the same name. Raises
    ValueError for an empty or mismatched list of members or bad weights.
    """
    import keras

    members = list(members)
    if not members:
        raise ValueError("an ensemble needs at least one member model")
    weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"ensemble weights must be {len(members)} non-negative numbers that "
                         f"are not all 0, got {weights}")
    size = image_size_of(members[0])
    for member in members:
        if image_size_of(member) != size:
            raise ValueError(f"member {member.name!r} takes {image_size_of(member)}-pixel "
                             f"images, the first member {size}-pixel ones")
        if member.output_shape[-1] != labels.NUM_CLASSES:
            raise ValueError(f"member {member.name!r} has {member.output_shape[-1]} outputs; "
                             f"expected {labels.NUM_CLASSES}")
    total = sum(weights)
    inputs = keras.Input((size, size, 1), name="image")
    names = [member.name for member in members]
    scaled = []
    for index, (member, weight) in enumerate(zip(members, weights)):
        if names.count(member.name) > 1:
            # Nested models need unique names inside the ensemble.
            member.name = f"member_{index}_{member.name}"
        scaled.append(keras.layers.Rescaling(weight / total, name=f"weight_{index}")(
            member(inputs)))
    outputs = scaled[0] if len(scaled) == 1 else keras.layers.Add(name="mean")(scaled)
    return keras.Model(inputs, outputs, name=name)
