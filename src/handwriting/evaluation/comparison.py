"""Scoring models for the comparison: the compiled fast path, latency, every model's figures on
a labelled set, the ensemble's, the champion's decision, the per-model files and each
architecture's tuning gain (tuned minus untuned accuracy on the validation split, the test
split and every cross-dataset set, with a paired-bootstrap 95 % interval). The evaluate stage
calls these in order (:mod:`handwriting.stages.evaluate`); :mod:`.report` writes what they
return as the Markdown report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels, timing
from handwriting.datasets import load_arrays, write_csv
from handwriting.evaluation import champion as champion_policy
from handwriting.evaluation import ensemble as ensembles
from handwriting.evaluation.metrics import (
    bootstrap_intervals,
    classification_metrics,
    confused_pairs,
    paired_bootstrap_gain,
    per_class_report,
)
from handwriting.keras_inference import compiled_predictor
from handwriting.models.features import features_key, frozen_feature_split
from handwriting.models.reference import VARIANTS, ModelRef, tuned_names
from handwriting.models.registry import architectures, has_frozen_base
from handwriting.params import Evaluate, Params

ROC_GRID = np.linspace(0.0, 1.0, 101)
CROSSDATA_FIGURES = ("accuracy", "case_insensitive_accuracy", "merged37_accuracy", "f1_macro",
                     "top5_accuracy")


def median_latency_ms(predict_fns: list, image: np.ndarray, calls: int) -> float:
    """Median wall time (ms) of one single-image call through every function in turn."""
    batch = image[None, ..., None].astype(np.float32)

    def through_all(_) -> None:
        for fn in predict_fns:
            fn(batch)

    return round(timing.latency(through_all, range(calls)).p50_ms, 4)


def in_batches(fn, array: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``fn`` applied to ``array`` in batches of ``batch_size``, the results concatenated
    ((0, 52) for an empty array)."""
    outputs = [fn(array[i:i + batch_size]) for i in range(0, len(array), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, labels.NUM_CLASSES))


def predict_all(predict_fn, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities of uint8 images [N, S, S], batched."""
    return in_batches(lambda batch: predict_fn(batch.astype(np.float32)[..., None] / 255.0),
                      images, batch_size)


def compiled_head(head):
    """A model's head (after its frozen base) as one traced function: a batch of features ->
    its probabilities as NumPy."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, *head.inputs[0].shape[1:]),
                                                tf.float32)])
    def step(features):
        return head(features, training=False)

    return lambda features: step(tf.constant(features)).numpy()


def roc_curve_points(y_true: np.ndarray, probabilities: np.ndarray) -> list[tuple[float, float]]:
    """Micro-averaged one-vs-rest ROC curve, resampled on 101 false-positive rates."""
    from sklearn.metrics import roc_curve

    truth = np.zeros_like(probabilities, dtype=bool)
    truth[np.arange(len(y_true)), y_true] = True
    fpr, tpr, _ = roc_curve(truth.ravel(), probabilities.ravel())
    return [(round(float(x), 4), round(float(y), 6)) for x, y in
            zip(ROC_GRID, np.interp(ROC_GRID, fpr, tpr))]


