"""Metric computation on hand-made predictions with known answers; the ensemble's averaging."""

import numpy as np
import pytest

from handwriting import labels
from handwriting.evaluation.ensemble import hard_vote, soft_vote
from handwriting.evaluation.metrics import (
    case_fold,
    classification_metrics,
    confused_pairs,
    expected_calibration_error,
    paired_bootstrap_gain,
    per_class_report,
)

A, B, C, c, o, O = (labels.index_of(ch) for ch in "ABCcoO")  # noqa: E741 (the letter O)


def one_hot(predicted, confidence=0.9):
    rest = (1 - confidence) / (labels.NUM_CLASSES - 1)
    p = np.full((len(predicted), labels.NUM_CLASSES), rest)
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_known_answers():
    y_true = np.array([A, A, B, C, o])
    predicted = np.array([A, B, B, c, o])  # 3 right; C->c is right ignoring case
    figures = classification_metrics(y_true, one_hot(predicted))
    assert figures["accuracy"] == pytest.approx(3 / 5)
    assert figures["case_insensitive_accuracy"] == pytest.approx(4 / 5)
    # per present class: A P=1 R=.5, B P=.5 R=1, C P=0 R=0, o P=1 R=1
    assert figures["precision_macro"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert figures["recall_macro"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert figures["recall_weighted"] == pytest.approx(3 / 5)
    assert figures["log_loss"] == pytest.approx(-(3 * np.log(0.9) + 2 * np.log(0.1 / 51)) / 5,
                                                rel=1e-4)
    assert figures["top5_accuracy"] == pytest.approx(3 / 5)
    # every sample at confidence 0.9 and 60 % right: ECE = |0.6 - 0.9|
    assert figures["ece"] == pytest.approx(0.3)


def test_top5_counts_a_true_class_in_second_place_but_not_one_at_the_bottom():
    y_true = np.array([A, B])
    p = one_hot(np.array([C, C]), confidence=0.5)
    p[0, A] = 0.3  # A second for the first sample; B shares last place for the second
    figures = classification_metrics(y_true, p)
    assert figures["top5_accuracy"] == pytest.approx(0.5)
    assert figures["accuracy"] == 0.0


def test_perfect_predictions():
    y_true = np.arange(labels.NUM_CLASSES)
    figures = classification_metrics(y_true, one_hot(y_true, 0.99))
    assert figures["accuracy"] == figures["f1_macro"] == figures["roc_auc_ovr_macro"] == 1.0


def test_case_fold():
    assert case_fold(np.array([c, C, o, O, A])).tolist() == [C, C, O, O, A]


def test_ece_of_a_calibrated_model_is_zero():
    y_true = np.array([A, A, A, A])
    p = one_hot(np.array([A, A, A, B]), confidence=0.75)
    assert expected_calibration_error(y_true, p) == pytest.approx(0.0)


def test_per_class_report_covers_all_52():
    report = per_class_report(np.array([A, A, B]), np.array([A, B, B]))
    assert len(report) == 52 and report[0]["class"] == "A"
    assert report[0] == {"class": "A", "precision": 1.0, "recall": 0.5,
                         "f1": pytest.approx(2 / 3, abs=1e-6), "support": 2}
    assert report[2]["support"] == 0


def test_confused_pairs_are_counted_and_flag_case_only_mistakes():
    y_true = np.array([o, o, o, A, C])
    predicted = np.array([O, O, o, B, c])
    pairs = confused_pairs(y_true, predicted)
    assert pairs[0] == {"actual": "o", "predicted": "O", "count": 2,
                        "same_letter_other_case": True}
    assert {"actual": "A", "predicted": "B", "count": 1,
            "same_letter_other_case": False} in pairs


def test_soft_vote_averages_and_weights():
    p1, p2 = one_hot(np.array([A]), 0.8), one_hot(np.array([B]), 0.6)
    equal = soft_vote([p1, p2])
    np.testing.assert_allclose(equal, (p1 + p2) / 2)
    weighted = soft_vote([p1, p2], [1.0, 3.0])
    np.testing.assert_allclose(weighted, 0.25 * p1 + 0.75 * p2)
    assert weighted.argmax() == B and equal.argmax() == A
    with pytest.raises(ValueError, match="non-negative"):
        soft_vote([p1, p2], [0, 0])


def test_hard_vote_majority():
    members = [one_hot(np.array([A])), one_hot(np.array([A])), one_hot(np.array([B]), 0.99)]
    votes = hard_vote(members)
    assert votes.argmax() == A and votes[0, A] == pytest.approx(2 / 3, abs=1e-4)


def test_merged37_accuracy_counts_look_alike_cases_as_right():
    a, b_, O_ = (labels.index_of(ch) for ch in "abO")
    y_true = np.array([o, O_, a, A])
    predicted = np.array([O_, o, A, A])  # o/O merged (right twice); a->A is not merged (wrong)
    figures = classification_metrics(y_true, one_hot(predicted))
    assert figures["merged37_accuracy"] == pytest.approx(3 / 4)
    assert figures["case_insensitive_accuracy"] == pytest.approx(1.0)
    assert figures["accuracy"] == pytest.approx(1 / 4)


def test_bootstrap_intervals_bracket_the_figure_and_shrink_with_more_images():
    from handwriting.evaluation.metrics import bootstrap_intervals

    rng = np.random.default_rng(0)

    def intervals(n):
        y_true = rng.integers(0, labels.NUM_CLASSES, n)
        predicted = np.where(rng.random(n) < 0.8, y_true, (y_true + 1) % labels.NUM_CLASSES)
        figures = classification_metrics(y_true, one_hot(predicted))
        ci = bootstrap_intervals(y_true, one_hot(predicted), seed=3, samples=300)
        assert ci["accuracy_ci95_low"] <= figures["accuracy"] <= ci["accuracy_ci95_high"]
        assert ci["f1_macro_ci95_low"] <= ci["f1_macro_ci95_high"]
        assert ci == bootstrap_intervals(y_true, one_hot(predicted), seed=3, samples=300)
        return ci["accuracy_ci95_high"] - ci["accuracy_ci95_low"]

    small, large = intervals(200), intervals(3000)
    assert 0.05 < small < 0.2  # about +/- 2.8 points at 200 images and 80 %
    assert large < 0.5 * small


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_macro_f1_is_scikit_learns_to_the_bit(seed):
    """The bootstrap's own macro F1 equals scikit-learn's f1_score (macro over the classes
    present in the truth, zero_division=0), including classes only ever predicted and
    classes never predicted, and so do the intervals built on it."""
    from sklearn.metrics import f1_score

    from handwriting.evaluation.metrics import _macro_f1, bootstrap_intervals

    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 40, 300)  # classes 40-51 absent from the truth ...
    predicted = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 52, 300))  # ... not here
    predicted[predicted == 7] = 8  # class 7 in the truth, never predicted
    for n in (1, 5, 300):
        truth, guess = y_true[:n], predicted[:n]
        assert _macro_f1(truth, guess) == f1_score(truth, guess, average="macro",
                                                   labels=np.unique(truth), zero_division=0)
    reference_rng = np.random.default_rng(11)
    accuracy, f1 = [], []
    for _ in range(50):
        pick = reference_rng.integers(0, 300, 300)
        accuracy.append(np.mean(y_true[pick] == predicted[pick]))
        f1.append(f1_score(y_true[pick], predicted[pick], average="macro",
                           labels=np.unique(y_true[pick]), zero_division=0))
    ci = bootstrap_intervals(y_true, one_hot(predicted), seed=11, samples=50)
    assert ci == {"accuracy_ci95_low": round(float(np.percentile(accuracy, 2.5)), 6),
                  "accuracy_ci95_high": round(float(np.percentile(accuracy, 97.5)), 6),
                  "f1_macro_ci95_low": round(float(np.percentile(f1, 2.5)), 6),
                  "f1_macro_ci95_high": round(float(np.percentile(f1, 97.5)), 6)}


