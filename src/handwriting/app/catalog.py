"""The models the app can offer, found on disk; nothing is loaded here.

* ``<arch>-untuned`` and ``<arch>-tuned`` for every ``models/<arch>/{untuned,tuned}.keras``;
* ``ensemble``: the ensemble of the tuned models (at least two) that the ``evaluate`` stage
  scores, as params.yaml's ``evaluate`` section defines it: a soft or hard vote, weighted by
  each one's ``val_accuracy`` in ``metrics/train/<arch>-tuned.json`` or equally; not offered
  (and the reason given) when params.yaml or a weight cannot be read;
* ``champion``: the served model in ``models/serving/`` (written by the export stage), when
  its ``serving.json`` is there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handwriting.evaluation import ensemble as ensembles
from handwriting.evaluation.champion import ENSEMBLE
from handwriting.evaluation.ensemble import EnsembleError
from handwriting.models.reference import VARIANTS, ModelRef
from handwriting.models.registry import FALLBACK_ORDER, in_study_order
from handwriting.params import Evaluate, missing_section
from handwriting.serving.predictor import SERVING_JSON

SERVING_FOLDER = "serving"
CHAMPION = "champion"


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model selector.

    ``kind`` is ``"keras"`` (``path`` a ``.keras`` file), ``"champion"`` (``path`` the serving
    folder) or ``"ensemble"`` (``members`` the tuned models' choices, ``weights`` their vote
    weights, ``weights_from`` where those came from).
    """

    name: str
    kind: str
    path: Path | None = None
    members: tuple[ModelChoice, ...] = ()
    weights: tuple[float, ...] = ()
    weights_from: str = ""
    vote: str = "soft"  # the ensemble's vote: soft or hard
    arch: str = ""
    variant: str = ""
    detail: str = ""  # one line for people: what this model is

    @property
    def keras_path(self) -> Path | None:
        """The Keras model to explain (feature maps, Grad-CAM), when there is one."""
        if self.kind == "keras":
            return self.path
        if self.kind == CHAMPION and self.path is not None:
            candidate = self.path / "model.keras"
            return candidate if candidate.is_file() else None
        return None


def architectures(models_dir: Path) -> list[str]:
    """Architecture folders under ``models_dir`` that hold at least one model file."""
    if not models_dir.is_dir():
        return []
    found = {folder.name for folder in models_dir.iterdir()
             if folder.is_dir() and folder.name != SERVING_FOLDER
             and any((folder / f"{variant}.keras").is_file() for variant in VARIANTS)}
    return in_study_order(found)


def ensemble_choice(tuned: list[ModelChoice], metrics_dir: Path,
                    settings: Evaluate | None) -> ModelChoice | str:
    """The ensemble the evaluate stage scores (``evaluate.ensemble`` and
    ``evaluate.ensemble_weighting`` of params.yaml, weights from ``metrics_dir/train``) over the
    ``tuned`` models, or the reason it cannot be built (a missing weight is never replaced by
    an equal one: that would be another ensemble)."""
    if settings is None:
        return str(missing_section("evaluate"))
    try:
        kind = settings.ensemble
        weights = ensembles.member_weights(settings.ensemble_weighting,
                                           [choice.name for choice in tuned],
                                           metrics_dir / "train")
    except EnsembleError as error:
        return str(error)
    origin = "equal" if weights is None else f"val_accuracy from {metrics_dir / 'train'}"
    if kind == "hard":
        origin = "none (majority vote)"
    return ModelChoice(
        ENSEMBLE, ENSEMBLE, members=tuple(tuned),
        weights=tuple(weights) if weights is not None else tuple(1.0 for _ in tuned),
        weights_from=origin, vote=kind,
        detail=f"{kind} vote of {', '.join(c.name for c in tuned)}; weights: {origin}")


def find_models(models_dir: Path, metrics_dir: Path,
                evaluate: Evaluate | None) -> list[ModelChoice]:
    """Every model the app can run: the champion, the ensemble (:func:`ensemble_choice`, when
    it can be built), then each architecture's untuned and tuned model."""
    return catalog(models_dir, metrics_dir, evaluate)[0]


