"""The champion as an MLflow pyfunc model, in the MLflow registry, behind `mlflow models serve`.

:class:`LetterClassifier` wraps a serving folder (:func:`~handwriting.serving.predictor.
write_serving_dir`): its ONNX model, preprocessing settings and labels travel as the MLflow
model's artifacts, and prediction runs the shared preprocessing and ONNX Runtime, the same
path as ``handwriting predict`` and the app.

A request holds base64-encoded image files (PNG, JPEG, BMP, TIFF or WebP) in a column
``image``::

    {"dataframe_records": [{"image": "<base64 of letter.png>"}], "params": {"top_k": 3}}

and the answer holds, per image, the predicted ``label``, its ``probability``, the top-k
``top_labels`` / ``top_probabilities``, and ``unsure``: true when the probability is below the
serving folder's "not sure" threshold (the image is probably not a single letter the model can
read; show ``message`` rather than the label). An image that cannot be used fails the whole request
with HTTP 400 and a message naming the row and the problem.

:func:`register_champion` logs the model in an MLflow run, registers it as a new version and
moves the ``champion`` alias to it by the rule of
:func:`handwriting.evaluation.champion.should_move_alias`; a version registered by a DVC
experiment gets the ``challenger`` alias instead and leaves ``champion`` where it is, until
:func:`promote` (``handwriting promote``) moves it.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
from mlflow.pyfunc.model import PythonModel

ALIAS = "champion"
# The alias of the newest version a DVC experiment registered: experiments never move ALIAS.
CHALLENGER = "challenger"
IMAGE_COLUMN = "image"
OUTPUT_COLUMNS = ("label", "probability", "top_labels", "top_probabilities", "unsure", "message")
SERVING_ARTIFACT = "serving"
# A request is refused beyond these: they keep one request from holding the server for long.
MAX_IMAGES_PER_REQUEST = 256
MAX_IMAGE_BYTES = 10 * 2**20
MAX_TOP_K = 52
# The tags on each registered version that the alias decision compares.
SCORE_TAG = "val_f1_macro"
MFLOPS_TAG = "mflops"
LATENCY_TAG = "latency_p50_ms"


def _bad_request(message: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    # INVALID_PARAMETER_VALUE is answered with HTTP 400 by the scoring server.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _image_bytes(value: Any, row: int) -> bytes:
    """The file bytes of one request row: base64 text (from JSON) or raw bytes (in-process)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        if len(value) > MAX_IMAGE_BYTES * 4 // 3 + 8:
            raise _bad_request(f"row {row}: the image is larger than "
                               f"{MAX_IMAGE_BYTES // 2**20} MiB; send a smaller file")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_request(f"row {row}: '{IMAGE_COLUMN}' is not valid base64; send the "
                               "image file's bytes base64-encoded, e.g. `base64 -w0 "
                               "letter.png`") from None
    else:
        raise _bad_request(f"row {row}: '{IMAGE_COLUMN}' must be a base64-encoded image file, "
                           f"got {type(value).__name__}")
    if not data:
        raise _bad_request(f"row {row}: the image is empty; send the bytes of a PNG or JPEG")
    if len(data) > MAX_IMAGE_BYTES:
        raise _bad_request(f"row {row}: the image is larger than "
                           f"{MAX_IMAGE_BYTES // 2**20} MiB; send a smaller file")
    return data


def _top_k(params: dict[str, Any] | None) -> int:
    value = (params or {}).get("top_k", 5)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= value <= MAX_TOP_K:
        raise _bad_request(f"params.top_k must be an integer from 1 to {MAX_TOP_K}, "
                           f"got {value!r}")
    return int(value)


