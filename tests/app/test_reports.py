"""What the Models and Home pages read: confusion records, training histories, evaluate.json,
the ensemble's weights and the champion's files; missing files are None, broken ones named."""

from __future__ import annotations

import json

import pytest

from handwriting import labels
from handwriting.app.catalog import ModelChoice, champion_report, ensemble_choice
from handwriting.app.reports import (
    ReportError,
    confusion_cells,
    ensemble_description,
    load_evaluation,
    model_figures,
    read_comparison,
    read_confusion,
    read_history,
)
from tests.conftest import project_params


def test_the_confusion_matrix_counts_every_row(tmp_path):
    folder = tmp_path / "evaluate" / "confusion"
    folder.mkdir(parents=True)
    (folder / "m.csv").write_text("actual,predicted\nA,A\nA,A\nA,a\nz,Z\n")
    matrix = read_confusion(tmp_path, "m")
    assert matrix.shape == (52, 52) and matrix.sum() == 4
    a, lower_a, z, upper_z = (labels.index_of(c) for c in "AazZ")
    assert matrix[a, a] == 2 and matrix[a, lower_a] == 1 and matrix[z, upper_z] == 1
    cells = {(c["actual"], c["predicted"]): c for c in confusion_cells(matrix)}
    assert cells[("A", "A")]["share"] == pytest.approx(2 / 3)
    assert cells[("z", "Z")] == {"actual": "z", "predicted": "Z", "count": 1, "share": 1.0}


def test_missing_files_are_none_and_broken_ones_are_named(tmp_path):
    assert read_confusion(tmp_path, "m") is None and read_history(tmp_path, "m") is None
    assert load_evaluation(tmp_path) is None and read_comparison(tmp_path) is None
    folder = tmp_path / "evaluate" / "confusion"
    folder.mkdir(parents=True)
    (folder / "m.csv").write_text("actual,predicted\nA,7\n")
    with pytest.raises(ReportError, match=r"m\.csv: line 2: '7' is not one of the 52"):
        read_confusion(tmp_path, "m")
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "m.csv").write_text("epoch,accuracy\n1,0.5\n")
    with pytest.raises(ReportError, match="missing.*dvc repro"):
        read_history(tmp_path, "m")
    (tmp_path / "evaluate.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="evaluate.json: expected a JSON object"):
        load_evaluation(tmp_path)


def test_figures_are_flattened_per_model():
    results = {"lenet5": {"untuned": {"accuracy": 0.8}, "tuned": {"accuracy": 0.9}},
               "ensemble": {"accuracy": 0.95}}
    assert model_figures(results) == {"lenet5-untuned": {"accuracy": 0.8},
                                      "lenet5-tuned": {"accuracy": 0.9},
                                      "ensemble": {"accuracy": 0.95}}


def test_comparison_headings_are_demoted(tmp_path):
    (tmp_path / "comparison.md").write_text("# Title\n\n## Part\n\ntext #1\n")
    assert read_comparison(tmp_path) == "### Title\n\n#### Part\n\ntext #1\n"


def test_the_app_s_ensemble_is_the_evaluated_one_or_none(tmp_path):
    def tuned(*names):
        return [ModelChoice(name, "keras", arch=name.split("-")[0], variant="tuned")
                for name in names]

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a-tuned.json").write_text(json.dumps({"val_accuracy": 0.8}))
    (tmp_path / "train" / "b-tuned.json").write_text(json.dumps({"val_accuracy": 0.4}))
    section = evaluate_section(ensemble="soft", ensemble_weighting="val_accuracy")
    soft = ensemble_choice(tuned("a-tuned", "b-tuned"), tmp_path, section)
    assert (soft.weights, soft.vote) == ((0.8, 0.4), "soft")
    equal = ensemble_choice(tuned("a-tuned", "b-tuned"), tmp_path,
                            evaluate_section(ensemble="hard", ensemble_weighting="none"))
    assert (equal.weights, equal.vote) == ((1.0, 1.0), "hard")
    # A weight that cannot be read is not replaced by an equal one: no ensemble, and why.
    missing = ensemble_choice(tuned("a-tuned", "c-tuned"), tmp_path, section)
    assert "c-tuned.json" in missing and "dvc repro" in missing
    (tmp_path / "train" / "b-tuned.json").write_text(json.dumps({"val_accuracy": 0}))
    assert "val_accuracy is 0.0" in ensemble_choice(tuned("a-tuned", "b-tuned"), tmp_path,
                                                    section)
    # No settings (a bad one is named when params.yaml is read): no ensemble, and why.
    assert "has no evaluate section" in ensemble_choice(tuned("a-tuned"), tmp_path, None)


def test_the_ensemble_is_described_as_params_yaml_defines_it():
    soft = ensemble_description(evaluate_section(ensemble="soft",
                                                 ensemble_weighting="val_accuracy"))
    assert soft.startswith("Soft vote") and "weighted by their validation accuracy" in soft
    hard = ensemble_description(evaluate_section(ensemble="hard", ensemble_weighting="none"))
    assert hard.startswith("Hard vote") and "equal weights" in hard
    assert "has no evaluate section" in ensemble_description(None)


def evaluate_section(**changes):
    """The project's typed ``evaluate`` section with ``changes``."""
    import dataclasses

    return dataclasses.replace(project_params().evaluate, **changes)


def test_the_champion_report_reads_both_files_and_names_broken_ones(tmp_path):
    models, metrics = tmp_path / "models", tmp_path / "metrics"
    assert champion_report(models, metrics) is None
    (models / "serving").mkdir(parents=True)
    (models / "serving" / "serving.json").write_text(json.dumps({
        "image_size": 32, "margin": 0.08, "max_pixels": 100, "labels": list(labels.CLASSES),
        "model": {"name": "gru-tuned", "val_f1_macro": 0.75}}))
    report = champion_report(models, metrics)
    assert report.name == "gru-tuned" and report.val_f1_macro == 0.75
    assert report.settings == {"image_size": 32, "margin": 0.08, "max_pixels": 100}
    metrics.mkdir()
    (metrics / "serving.json").write_text("{broken")
    assert "serving.json: not valid JSON" in champion_report(models, metrics).problems[0]


def test_each_architecture_is_described_by_its_builder():
    from handwriting.app.reports import describe
    from handwriting.models.zoo import ARCHITECTURES

    for arch in ARCHITECTURES:
        text = describe(arch)
        assert len(text) > 40 and ":func:" not in text and "``" not in text, (arch, text)
    assert describe("lenet5").startswith("LeNet-5 with batch normalisation and dropout. Conv")
    assert "`build_lstm`" in describe("gru")
    assert describe("nope") == "nope: an architecture the model zoo does not describe."