def explanation_rows(y_true: np.ndarray, predicted: np.ndarray, seed: int,
                     count: int) -> np.ndarray:
    """A fixed sample of test rows, half of them misclassified when there are enough."""
    order = np.random.default_rng(seed).permutation(len(y_true))
    wrong = [i for i in order if predicted[i] != y_true[i]][: count // 2]
    right = [i for i in order if predicted[i] == y_true[i]][: count - len(wrong)]
    return np.array(sorted(right + wrong), dtype=np.int64)


def choose_champion(params: Params, split_dir: Path, scores: Scores, weights: list[float] | None,
                    kind: str) -> dict[str, Any]:
    """Predict the validation split with every model of ``scores`` (both of each architecture
    in the stage; kept as ``scores.val`` for :func:`tuning_gains`), score the champion
    candidates (the tuned models and, with a ``kind == "soft"`` vote, their ensemble) on it,
    choose by :func:`handwriting.evaluation.champion.choose` and set its "not sure" threshold;
    returns what metrics/champion.json holds."""
    from handwriting.models.cost import mega_multiply_adds

    val = load_arrays(split_dir / "val", "images", "labels")
    archs = architectures(params.train)
    scores.val = LabelledPredictions(val["labels"], {key: scores.predict(key, val["images"])
                                                     for key in model_names(archs)
                                                     if key in scores.models})
    tuned = tuned_names(archs)
    probabilities = {key: scores.val.probabilities[key] for key in tuned}
    mflops = {key: mega_multiply_adds(scores.models[key]) for key in tuned}
    if kind == "soft":
        probabilities[champion_policy.ENSEMBLE] = ensembles.soft_vote(
            [probabilities[key] for key in tuned], weights)
        mflops[champion_policy.ENSEMBLE] = round(sum(mflops[key] for key in tuned), 3)
    candidates = {key: champion_policy.Candidate(
        val_f1_macro=classification_metrics(val["labels"], probs)["f1_macro"],
        mflops=mflops[key]) for key, probs in probabilities.items()}
    choice = champion_policy.choose(candidates, params.export.compute_budget_mflops)
    print(f"evaluate: champion: {choice.describe(candidates)}", flush=True)
    keep = params.export.unsure_keep_correct
    threshold = champion_policy.unsure_threshold(val["labels"], probabilities[choice.champion],
                                                 keep)
    unsure = {"threshold": threshold, "keep_correct": keep,
              "val": champion_policy.unsure_effect(val["labels"],
                                                   probabilities[choice.champion], threshold)}
    return {**choice.as_dict(candidates), "unsure": unsure}


@dataclass
class LabelledPredictions:
    """An image set's true labels and the probabilities of models on it, by model name."""

    labels: np.ndarray
    probabilities: dict[str, np.ndarray]


@dataclass
class Scores:
    """Every model's figures on the test split, and what produced them, by model name."""

    results: dict[str, Any] = field(default_factory=dict)  # evaluate.json's nesting
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # on the test split
    # Both models of every architecture on the validation split (choose_champion) and on each
    # cross-dataset set by its name (score_crossdata): what tuning_gains compares.
    val: LabelledPredictions | None = None
    crossdata: dict[str, LabelledPredictions] = field(default_factory=dict)
    predictors: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, bool] = field(default_factory=dict)  # per architecture
    # Single-image latency (ms) by model name: a timing, so logged to MLflow and printed, never
    # in evaluate.json (it differs on every run; `dvc metrics diff` would always show it).
    latency_ms: dict[str, float] = field(default_factory=dict)
    # The models with a frozen VGG-16 base: (base, its compiled fast path, the head's)
    heads: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # by base and images

    def add(self, key: str, model) -> None:
        """Take model ``key`` (``<arch>-<variant>``) for scoring: its compiled fast path, and
        those of its frozen base and head if it has them."""
        self.models[key] = model
        self.predictors[key] = compiled_predictor(model)
        split = frozen_feature_split(model)
        if split is not None:
            base, head = split
            self.heads[key] = (base, compiled_predictor(base), compiled_head(head))

    def predict(self, key: str, images: np.ndarray) -> np.ndarray:
        """Probabilities of uint8 images [N, S, S] from model ``key``, batched. The VGG models
        share one frozen base (the same layers and weights): its features of an image set
        are computed once and only each model's head runs on them. The probabilities are
        the whole model's, bit for bit, for a quarter of the VGG work."""
        if key not in self.heads:
            return predict_all(self.predictors[key], images)
        base, base_fn, head_fn = self.heads[key]
        digest = features_key(base, images)
        if digest not in self.features:
            self.features[digest] = predict_all(base_fn, images)
        return in_batches(head_fn, self.features[digest])  # the batches predict_all uses

    def figures(self, key: str) -> dict[str, Any]:
        """The figures of model ``key`` (``<arch>-<variant>`` or the ensemble)."""
        if key == champion_policy.ENSEMBLE:
            return self.results[key]
        ref = ModelRef.parse(key)
        return self.results[ref.arch][ref.variant]


def score_models(params: Params, models_dir: Path, images: np.ndarray, y_true: np.ndarray,
                 calls: int) -> Scores:
    """Load every architecture's untuned and tuned model and score it on ``images``; raises
    FileNotFoundError naming a missing model."""
    import keras

    from handwriting.models.cost import mega_multiply_adds
    from handwriting.models.zoo import is_pretrained

    scores = Scores()
    inputs01 = images.astype(np.float32) / 255.0
    for arch in architectures(params.train):
        scores.results[arch] = {}
        for variant in VARIANTS:
            reference = ModelRef(arch, variant)
            key, path = str(reference), reference.path(models_dir)
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing; run `dvc repro` to train it")
            model = keras.models.load_model(path)
            scores.add(key, model)
            scores.probabilities[key] = probabilities = scores.predict(key, images)
            figures = classification_metrics(y_true, probabilities)
            figures.update(bootstrap_intervals(y_true, probabilities, seed=params.base.seed))
            figures.update(params=int(model.count_params()),
                           mflops=round(mega_multiply_adds(model), 3),
                           size_mb=round(path.stat().st_size / 2**20, 3),
                           pretrained=int(is_pretrained(model)))
            scores.latency_ms[key] = median_latency_ms([scores.predictors[key]], inputs01[0],
                                                       calls)
            scores.pretrained[arch] = bool(figures["pretrained"]) or not has_frozen_base(arch)
            scores.results[arch][variant] = figures
            print(f"evaluate: {key}: accuracy {figures['accuracy']:.3f}, case-insensitive "
                  f"{figures['case_insensitive_accuracy']:.3f}, merged-37 "
                  f"{figures['merged37_accuracy']:.3f}, {scores.latency_ms[key]:.2f} ms/image",
                  flush=True)
    return scores


