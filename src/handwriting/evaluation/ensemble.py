"""The ensemble of the tuned models, in one place: its members' weights, the vote in NumPy and
the same vote as one Keras model. Used by evaluate (scores it), export (serves it when it is
the champion) and the app (runs it), so all three mean the same ensemble, as params.yaml's
``evaluate`` section defines it (:class:`~handwriting.params.Evaluate`):

* ``evaluate.ensemble``: ``soft`` (weighted average of the members' probabilities) or ``hard``
  (majority vote of their top-1 letters).
* ``evaluate.ensemble_weighting``: ``val_accuracy`` (each member weighted by its validation
  accuracy, from ``metrics/train/<arch>-tuned.json``) or ``none`` (equal weights).

A weight that cannot be read is an :class:`EnsembleError` naming the file and the fix: it
never silently becomes an equal weight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from handwriting import labels
from handwriting.params import ENSEMBLE_KINDS, ENSEMBLE_WEIGHTINGS


class EnsembleError(ValueError):
    """The ensemble cannot be built as params.yaml defines it."""


def member_weights(weighting: str, members: Sequence[str],
                   train_metrics_dir: Path) -> list[float] | None:
    """The vote weights of ``members`` (``<arch>-tuned`` names): their validation accuracy
    (``val_accuracy``), or None for equal weights (``none``)."""
    if weighting not in ENSEMBLE_WEIGHTINGS:
        raise EnsembleError(f"ensemble weighting {weighting!r}; choose one of "
                            f"{', '.join(ENSEMBLE_WEIGHTINGS)}")
    if weighting == "none":
        return None
    weights = []
    for member in members:
        path = Path(train_metrics_dir) / f"{member}.json"
        try:
            value = float(json.loads(path.read_text(encoding="utf-8"))["val_accuracy"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise EnsembleError(f"{path}: no readable val_accuracy for the ensemble's weight of "
                                f"{member} ({type(error).__name__}); run `dvc repro` to tune "
                                "it, or set evaluate.ensemble_weighting: none") from None
        if not math.isfinite(value) or value <= 0:
            raise EnsembleError(f"{path}: val_accuracy is {value}, not a usable weight; run "
                                "`dvc repro` to tune it again")
        weights.append(value)
    return weights


def soft_vote(probabilities: list[np.ndarray], weights: Sequence[float] | None = None
              ) -> np.ndarray:
    """Weighted average of the models' probabilities (equal weights by default)."""
    stacked = np.stack(probabilities)
    w = np.ones(len(probabilities)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(probabilities),) or (w < 0).any() or w.sum() == 0:
        raise ValueError(f"ensemble weights must be {len(probabilities)} non-negative numbers "
                         f"that are not all 0, got {weights}")
    return np.tensordot(w / w.sum(), stacked, axes=1)


def hard_vote(probabilities: list[np.ndarray]) -> np.ndarray:
    """Majority vote of the models' top-1 classes, as one-hot 'probabilities' (share of votes);
    ties go to the class with the highest summed probability."""
    stacked = np.stack(probabilities)
    votes = np.zeros(stacked.shape[1:])
    rows = np.arange(stacked.shape[1])
    for member in stacked:
        votes[rows, member.argmax(axis=1)] += 1
    votes += 1e-6 * stacked.sum(axis=0)  # tie-break
    return votes / votes.sum(axis=1, keepdims=True)


def vote(kind: str, probabilities: list[np.ndarray],
         weights: Sequence[float] | None = None) -> np.ndarray:
    """The ensemble's answer: :func:`soft_vote` (with ``weights``) or :func:`hard_vote`."""
    if kind not in ENSEMBLE_KINDS:
        raise EnsembleError(f"ensemble kind {kind!r}; choose one of {', '.join(ENSEMBLE_KINDS)}")
    return soft_vote(probabilities, weights) if kind == "soft" else hard_vote(probabilities)


def build_soft_vote_ensemble(members: Sequence, weights: Sequence[float] | None = None, *,
                             name: str = "ensemble"):
    """One Keras model whose output is the weighted mean of the members' probabilities: the
    soft vote as layers (each member's output scaled by its normalised weight, then summed),
    which ONNX export, the Predictor and the app handle like any model.

    ``members``: Keras models that all take the same (None, S, S, 1) images and return 52
    probabilities. ``weights``: one non-negative number per member, not all 0 (default:
    equal). Members that share a name are renamed (``member_<i>_<name>``), as a model cannot
    hold two layers of the same name. Raises ValueError for an empty or mismatched list of
    members or bad weights.
    """
    import keras

    members = list(members)
    if not members:
        raise ValueError("an ensemble needs at least one member model")
    weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"ensemble weights must be {len(members)} non-negative numbers that "
                         f"are not all 0, got {weights}")
    from handwriting.keras_inference import image_size_of

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


def ensemble_weights(weighting: str, architectures: list[str] | tuple[str, ...],
                     train_metrics_dir: Path) -> list[float] | None:
    """The vote weights of the tuned models of ``architectures``, in that order, by
    ``weighting`` (:attr:`handwriting.params.Evaluate.ensemble_weighting`)."""
    from handwriting.models.reference import tuned_names

    return member_weights(weighting, tuned_names(architectures), train_metrics_dir)
