"""Predictions for the app: uploads checked, images run through the shared preprocessing and a
:class:`~handwriting.serving.predictor.Predictor` (or the ensemble's soft vote of several).

Nothing here imports Streamlit or TensorFlow; the models come in as Predictor objects.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

from handwriting.evaluation.ensemble import vote
from handwriting.imaging import ImageError, PreprocessSettings, preprocess_with
from handwriting.serving.predictor import Prediction, Predictor

TOP_K = 5


@dataclass(frozen=True)
class InputImage:
    """An image to classify: a display name and its encoded bytes (PNG or JPEG)."""

    name: str
    data: bytes

    @property
    def digest(self) -> str:
        """A short content hash: a stable widget key for this image."""
        return hashlib.sha256(self.data).hexdigest()[:12]


@dataclass(frozen=True)
class Outcome:
    """One model's answer for one image."""

    model: str
    top: Prediction            # the TOP_K (letter, probability) pairs, most likely first
    model_input: np.ndarray    # the preprocessed (S, S) image the model saw, ink = 1
    unsure: bool = False       # below the model's "not sure" threshold (the served champion's)

    @property
    def letter(self) -> str:
        """The predicted letter."""
        return self.top[0][0]

    @property
    def confidence(self) -> float:
        """The predicted letter's probability."""
        return self.top[0][1]


def upload_problem(name: str, size: int, *, max_mb: int, types: Sequence[str]) -> str | None:
    """Why an uploaded file cannot be used (wrong type, too big), or None when it may be tried.

    The browser checks both as well, but only on a best-effort basis, so they are checked
    again here.
    """
    suffix = PurePath(name).suffix.lower().lstrip(".")
    if suffix not in types:
        return (f"{name}: {suffix or 'no'} file type is not accepted; upload a "
                f"{', '.join(t.upper() for t in types)} image")
    if size > max_mb * 2**20:
        return (f"{name}: {size / 2**20:.1f} MB is over the {max_mb} MB limit; crop or downscale "
                "the image and upload it again")
    if size == 0:
        return f"{name}: the file is empty (0 bytes); re-save the image and upload it again"
    return None


def image_problem(image: InputImage, settings: PreprocessSettings | None = None) -> str | None:
    """Why the shared preprocessing rejects the image (corrupt, blank, too many pixels), or
    None when it is usable."""
    try:
        preprocess_with(settings or PreprocessSettings(), image.data, name=image.name)
    except ImageError as error:
        return str(error)
    return None


def predict(predictor: Predictor, image: InputImage, model: str) -> Outcome:
    """One model's top letters for one image (raises ImageError for an unusable image)."""
    model_input = predictor.preprocess(image.data, name=image.name)
    probabilities = predictor.probabilities(model_input[None])[0]
    top = predictor.top(probabilities, TOP_K)
    return Outcome(model, top, model_input, unsure=predictor.is_unsure(top))


def predict_ensemble(members: Sequence[Predictor], weights: Sequence[float],
                     image: InputImage, model: str = "ensemble", kind: str = "soft") -> Outcome:
    """The ``kind`` vote (soft: weighted by ``weights``; hard: majority) of ``members`` (the
    ``evaluate`` stage's ensemble) for one image.

    Each member preprocesses with its own settings, as it would alone; the input shown is the
    first member's.
    """
    if not members:
        raise ValueError("the ensemble has no members; train the tuned models with `dvc repro`")
    inputs = [member.preprocess(image.data, name=image.name) for member in members]
    probabilities = vote(kind, [member.probabilities(x[None])[0]
                                for member, x in zip(members, inputs)], list(weights))
    return Outcome(model, members[0].top(probabilities, TOP_K), inputs[0])


RESULT_COLUMNS = ("image", "model", "predicted", "confidence", "unsure", "top5")


def result_row(image: InputImage, outcome: Outcome) -> dict[str, str | float]:
    """A row of the results table."""
    return {"image": image.name, "model": outcome.model, "predicted": outcome.letter,
            "confidence": round(outcome.confidence, 4), "unsure": outcome.unsure,
            "top5": " ".join(f"{letter}:{p:.3f}" for letter, p in outcome.top)}


def results_csv(rows: Sequence[dict[str, str | float]]) -> str:
    """The results table as CSV text (header first)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