def score_ensemble(params: Params, scores: Scores, images: np.ndarray, y_true: np.ndarray,
                   calls: int, kind: str, weights: list[float] | None) -> dict[str, Any]:
    """The ensemble of the tuned models (``kind`` vote) scored like the models; added to
    ``scores`` under its name and returned."""
    archs = architectures(params.train)
    tuned = tuned_names(archs)
    name = champion_policy.ENSEMBLE
    probabilities = ensembles.vote(kind, [scores.probabilities[k] for k in tuned], weights)
    scores.probabilities[name] = probabilities
    figures = classification_metrics(y_true, probabilities)
    figures.update(bootstrap_intervals(y_true, probabilities, seed=params.base.seed))
    first = images[0].astype(np.float32) / 255.0
    figures.update(params=sum(scores.results[a]["tuned"]["params"] for a in archs),
                   mflops=round(sum(scores.results[a]["tuned"]["mflops"] for a in archs), 3),
                   size_mb=round(sum(scores.results[a]["tuned"]["size_mb"] for a in archs), 3),
                   pretrained=int(all(scores.pretrained.values())), members=len(tuned))
    scores.latency_ms[name] = median_latency_ms([scores.predictors[k] for k in tuned], first,
                                                max(20, calls // 4))
    scores.results[name] = figures
    print(f"evaluate: ensemble: accuracy {figures['accuracy']:.3f}, "
          f"{scores.latency_ms[name]:.2f} ms/image", flush=True)
    return figures


def write_model_files(scores: Scores, images: np.ndarray, y_true: np.ndarray, *, seed: int,
                      explain_samples: int, plots_dir: Path, per_class_dir: Path,
                      confused_path: Path) -> None:
    """Per model: per-class report, confusion records, most confused pairs, confident
    mistakes, ROC curve (tuned models and ensemble), explanation grid; and the comparison
    CSV of all of them."""
    from handwriting.evaluation.explain import explanation_grid
    from handwriting.evaluation.galleries import mistake_gallery

    inputs01 = images.astype(np.float32) / 255.0
    pairs_rows = []
    comparison_rows = []
    for key, probs in scores.probabilities.items():
        predicted = probs.argmax(axis=1)
        write_csv(per_class_dir / f"{key}.csv", ["class", "precision", "recall", "f1", "support"],
                  [list(row.values()) for row in per_class_report(y_true, predicted)])
        write_csv(plots_dir / "confusion" / f"{key}.csv", ["actual", "predicted"],
                  [(labels.char_of(a), labels.char_of(p)) for a, p in zip(y_true, predicted)])
        pairs_rows += [(key, p["actual"], p["predicted"], p["count"],
                        int(p["same_letter_other_case"]))
                       for p in confused_pairs(y_true, predicted, top=10)]
        mistake_gallery(images, y_true, probs, plots_dir / "mistakes" / f"{key}.png",
                        title=f"{key}: most confident mistakes (true → predicted)")
        if key.endswith("-tuned") or key == champion_policy.ENSEMBLE:
            write_csv(plots_dir / "roc" / f"{key}.csv", ["fpr", "tpr"],
                      roc_curve_points(y_true, probs))
        figures = scores.figures(key)
        comparison_rows.append((key, round(figures["accuracy"], 4),
                                round(figures["case_insensitive_accuracy"], 4),
                                round(figures["merged37_accuracy"], 4),
                                round(figures["f1_macro"], 4)))
        if key in scores.models:
            rows = explanation_rows(y_true, predicted, seed, explain_samples)
            explanation_grid(scores.models[key], inputs01[rows], y_true[rows],
                             plots_dir / "explain" / f"{key}.png",
                             title=f"{key}: what the model looks at")
    write_csv(confused_path, ["model", "actual", "predicted", "count", "same_letter_other_case"],
              pairs_rows)
    write_csv(plots_dir / "comparison.csv",
              ["model", "accuracy", "case_insensitive_accuracy", "merged37_accuracy", "f1_macro"],
              comparison_rows)


def score_crossdata(params: Params, scores: Scores, settings: Evaluate,
                    weights: list[float] | None, decision: dict[str, Any], plots_dir: Path
                    ) -> dict[str, Any]:
    """Every model and the ensemble (of the tuned, ``settings.ensemble`` vote) on every folder
    of ``settings.crossdata`` that exists: crossdata.json's datasets, by the folder's name.
    Adds the champion's "not sure" effect on each to ``decision`` and the models' probabilities
    on each (not the ensemble's) to ``scores.crossdata``, by the folder's name."""
    from handwriting import tracking
    from handwriting.evaluation.crossdata import read_class_folder

    tuned = tuned_names(architectures(params.train))
    champion, threshold = decision["champion"], decision["unsure"]["threshold"]
    crossdata: dict[str, Any] = {}
    kind = settings.ensemble
    for folder in settings.crossdata:
        root = tracking.resolve(folder)
        if not root.is_dir():
            print(f"evaluate: cross-dataset {folder} not found, skipped", file=sys.stderr)
            continue
        name = root.name
        x, y, skipped = read_class_folder(root, params.preprocessing)
        print(f"evaluate: cross-dataset {name}: {len(x)} images ({len(skipped)} skipped)",
              flush=True)
        member_probs = {key: scores.predict(key, x)
                        for key in model_names(architectures(params.train))}
        scores.crossdata[name] = LabelledPredictions(y, dict(member_probs))
        member_probs[champion_policy.ENSEMBLE] = ensembles.vote(
            kind, [member_probs[key] for key in tuned], weights)
        crossdata[name] = {"images": len(x), "skipped": len(skipped)}
        decision["unsure"][name] = champion_policy.unsure_effect(y, member_probs[champion],
                                                                 threshold)
        for key, probs in member_probs.items():
            m = classification_metrics(y, probs)
            crossdata[name][key] = {k: m[k] for k in CROSSDATA_FIGURES}
        write_csv(plots_dir / "crossdata" / f"{name}.csv", ["actual", "predicted"],
                  [(labels.char_of(a), labels.char_of(p)) for a, p in
                   zip(y, member_probs[champion_policy.ENSEMBLE].argmax(axis=1))])
    if not crossdata:
        print("evaluate: no external dataset found in evaluate.crossdata; cross-dataset "
              "evaluation skipped", flush=True)
    return crossdata


def model_names(architectures: list[str]) -> list[str]:
    """``<arch>-untuned`` and ``<arch>-tuned`` of every architecture, in order."""
    return [str(ModelRef(a, v)) for a in architectures for v in VARIANTS]


def tuning_gains(scores: Scores, architectures: list[str], test_labels: np.ndarray, *,
                 seed: int) -> dict[str, dict[str, float]]:
    """Tuned minus untuned, per architecture, from the models' predictions: the accuracy gain
    on the validation split (``scores.val``), the test split (``scores.probabilities`` and
    ``test_labels``) and each cross-dataset set (``scores.crossdata``), in that order, each as
    ``<set>_accuracy`` with its paired-bootstrap 95 % interval (``<set>_accuracy_ci95_low``/
    ``_high``, :func:`~handwriting.evaluation.metrics.paired_bootstrap_gain`, ``seed``); then
    the test macro-F1 gain (``test_f1_macro``, a point difference)."""
    if scores.val is None:
        raise ValueError("tuning_gains needs the validation predictions (scores.val): "
                         "run choose_champion first")
    sets = {"val": scores.val, "test": LabelledPredictions(test_labels, scores.probabilities),
            **scores.crossdata}
    gains: dict[str, dict[str, float]] = {}
    for arch in architectures:
        untuned, tuned = str(ModelRef(arch, "untuned")), str(ModelRef(arch, "tuned"))
        gain: dict[str, float] = {}
        for name, labelled in sets.items():
            paired = paired_bootstrap_gain(labelled.labels, labelled.probabilities[untuned],
                                           labelled.probabilities[tuned], seed=seed)
            gain.update({f"{name}_accuracy": paired["gain"],
                         f"{name}_accuracy_ci95_low": paired["ci95_low"],
                         f"{name}_accuracy_ci95_high": paired["ci95_high"]})
        gain["test_f1_macro"] = round(scores.results[arch]["tuned"]["f1_macro"]
                                      - scores.results[arch]["untuned"]["f1_macro"], 6)
        gains[arch] = gain
    return gains


def write_tuning_gain_plot(gains: dict[str, dict[str, float]], plots_dir: Path) -> None:
    """The tuning-gain bar chart's CSV (``tuning_gain.csv``): one bar per architecture and
    point gain (every accuracy gain, then the test macro-F1 gain)."""
    first = next(iter(gains.values()), {})
    measures = [*(m for m in first if m.endswith("_accuracy")), "test_f1_macro"]
    write_csv(plots_dir / "tuning_gain.csv", ["bar", "architecture", "measure", "gain"],
              [(f"{arch}: {m.replace('_', ' ')}", arch, m, gains[arch][m])
               for arch in gains for m in measures])