def test_paired_bootstrap_gain_of_identical_models_is_exactly_zero():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, labels.NUM_CLASSES, 200)
    predicted = np.where(rng.random(200) < 0.7, y_true, (y_true + 1) % labels.NUM_CLASSES)
    same = one_hot(predicted)
    assert paired_bootstrap_gain(y_true, same, same.copy(), seed=0) == {
        "gain": 0.0, "ci95_low": 0.0, "ci95_high": 0.0}


def test_paired_bootstrap_gain_of_a_model_right_on_an_extra_subset():
    """The better model is right wherever the baseline is and on 30 more of 200 images: the gain
    is exactly 30/200, and since no image counts against it every resample's gain is >= 0; the
    interval is above 0, brackets the gain and is far narrower than an unpaired one (the
    baseline's own interval at 40 % of 200 images is about +/- 0.07)."""
    y_true = np.arange(200) % labels.NUM_CLASSES
    wrong = (y_true + 1) % labels.NUM_CLASSES
    baseline = np.where(np.arange(200) < 80, y_true, wrong)  # right on the first 80
    better = np.where(np.arange(200) < 110, y_true, wrong)  # and on the next 30
    result = paired_bootstrap_gain(y_true, one_hot(baseline), one_hot(better), seed=4)
    assert result["gain"] == 0.15
    assert 0 < result["ci95_low"] < 0.15 < result["ci95_high"] < 0.3
    assert result["ci95_high"] - result["ci95_low"] < 0.11
    # The order of the two models flips the sign and mirrors the interval.
    reverse = paired_bootstrap_gain(y_true, one_hot(better), one_hot(baseline), seed=4)
    assert reverse == {"gain": -0.15, "ci95_low": -result["ci95_high"],
                       "ci95_high": -result["ci95_low"]}


