"""Classification figures from true labels and predicted probabilities (scikit-learn's
metric functions, not hand-written ones), including case-insensitive accuracy: several letters
have the same shape in both cases (c/C, o/O, s/S ...), so a prediction of 'c' for 'C' is also
reported as right."""

from __future__ import annotations

from typing import Any

import numpy as np

from handwriting import labels

_FOLD = np.array([labels.case_insensitive(i) for i in range(labels.NUM_CLASSES)])
_MERGE37 = np.array([labels.merged37_index(i) for i in range(labels.NUM_CLASSES)])


def case_fold(class_ids: np.ndarray) -> np.ndarray:
    """Class indices with lower-case letters mapped to their upper-case class."""
    return _FOLD[np.asarray(class_ids)]


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray,
                               bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, case-insensitive accuracy, merged-37 accuracy (EMNIST Balanced: the cases of
    c i j k l m o p s u v w x y z count as one), macro and weighted precision/recall/F1, one-vs-rest
    macro ROC-AUC, log loss, top-5 accuracy and expected calibration error."""
    from sklearn.metrics import (
        accuracy_score,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
        top_k_accuracy_score,
    )

    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    every_class = np.arange(labels.NUM_CLASSES)
    figures: dict[str, float] = {
        "accuracy": accuracy_score(y_true, predicted),
        "case_insensitive_accuracy": accuracy_score(case_fold(y_true), case_fold(predicted)),
        "merged37_accuracy": accuracy_score(_MERGE37[y_true], _MERGE37[predicted]),
        "top5_accuracy": top_k_accuracy_score(y_true, probabilities, k=5, labels=every_class),
        "log_loss": log_loss(y_true, probabilities, labels=every_class),
        "ece": expected_calibration_error(y_true, probabilities),
    }
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, predicted, average=average, labels=np.unique(y_true), zero_division=0)
        figures.update({f"precision_{average}": precision, f"recall_{average}": recall,
                        f"f1_{average}": f1})
    present = np.unique(y_true)
    # One-vs-rest over the classes present, renormalised, as roc_auc_score requires.
    sub = probabilities[:, present]
    sub = sub / sub.sum(axis=1, keepdims=True)
    if len(present) == 2:
        figures["roc_auc_ovr_macro"] = roc_auc_score(y_true == present[1], sub[:, 1])
    elif len(present) > 2:
        figures["roc_auc_ovr_macro"] = roc_auc_score(y_true, sub, multi_class="ovr",
                                                     average="macro", labels=present)
    return {key: round(float(value), 6) for key, value in figures.items()}


def bootstrap_intervals(y_true: np.ndarray, probabilities: np.ndarray, *, seed: int,
                        samples: int = 1000) -> dict[str, float]:
    """95 % percentile-bootstrap intervals of accuracy and macro F1 (``samples`` resamples of
    the test images with replacement, seeded): ``accuracy_ci95_low``/``_high`` and
    ``f1_macro_ci95_low``/``_high``. They show how far a figure could move with another test
    set of the same size, so differences inside them are not differences."""
    y_true = np.asarray(y_true)
    predicted = np.asarray(probabilities).argmax(axis=1)
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.integers(0, len(y_true), len(y_true)) for _ in range(samples)])
    truth, guess = y_true[picks], predicted[picks]
    accuracy = np.mean(truth == guess, axis=1)
    f1 = [_macro_f1(t, g) for t, g in zip(truth, guess)]
    low, high = 2.5, 97.5
    return {"accuracy_ci95_low": round(float(np.percentile(accuracy, low)), 6),
            "accuracy_ci95_high": round(float(np.percentile(accuracy, high)), 6),
            "f1_macro_ci95_low": round(float(np.percentile(f1, low)), 6),
            "f1_macro_ci95_high": round(float(np.percentile(f1, high)), 6)}


def paired_bootstrap_gain(y_true: np.ndarray, baseline_probabilities: np.ndarray,
                          probabilities: np.ndarray, *, seed: int,
                          samples: int = 1000) -> dict[str, float]:
    """Accuracy of ``probabilities`` minus accuracy of ``baseline_probabilities`` (``gain``)
    and its 95 % percentile-bootstrap interval (``ci95_low``/``_high``): ``samples`` resamples
    of the images with replacement, seeded, the same resampled images for both models. Paired,
    it is the interval of the difference itself, much narrower than either model's own interval
    when the two models are right on mostly the same images. Raises ValueError when the three
    disagree in length or hold no image."""
    y_true = np.asarray(y_true)
    baseline, other = np.asarray(baseline_probabilities), np.asarray(probabilities)
    if not len(y_true) == len(baseline) == len(other):
        raise ValueError(f"paired_bootstrap_gain needs one row per image in each array, got "
                         f"{len(y_true)} labels, {len(baseline)} baseline rows and "
                         f"{len(other)} rows")
    if len(y_true) == 0:
        raise ValueError("paired_bootstrap_gain needs at least one image, got none")
    # Per image: +1 where only the model is right, -1 where only the baseline is, else 0.
    difference = ((other.argmax(axis=1) == y_true).astype(np.int8)
                  - (baseline.argmax(axis=1) == y_true).astype(np.int8))
    picks = np.random.default_rng(seed).integers(0, len(y_true), (samples, len(y_true)))
    low, high = np.percentile(difference[picks].mean(axis=1), [2.5, 97.5])
    return {"gain": round(float(difference.mean()), 6), "ci95_low": round(float(low), 6),
            "ci95_high": round(float(high), 6)}


def _macro_f1(truth: np.ndarray, guess: np.ndarray) -> float:
    """Macro F1 over the classes present in ``truth``: what scikit-learn's ``f1_score(truth,
    guess, average="macro", labels=np.unique(truth), zero_division=0)`` returns, to the bit
    (per class 2 TP / (support + predicted), averaged), in a fraction of its time; the
    bootstrap calls it a thousand times per model."""
    classes = max(int(truth.max()), int(guess.max())) + 1
    support = np.bincount(truth, minlength=classes)
    hits = np.bincount(truth[truth == guess], minlength=classes)
    called = np.bincount(guess, minlength=classes)
    present = support > 0
    return float(np.mean(2.0 * hits[present] / (support[present] + called[present])))


def per_class_report(y_true: np.ndarray, predicted: np.ndarray) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of every one of the 52 classes."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=np.arange(labels.NUM_CLASSES), zero_division=0)
    return [{"class": labels.char_of(i), "precision": round(float(precision[i]), 6),
             "recall": round(float(recall[i]), 6), "f1": round(float(f1[i]), 6),
             "support": int(support[i])} for i in range(labels.NUM_CLASSES)]


def confused_pairs(y_true: np.ndarray, predicted: np.ndarray,
                   top: int = 20) -> list[dict[str, Any]]:
    """The most frequent (actual, predicted) mistakes, most frequent first."""
    mistakes = y_true != predicted
    pairs, counts = np.unique(np.stack([y_true[mistakes], predicted[mistakes]], axis=1),
                              axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:top]
    return [{"actual": labels.char_of(pairs[i, 0]), "predicted": labels.char_of(pairs[i, 1]),
             "count": int(counts[i]),
             "same_letter_other_case": bool(case_fold(pairs[i, :1])[0]
                                            == case_fold(pairs[i, 1:])[0])}
            for i in order]
