"""Tuning: a seeded search repeats itself, failures do not end it, MLflow nests the trials."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from handwriting import labels
from handwriting.datasets import save_arrays
from handwriting.params import load_params
from handwriting.models import search
from handwriting.params import ParamsError
from handwriting.stages import tune
from tests.conftest import REPO


@pytest.fixture()
def tiny_split(tmp_path):
    rng = np.random.default_rng(0)
    for subset, count in (("train", 156), ("val", 52)):
        class_ids = np.arange(count) % labels.NUM_CLASSES
        save_arrays(tmp_path / "split" / subset,
                    images=rng.integers(0, 256, size=(count, 32, 32), dtype=np.uint8),
                    labels=class_ids)
    return tmp_path / "split"


def write_params(tmp_path, **tune_changes):
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values["tune"].update({"n_trials": 3, "trial_epochs": 1, "trial_fraction": 0.5,
                           "max_epochs": 3, "patience": 1, "pruner": "none"})
    values["tune"]["lenet5"] = {"learning_rate": [0.01, 0.001], "dropout": [0.3, 0.4],
                                "batch_size": [16, 32]}
    values["tune"].update(tune_changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def trials_of(study):
    return [(t.params, t.state.name, t.value) for t in study.trials]


@pytest.mark.parametrize("sampler", ["random", "tpe", "grid"])
def test_a_seeded_search_gives_the_same_trials_twice(tmp_path, tiny_split, mlflow_store,
                                                     sampler):
    params = load_params(write_params(tmp_path, sampler=sampler))
    _, first = search.search("lenet5", params, tiny_split)
    _, second = search.search("lenet5", params, tiny_split)
    assert len(first.trials) == 3
    assert trials_of(first) == trials_of(second)
    if sampler == "grid":  # a grid never repeats a point
        assert len({json.dumps(t.params, sort_keys=True) for t in first.trials}) == 3


def test_failing_trials_do_not_end_the_search_and_are_recorded(tmp_path, tiny_split,
                                                               mlflow_store, monkeypatch):
    from mlflow import MlflowClient

    from handwriting.models import zoo

    real_build = zoo.build

    def build_that_breaks(arch, input_shape, num_classes, **hparams):
        if hparams["dropout"] == 0.4:
            raise RuntimeError("simulated crash")
        return real_build(arch, input_shape, num_classes, **hparams)

    monkeypatch.setattr(zoo, "build", build_that_breaks)
    params = load_params(write_params(tmp_path, sampler="grid", n_trials=8))
    best, study = search.search("lenet5", params, tiny_split)
    states = [t.state.name for t in study.trials]
    assert len(states) == 8 and states.count("FAIL") == 4 and states.count("COMPLETE") == 4
    assert best["dropout"] == 0.3

    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("handwriting").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("variant") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 8
    assert sorted(c.data.tags["state"] for c in children) == ["complete"] * 4 + ["failed"] * 4
    failed = [c for c in children if c.data.tags["state"] == "failed"]
    assert all("simulated crash" in c.data.tags["error"] for c in failed)
    complete = [c for c in children if c.data.tags["state"] == "complete"]
    assert all(client.get_metric_history(c.info.run_id, "val_accuracy") for c in complete)
    assert parent.data.metrics["trials_fail"] == 4


def test_a_nan_loss_fails_the_trial_and_all_failed_is_a_clear_error(tmp_path, tiny_split,
                                                                    mlflow_store):
    params = load_params(write_params(tmp_path, lenet5={"learning_rate": [1e12],
                                                        "optimizer": ["sgd"]}, n_trials=2))
    with pytest.raises(search.SearchError, match="all 2 trials of lenet5 failed or were pruned"):
        search.search("lenet5", params, tiny_split)


def test_pruned_trials_are_marked(tmp_path, tiny_split, mlflow_store, monkeypatch):
    import optuna

    params = load_params(write_params(tmp_path, n_trials=4, trial_epochs=2, pruner="median"))
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number >= 2)
    _, study = search.search("lenet5", params, tiny_split)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]


def test_run_writes_best_params_tuned_model_history_and_summary(tmp_path, tiny_split,
                                                               mlflow_store):
    out = tmp_path / "out"
    summary = tune.run("lenet5", write_params(tmp_path), tiny_split, out / "best.json",
                       out / "tuned.keras", out / "tuned.csv", out / "tuned.json")
    best = json.loads((out / "best.json").read_text())
    assert set(best) == {"learning_rate", "dropout", "batch_size"}
    assert (out / "tuned.keras").is_file()
    written = json.loads((out / "tuned.json").read_text())
    assert written == summary and written["chosen"] == best and written["trials"] == 3
    assert 1 <= written["epochs"] <= 3 and written["reported_epoch"] <= written["epochs"]


def test_bad_settings_are_clear_errors(tmp_path):
    params = load_params(write_params(tmp_path, sampler="annealing"))
    with pytest.raises(ParamsError, match="tune.sampler must be one of random, grid, tpe"):
        search.tune_settings(params, "lenet5")
    params = load_params(write_params(tmp_path))
    with pytest.raises(ParamsError, match="no search space tune.resnet"):
        search.tune_settings(params, "resnet")
    # The stage's command line says it in one line.
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"^tune: tune.sampler must be one of random, grid"):
        tune.main(["--arch", "lenet5", "--params", str(write_params(tmp_path,
                                                                     sampler="annealing")),
                   "--split", str(tmp_path / "split"), "--best-params", str(out / "b.json"),
                   "--model", str(out / "m.keras"), "--history", str(out / "h.csv"),
                   "--metrics", str(out / "m.json")])