def catalog(models_dir: Path, metrics_dir: Path, evaluate: Evaluate | None
            ) -> tuple[list[ModelChoice], str | None]:
    """:func:`find_models`, and why the ensemble is missing although two or more tuned models
    are there (None when it is offered or cannot be)."""
    choices: list[ModelChoice] = []
    report = champion_report(models_dir, metrics_dir)
    if report is not None:
        served = f"the served model ({report.name})" if report.name else "the served model"
        choices.append(ModelChoice(CHAMPION, CHAMPION, report.folder,
                                   detail=f"{served}, ONNX, from {report.folder}"))
    references = [ModelRef(arch, variant) for arch in architectures(models_dir)
                  for variant in VARIANTS]
    singles = [ModelChoice(str(ref), "keras", ref.path(models_dir), arch=ref.arch,
                           variant=ref.variant,
                           detail=f"{ref.arch}, {ref.variant}, Keras, {models_dir / ref.arch}")
               for ref in references if ref.path(models_dir).is_file()]
    tuned = [choice for choice in singles if choice.variant == "tuned"]
    problem = None
    if len(tuned) >= 2:
        ensemble = ensemble_choice(tuned, metrics_dir, evaluate)
        if isinstance(ensemble, ModelChoice):
            choices.append(ensemble)
        else:
            problem = ensemble
    return choices + singles, problem


def default_selection(choices: list[ModelChoice]) -> list[str]:
    """What the selector starts with: the champion, else the preferred tuned model, else the
    first model found."""
    names = [choice.name for choice in choices]
    if CHAMPION in names:
        return [CHAMPION]
    for arch in FALLBACK_ORDER:
        if str(ModelRef.tuned(arch)) in names:
            return [str(ModelRef.tuned(arch))]
    return names[:1]


@dataclass(frozen=True)
class ChampionReport:
    """What is known about the served model (written by the export stage).

    ``settings``: its preprocessing (``models/serving/serving.json`` without the labels);
    ``description``: that file's ``"model"`` entry (name, validation F1, ensemble members);
    ``metrics``: ``metrics/serving.json`` (agreement, accuracy and sizes of the ONNX
    and int8 exports). ``problems``: files that exist but could not be read.
    """

    folder: Path
    settings: dict[str, Any] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Which model is served, such as ``lenet5-tuned`` or ``ensemble`` ("" if unknown)."""
        return str(self.description.get("name") or self.metrics.get("champion") or "")

    @property
    def val_f1_macro(self) -> float | None:
        """The validation macro F1 it was chosen by, when recorded."""
        value = self.description.get("val_f1_macro", self.metrics.get("val_f1_macro"))
        return float(value) if isinstance(value, (int, float)) else None


def _read_json(path: Path) -> tuple[dict[str, Any], str]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        return {}, f"{path}: cannot be read ({error.strerror})"
    except ValueError as error:
        return {}, f"{path}: not valid JSON ({error}); run `dvc repro` to write it again"
    if not isinstance(value, dict):
        return {}, f"{path}: expected a JSON object; run `dvc repro` to write it again"
    return value, ""


def champion_report(models_dir: Path, metrics_dir: Path) -> ChampionReport | None:
    """``models/serving/serving.json`` and ``metrics/serving.json``, or None when there is no
    served model. Unreadable files are reported in ``problems``, not raised."""
    folder = models_dir / SERVING_FOLDER
    settings_path = folder / SERVING_JSON
    if not settings_path.is_file():
        return None
    settings, problem = _read_json(settings_path)
    problems = [problem] if problem else []
    metrics: dict[str, Any] = {}
    metrics_path = metrics_dir / "serving.json"
    if metrics_path.is_file():
        metrics, problem = _read_json(metrics_path)
        problems += [problem] if problem else []
    description = settings.get("model")
    # The label list is long and says nothing new.
    settings = {key: value for key, value in settings.items() if key not in ("labels", "model")}
    return ChampionReport(folder, settings, description if isinstance(description, dict) else {},
                          metrics, tuple(problems))
