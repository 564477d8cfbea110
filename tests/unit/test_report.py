"""The evaluate stage's Markdown report, written from plain figures (no models needed)."""

from __future__ import annotations

from handwriting.evaluation import report


def _gain(val: float, low: float, high: float, emnist: float) -> dict[str, float]:
    return {"val_accuracy": val, "val_accuracy_ci95_low": low, "val_accuracy_ci95_high": high,
            "test_accuracy": 0.01, "test_accuracy_ci95_low": -0.01,
            "test_accuracy_ci95_high": 0.03, "emnist_accuracy": emnist,
            "emnist_accuracy_ci95_low": emnist - 0.01, "emnist_accuracy_ci95_high": emnist + 0.01,
            "test_f1_macro": 0.02}


def test_the_tuning_gain_section_counts_wins_beyond_the_interval():
    section = report.tuning_gain_section({"lenet5": _gain(0.03, 0.01, 0.05, 0.02),
                                          "gru": _gain(0.01, -0.01, 0.03, -0.01)})
    assert "| lenet5 | **+0.030 (+0.010 to +0.050)** |" in section
    assert "| gru | +0.010 (-0.010 to +0.030) |" in section
    assert "beyond the interval on validation for 1 of 2 architectures" in section
    assert "on emnist (52-class accuracy) tuned ≥ untuned for 1 of 2" in section
    assert "mean of the seed's 2" in section


def test_a_cross_dataset_section_marks_the_champion_and_skips_counts():
    figures = {"images": 3, "skipped": 1,
               "rescnn-tuned": {"accuracy": 0.5, "case_insensitive_accuracy": 0.6,
                                "merged37_accuracy": 0.55, "f1_macro": 0.4,
                                "top5_accuracy": 0.9}}
    section = report.crossdata_section("emnist", figures, "rescnn-tuned")
    assert "## Cross-dataset: emnist (3 images)" in section
    assert "| rescnn-tuned **champion** | 0.500 | 0.600 | 0.550 | 0.400 | 0.900 |" in section
    assert "skipped" not in section.split("\n", 3)[-1]


def test_the_unsure_section_gives_every_set():
    section = report.unsure_section({"threshold": 0.4, "keep_correct": 0.95,
                                     "test": {"unsure_share": 0.06, "accuracy_answered": 0.89,
                                              "accuracy_all": 0.87}})
    assert "probability of 0.400 (it keeps 95% of the correct" in section
    assert "| test | 0.060 | 0.890 | 0.870 |" in section