def test_paired_bootstrap_gain_resamples_the_same_images_for_both_models():
    """Against a loop over the resamples, each drawn from the seeded generator and applied to
    both models' correctness alike."""
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, labels.NUM_CLASSES, 150)
    first = np.where(rng.random(150) < 0.6, y_true, (y_true + 2) % labels.NUM_CLASSES)
    second = np.where(rng.random(150) < 0.7, y_true, (y_true + 3) % labels.NUM_CLASSES)
    result = paired_bootstrap_gain(y_true, one_hot(first), one_hot(second), seed=9, samples=200)
    picks = np.random.default_rng(9).integers(0, 150, (200, 150))
    gains = [np.mean(second[p] == y_true[p]) - np.mean(first[p] == y_true[p]) for p in picks]
    assert result["gain"] == round(np.mean(second == y_true) - np.mean(first == y_true), 6)
    assert result["ci95_low"] == pytest.approx(np.percentile(gains, 2.5), abs=1e-6)
    assert result["ci95_high"] == pytest.approx(np.percentile(gains, 97.5), abs=1e-6)
    assert result == paired_bootstrap_gain(y_true, one_hot(first), one_hot(second), seed=9,
                                           samples=200)  # same seed, same result
    assert result != paired_bootstrap_gain(y_true, one_hot(first), one_hot(second), seed=10,
                                           samples=200)


def test_paired_bootstrap_gain_names_a_length_mismatch_and_an_empty_set():
    y_true = np.array([A, B, C])
    with pytest.raises(ValueError, match="got 3 labels, 2 baseline rows and 3 rows"):
        paired_bootstrap_gain(y_true, one_hot(np.array([A, B])), one_hot(y_true), seed=0)
    with pytest.raises(ValueError, match="got 3 labels, 3 baseline rows and 4 rows"):
        paired_bootstrap_gain(y_true, one_hot(y_true), one_hot(np.array([A, B, C, A])), seed=0)
    empty = np.zeros((0, labels.NUM_CLASSES))
    with pytest.raises(ValueError, match="needs at least one image, got none"):
        paired_bootstrap_gain(np.array([], dtype=int), empty, empty, seed=0)