class LetterClassifier(PythonModel):
    """Image files in, letters out: the shared preprocessing and the ONNX model of a serving
    folder (the ``serving`` artifact)."""

    def load_context(self, context) -> None:
        """Open the serving folder's ONNX model (one thread per call: requests run side by
        side)."""
        from handwriting.serving.predictor import Predictor

        self.predictor = Predictor.from_directory(context.artifacts[SERVING_ARTIFACT])

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        """A DataFrame with column ``image`` (base64 text or bytes of image files) -> a
        DataFrame with ``label``, ``probability``, ``top_labels``, ``top_probabilities``,
        ``unsure`` and ``message`` (the label, or the "not sure" message).

        Raises MlflowException (HTTP 400 when served) naming the row of an unusable image.
        """
        import pandas as pd

        from handwriting.imaging import ImageError
        from handwriting.serving.predictor import UNSURE_MESSAGE

        top_k = _top_k(params)
        if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input:
            raise _bad_request(f"expected a column '{IMAGE_COLUMN}' of base64-encoded image "
                               "files")
        if len(model_input) == 0:
            raise _bad_request("the request holds no images")
        if len(model_input) > MAX_IMAGES_PER_REQUEST:
            raise _bad_request(f"the request holds {len(model_input)} images; send at most "
                               f"{MAX_IMAGES_PER_REQUEST} per request")
        images = []
        for row, value in enumerate(model_input[IMAGE_COLUMN]):
            data = _image_bytes(value, row)
            try:
                images.append(self.predictor.preprocess(data, name=f"row {row}"))
            except ImageError as error:
                raise _bad_request(str(error)) from None
        probabilities = self.predictor.probabilities(np.stack(images))
        rows = []
        for row in probabilities:
            top = self.predictor.top(row, top_k)
            unsure = self.predictor.is_unsure(top)
            rows.append({"label": top[0][0], "probability": top[0][1],
                         "top_labels": [label for label, _ in top],
                         "top_probabilities": [probability for _, probability in top],
                         "unsure": unsure, "message": UNSURE_MESSAGE if unsure else top[0][0]})
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def signature():
    """The model's input, output and params schema (shown by the MLflow UI)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, IMAGE_COLUMN)]),
        outputs=Schema([ColSpec(DataType.string, "label"),
                        ColSpec(DataType.double, "probability"),
                        ColSpec(Array(DataType.string), "top_labels"),
                        ColSpec(Array(DataType.double), "top_probabilities"),
                        ColSpec(DataType.boolean, "unsure"),
                        ColSpec(DataType.string, "message")]),
        params=ParamSchema([ParamSpec("top_k", DataType.long, 5)]),
    )


def _requirements() -> list[str]:
    """What the served model imports, pinned to the versions here. The ``handwriting``
    package itself is not on PyPI: serve from the project's environment
    (``--env-manager local``)."""
    from handwriting import tracking

    return tracking.pinned(["mlflow", "onnxruntime", "numpy", "pandas", "pillow",
                            "opencv-python-headless", "pyyaml"])


@dataclass(frozen=True)
class Registration:
    """The outcome of :func:`register_champion`."""

    name: str
    version: str
    alias_moved: bool  # the champion alias now points to this version
    previous_version: str | None
    previous_score: float | None
    previous_mflops: float | None


def _current_champion(client, name: str) -> tuple[str | None, float | None, float | None]:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None, None, None  # no registered model or no alias yet
    score, mflops = current.tags.get(SCORE_TAG), current.tags.get(MFLOPS_TAG)
    return (str(current.version), float(score) if score is not None else None,
            float(mflops) if mflops is not None else None)


def register_champion(serving_dir: str | os.PathLike, *, name: str, champion: str,
                      score: float, example_image: bytes, mflops: float,
                      budget_mflops: float = 0.0, latency_ms: float | None = None,
                      tags: dict[str, str] | None = None,
                      experiment: str | None = None) -> Registration:
    """Log the serving folder as a pyfunc model in the active MLflow run, register it under
    ``name`` and point alias ``champion`` at it when :func:`should_move_alias` says so.

    ``score``: validation macro F1; ``mflops``: million multiply-adds per image;
    ``budget_mflops``: the compute budget in force (0: none); ``latency_ms``: end-to-end p50
    latency of one image (a reported figure). ``example_image``: the bytes of one image file,
    the model's input example. The version is tagged with ``champion`` (the model's name in
    the pipeline), the score, the cost, the latency and ``tags``. ``experiment``: the DVC
    experiment registering it (``DVC_EXP_NAME``); such a version gets the ``challenger`` alias
    and ``champion`` stays where it is, whatever the scores (:func:`promote` moves it).
    """
    import pandas as pd
    from mlflow import MlflowClient

    from handwriting.evaluation.champion import should_move_alias

    serving_dir = Path(serving_dir)
    if not (serving_dir / "serving.json").is_file():
        raise FileNotFoundError(f"{serving_dir}: not a serving folder (no serving.json); run "
                                "`dvc repro export`")
    example = pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(example_image).decode("ascii")]})
    info = mlflow.pyfunc.log_model(
        name="model", python_model=LetterClassifier(),
        artifacts={SERVING_ARTIFACT: str(serving_dir)}, signature=signature(),
        input_example=example, pip_requirements=_requirements(),
        registered_model_name=name)
    version = str(info.registered_model_version)
    client = MlflowClient()
    previous_version, previous_score, previous_mflops = _current_champion(client, name)
    version_tags = {"champion": champion, SCORE_TAG: f"{score:.6f}",
                    MFLOPS_TAG: f"{mflops:.3f}", **(tags or {})}
    if latency_ms is not None:
        version_tags[LATENCY_TAG] = f"{latency_ms:.4f}"
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    moved = not experiment and should_move_alias(score, previous_score, previous_mflops,
                                                 budget_mflops)
    if experiment:
        client.set_registered_model_alias(name, CHALLENGER, version)
    elif moved:
        client.set_registered_model_alias(name, ALIAS, version)
    return Registration(name=name, version=version, alias_moved=moved,
                        previous_version=previous_version, previous_score=previous_score,
                        previous_mflops=previous_mflops)


class PromotionError(Exception):
    """Nothing to promote: no such model, version or challenger."""


def promote(name: str, version: str | None = None) -> tuple[str, str | None]:
    """Point the ``champion`` alias of registered model ``name`` at ``version`` (default: the
    version the ``challenger`` alias names, which then loses that alias).

    Returns (the new champion's version, the previous one or None). Uses the configured
    tracking URI (:func:`handwriting.tracking.configure`).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    previous, _, _ = _current_champion(client, name)
    from_challenger = version is None
    try:
        if version is None:
            version = str(client.get_model_version_by_alias(name, CHALLENGER).version)
        else:
            client.get_model_version(name, version)
    except MlflowException:
        what = f"version {version}" if version else f"version with alias '{CHALLENGER}'"
        raise PromotionError(
            f"registered model '{name}' has no {what} (a `dvc exp run` registers its model "
            f"as '{CHALLENGER}'; name another with --version)") from None
    client.set_registered_model_alias(name, ALIAS, version)
    if from_challenger:
        client.delete_registered_model_alias(name, CHALLENGER)
    return version, previous
