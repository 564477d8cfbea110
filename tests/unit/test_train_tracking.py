"""Training stage: a tiny model trained for one epoch against a temporary SQLite MLflow store,
read back through the MLflow client; plus the stage's outputs and its settings checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from handwriting import labels, tracking
from handwriting.datasets import save_arrays
from handwriting.models.training import arch_settings
from handwriting.params import ParamsError, load_params
from handwriting.stages import train
from tests.conftest import repo_params


@pytest.fixture()
def tiny_split(tmp_path):
    rng = np.random.default_rng(0)
    for subset, count in (("train", 104), ("val", 52)):
        class_ids = np.arange(count) % labels.NUM_CLASSES
        images = rng.integers(0, 256, size=(count, 32, 32), dtype=np.uint8)
        save_arrays(tmp_path / "split" / subset, images=images, labels=class_ids)
    return tmp_path / "split"


@pytest.fixture()
def params_file(tmp_path):
    values = repo_params()
    values["train"]["lenet5"]["epochs"] = 1
    values["train"]["lenet5"]["batch_size"] = 16
    values["train"]["gru"]["epochs"] = 2
    values["train"]["gru"]["units"] = 8
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.slow
def test_one_epoch_is_tracked_with_params_metrics_tags_and_artifacts(
        tmp_path, tiny_split, params_file, mlflow_store):
    from mlflow import MlflowClient

    out = tmp_path / "out"
    summary = train.run("gru", params_file, tiny_split, out / "gru.keras", out / "gru.csv",
                        out / "gru.json")
    assert (out / "gru.keras").is_file()
    assert json.loads((out / "gru.json").read_text()) == summary
    assert summary["epochs"] == 2 and summary["pretrained"] is False
    assert (out / "gru.csv").read_text().splitlines()[0] == \
        "epoch,accuracy,loss,val_accuracy,val_loss"

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment.artifact_location.startswith("file://")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["model.units"] == "8"
    assert run.data.params["fit.learning_rate"] == "0.001"
    assert run.data.params["base.image_size"] == "32"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [point.step for point in history] == [1, 2]
    tags = run.data.tags
    assert tags["architecture"] == "gru" and tags["variant"] == "untuned"
    assert tags["pretrained"] == "false" and tags["dvc_exp_name"] == "test-exp"
    assert tags["dvc_stage"] == "train@gru" and tags["git_commit"]
    assert run.data.params["augment.copies"] == "3" and run.data.params["preprocess.margin"]
    assert tags["data_version"] == "unknown"  # no dvc.lock here (see the test below)
    assert run.data.metrics["wall_seconds"] > 0 and run.data.metrics["images_per_second"] > 0
    assert "wall_seconds" not in summary and "images_per_second" not in summary  # timings
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history", "curves.png", "model_summary.txt"} <= artifacts
    # The model is an MLflow model of this run: signature, input example, same answers.
    import keras
    import mlflow

    (logged,) = client.search_logged_models([experiment.experiment_id])
    assert logged.source_run_id == run.info.run_id and logged.name == "model"
    info = mlflow.models.get_model_info(f"models:/{logged.model_id}")
    (image,), (probabilities,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (image.name, image.type, image.shape) == ("image", np.dtype("float32"),
                                                     (-1, 32, 32, 1))
    assert (probabilities.name, probabilities.shape) == ("probabilities",
                                                         (-1, labels.NUM_CLASSES))
    assert info.saved_input_example_info is not None
    images = np.random.default_rng(1).random((3, 32, 32, 1), dtype=np.float32)
    reloaded = mlflow.keras.load_model(f"models:/{logged.model_id}")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0),
                               keras.saving.load_model(out / "gru.keras").predict(
                                   images, verbose=0), atol=1e-6)


def test_the_data_version_is_the_split_hash_dvc_recorded(tmp_path):
    lock = tmp_path / "dvc.lock"
    assert tracking.data_version(lock) == "unknown"  # no dvc.lock: not in a pipeline
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "raw": {"outs": [{"path": "data/raw", "md5": "aaa.dir"}]},
        "split": {"outs": [{"path": "data/split", "md5": "0123abcd.dir", "nfiles": 13}]}}}))
    assert tracking.data_version(lock) == "0123abcd.dir"
    lock.write_text("stages: [this is: not a lock")
    assert tracking.data_version(lock) == "unknown"


@pytest.mark.slow
def test_same_params_same_metrics(tmp_path, tiny_split, params_file, mlflow_store):
    results = []
    for attempt in range(2):
        out = tmp_path / f"out{attempt}"
        summary = train.run("lenet5", params_file, tiny_split, out / "m.keras", out / "h.csv",
                            out / "s.json")
        results.append((summary["val_accuracy"], summary["val_loss"], summary["loss"]))
    assert results[0] == results[1]


def test_the_tracking_uri_is_an_absolute_sqlite_path(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    uri = tracking.tracking_uri(tmp_path / "sub")
    assert uri == f"sqlite:///{tmp_path.resolve().as_posix()}/mlflow.db"


def test_unknown_architecture_settings_are_clear_errors(params_file):
    params = load_params(params_file)
    with pytest.raises(ParamsError, match="no train.resnet section"):
        arch_settings(params.train, "resnet")
    with pytest.raises(ParamsError, match="no train.lenet5 section"):
        arch_settings(None, "lenet5")
    fit, hparams = arch_settings(params.train, "vgg16")
    assert fit.fine_tune_blocks == 0 and hparams["weights"] == "imagenet"


def test_runs_of_dvc_experiments_go_to_the_users_repository(tmp_path, monkeypatch):
    # DVC runs queued and --temp experiments in a temporary copy and sets DVC_ROOT to the
    # user's repository: the store and relative params paths must follow DVC_ROOT.
    user, copy = tmp_path / "user", tmp_path / "user/.dvc/tmp/exps/tmp123"
    copy.mkdir(parents=True)
    (user / "dvc.yaml").write_text("stages: {}\n")
    (copy / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(copy)
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    assert tracking.repo_root() == copy.resolve()  # plain run: the nearest dvc.yaml
    monkeypatch.setenv("DVC_ROOT", str(user))
    assert tracking.repo_root() == user.resolve()
    assert tracking.tracking_uri() == f"sqlite:///{(user / 'mlflow.db').resolve().as_posix()}"
    assert tracking.resolve("../shared/data") == user.resolve() / "../shared/data"
    assert tracking.resolve(tmp_path / "abs") == tmp_path / "abs"
    assert tracking.repo_root(copy) == copy.resolve()  # an explicit start still wins
    monkeypatch.setenv("DVC_EXP_NAME", "q-lenet")
    assert tracking.experiment_tags() == {"dvc_exp_name": "q-lenet"}
    tags = tracking.run_tags(stage="train@lenet5", architecture="lenet5", variant="untuned",
                             pretrained=True)
    assert tags["dvc_exp_name"] == "q-lenet"
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    assert tracking.git_commit() == "abc123"  # the experiment's baseline, not the user's HEAD
    monkeypatch.delenv("DVC_EXP_NAME")
    assert tracking.experiment_tags() == {}
