"""Streamlit helpers shared by the pages: the configuration, cached model loading, the drawing
canvas and the "run `dvc repro`" notes.

Models are loaded lazily (only the ones a user selects) and once per process with
``st.cache_resource``; the file's modification time is part of the cache key, so a model that
``dvc repro`` retrains is picked up without restarting the app. The app never trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from handwriting.app.catalog import ENSEMBLE, ModelChoice, catalog
from handwriting.app.config import ENV_PARAMS, AppConfig
from handwriting.app.features import Explanation, LayerMaps, explanation, feature_maps
from handwriting.app.inference import InputImage, Outcome, predict, predict_ensemble
from handwriting.imaging import PreprocessSettings
from handwriting.params import Evaluate
from handwriting.serving.predictor import Predictor

REPRO_HINT = "Run `dvc repro` in the repository to build it."
CANVAS_SIDE = 280


def config() -> AppConfig:
    """The folders this app instance uses (see :mod:`handwriting.app.config`)."""
    return AppConfig.from_env()


def need_repro(what: str) -> None:
    """Say that a pipeline output is missing and how to get it."""
    st.info(f"{what} {REPRO_HINT}", icon=":material/build:")


@st.cache_data(show_spinner=False)
def _read_settings(path: str, stamp: int) -> tuple[PreprocessSettings | None, str]:
    from handwriting.params import ParamsError, load_params

    try:
        return load_params(path).preprocessing, f"preprocessing settings from {path}"
    except (ParamsError, OSError, ValueError) as error:
        return None, (f"{path} could not be read ({error}); using the default preprocessing "
                      "settings at each model's input size")


def preprocess_settings(app: AppConfig) -> tuple[PreprocessSettings | None, str]:
    """The shared preprocessing's settings from params.yaml (None: the defaults at each model's
    input size) and a sentence saying where they came from."""
    if not app.params.is_file():
        return None, f"{app.params} not found: default preprocessing settings"
    return _read_settings(str(app.params), app.params.stat().st_mtime_ns)


@st.cache_data(show_spinner=False)
def _read_evaluate_section(path: str, stamp: int) -> tuple[Evaluate | None, str]:
    from handwriting.params import ParamsError, load_params

    try:
        return load_params(path).evaluate, ""
    except (ParamsError, OSError, ValueError) as error:
        return None, f"{path} could not be read ({error})"


def evaluate_section(app: AppConfig) -> tuple[Evaluate | None, str]:
    """params.yaml's ``evaluate`` section, or None and why it could not be read."""
    if not app.params.is_file():
        return None, (f"{app.params} not found; the ensemble is defined by its evaluate "
                      f"section: start the app in the project folder or set {ENV_PARAMS}")
    return _read_evaluate_section(str(app.params), app.params.stat().st_mtime_ns)


def models(app: AppConfig) -> tuple[list[ModelChoice], str | None]:
    """Every model the app offers, the ensemble as params.yaml's ``evaluate`` section defines
    it, and why there is no ensemble when it cannot be built
    (:func:`~handwriting.app.catalog.catalog`)."""
    section, unreadable = evaluate_section(app)
    choices, problem = catalog(app.models_dir, app.metrics_dir, section)
    return choices, (unreadable or problem) if problem else None


def _stamp(path: Path) -> int:
    return path.stat().st_mtime_ns


@st.cache_resource(show_spinner="Loading the model...", max_entries=32)
def _keras_predictor(path: str, stamp: int, settings: PreprocessSettings | None) -> Predictor:
    return Predictor(path, settings)


@st.cache_resource(show_spinner="Loading the champion...", max_entries=4)
def _serving_predictor(folder: str, stamp: int) -> Predictor:
    return Predictor.from_directory(folder)


@st.cache_resource(show_spinner="Loading the model for its explanations...", max_entries=16)
def _keras_model(path: str, stamp: int):
    from handwriting.keras_inference import load_keras_model

    return load_keras_model(path)


def predictor(choice: ModelChoice, settings: PreprocessSettings | None) -> Predictor:
    """The (cached) Predictor of a single model; the champion uses its folder's own settings.

    Raises FileNotFoundError or ValueError (message naming the file) when it cannot load.
    """
    if choice.path is None:
        raise ValueError(f"{choice.name} has no model file (an ensemble is not one model)")
    if choice.kind == "keras":
        return _keras_predictor(str(choice.path), _stamp(choice.path), settings)
    serving_json = choice.path / "serving.json"
    return _serving_predictor(str(choice.path), _stamp(serving_json))


def run_model(choice: ModelChoice, image: InputImage,
              settings: PreprocessSettings | None) -> Outcome:
    """The model's (or the ensemble's) answer for one image.

    Raises FileNotFoundError / ValueError (a model that cannot load or does not fit the
    settings) and ImageError (an image the preprocessing rejects).
    """
    if choice.kind == ENSEMBLE:
        members = [predictor(member, settings) for member in choice.members]
        return predict_ensemble(members, choice.weights, image, choice.name, choice.vote)
    return predict(predictor(choice, settings), image, choice.name)


@st.cache_data(show_spinner="Computing feature maps and Grad-CAM...", max_entries=256)
def insight(keras_path: str, stamp: int,
            model_input: np.ndarray) -> tuple[list[LayerMaps], Explanation]:
    """Feature maps of the first convolutions and the Grad-CAM (or saliency) overlay."""
    model = _keras_model(keras_path, stamp)
    return feature_maps(model, model_input), explanation(model, model_input)


def insight_for(choice: ModelChoice,
                model_input: np.ndarray) -> tuple[list[LayerMaps], Explanation] | None:
    """:func:`insight` for a model that has a Keras file (None for the ensemble, or a
    champion folder without ``model.keras``)."""
    path = choice.keras_path
    if path is None:
        return None
    return insight(str(path), _stamp(path), model_input)


def canvas_image(key: str = "canvas") -> InputImage | None:
    """A drawing canvas (black ink on white); the drawing as PNG once something is drawn."""
    # Imported here: the component registers itself with the running Streamlit server.
    from streamlit_drawable_canvas import st_canvas

    result = st_canvas(stroke_width=18, stroke_color="#000000", background_color="#FFFFFF",
                       height=CANVAS_SIDE, width=CANVAS_SIDE, drawing_mode="freedraw",
                       return_image_data=True, key=key)
    drawn = bool(result.json_data and result.json_data.get("objects"))
    data = result.image_bytes if drawn else None
    return InputImage("drawing", data) if data else None
