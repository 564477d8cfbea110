"""Tuning: the rung schedule, the untuned configuration at every rung, the winner being the
top rung's model, a seeded search repeating itself, failures, and MLflow's nested trials."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from handwriting.models import search
from handwriting.params import ParamsError, Tune, load_params
from handwriting.stages import train, tune
from tests.conftest import project_params, repo_params

SPACE = {"learning_rate": [0.01, 0.001], "dropout": [0.3, 0.4], "batch_size": [16, 32]}


def write_params(tmp_path, epochs=3, **tune_changes):
    values = repo_params()
    values["train"]["lenet5"]["epochs"] = epochs
    values["tune"].update({"n_trials": 4, "rungs": 2, "reduction": 2, "patience": 1,
                           "tie_se": 0.0})
    values["tune"]["lenet5"] = SPACE
    values["tune"].update(tune_changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def settings(**changes):
    plain = dict(sampler="random", n_trials=6, reduction=3, rungs=3, patience=3, storage=None,
                 workers=1, tie_se=0.0)
    return Tune(**{**plain, **changes})


def untuned_files(tmp_path, params_path, split):
    """Train the untuned lenet5 as train@lenet5 does; returns its three files."""
    out = tmp_path / "untuned"
    files = (out / "untuned.keras", out / "untuned.csv", out / "untuned.json")
    train.run("lenet5", params_path, split, *files)
    return files


def run_tune(tmp_path, params_path, split, untuned):
    out = tmp_path / "out"
    files = (out / "best.json", out / "tuned.keras", out / "tuned.csv", out / "tuned.json",
             out / "rungs.csv")
    summary = tune.run("lenet5", params_path, split, *untuned, *files)
    return summary, files


def read_rungs(path):
    """plots/tune/<arch>-rungs.csv as {rung: {configuration: (score, promoted)}}."""
    rungs: dict[int, dict[str, tuple[float, bool]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rungs.setdefault(int(row["rung"]), {})[row["configuration"]] = (
                float(row["val_accuracy"]), row["promoted"] == "1")
    return rungs


def val_accuracy(model_path, split):
    import keras

    model = keras.models.load_model(model_path)
    val = np.load(split / "val" / "images.npy"), np.load(split / "val" / "labels.npy")
    probabilities = model.predict(val[0].astype(np.float32)[..., None] / 255.0, verbose=0)
    return float(np.mean(probabilities.argmax(axis=1) == val[1]))


# --- the schedule --------------------------------------------------------------------------

def test_the_rung_schedule_grows_data_and_epochs_up_to_the_untuned_budget():
    rungs = search.rung_schedule(settings(), epochs=10)
    assert [(r.share, r.epochs, r.top) for r in rungs] == [
        (1 / 9, 3, False), (1 / 3, 6, False), (1.0, 10, True)]
    assert [(r.share, r.epochs) for r in search.rung_schedule(settings(reduction=2), 8)] == [
        (0.25, 4), (0.5, 6), (1.0, 8)]
    assert search.rung_schedule(settings(), epochs=1)[0].epochs == 1
    (only,) = search.rung_schedule(settings(rungs=1), epochs=6)
    assert (only.share, only.epochs, only.top) == (1.0, 6, True)


def test_a_frozen_base_head_trains_on_all_the_data_at_every_rung_and_says_so():
    # Its rungs shrink the epochs only (the cached features of every row are at hand), and the
    # schedule, hence the rungs' CSV and the trials' MLflow params, states that share.
    assert [(r.share, r.epochs, r.top) for r in
            search.rung_schedule(settings(), epochs=10, subsample=False)] == [
        (1.0, 3, False), (1.0, 6, False), (1.0, 10, True)]
    params = project_params()
    assert params.tune is not None
    for arch in ("vgg16", "vgg16_gru"):
        assert {r.share for r in search.arch_schedule(params.tune, params, arch)} == {1.0}
    shares = [r.share for r in search.arch_schedule(params.tune, params, "lenet5")]
    assert shares == sorted(shares) and shares[0] < 1 and shares[-1] == 1.0


@pytest.mark.parametrize("schedule, warmup, reduces", [
    ("constant", 0, True), ("constant", 1, False), ("cosine", 0, False), ("cosine", 1, False)])
def test_the_top_rung_reduces_a_plain_rate_on_plateaus_and_leaves_a_schedule_alone(
        schedule, warmup, reduces):
    # A constant rate after a warm-up is a schedule Keras cannot set: a plateau-reduction
    # callback there failed the challenger's top-rung trial at its first plateau.
    import keras

    from handwriting.models.fitting import FitSettings, compile_model, learning_rate_schedule

    fit = FitSettings(epochs=4, batch_size=8, learning_rate=0.01, optimizer="adam",
                      label_smoothing=0.0, lr_schedule=schedule, warmup_epochs=warmup,
                      augment_on_the_fly=0.0, fine_tune_blocks=0, fine_tune_epochs=0,
                      engine="jax")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(52, activation="softmax")])
    compile_model(model, fit.optimizer, learning_rate_schedule(fit, steps_per_epoch=3))
    model.optimizer.iterations.assign(6)  # two epochs in: past the warm-up, the rate 0.01
    callbacks = search.trials.top_rung_callbacks(fit, patience=2)
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, val_loss in enumerate([1.0, 2.0, 3.0]):  # no better epoch after the first
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"val_loss": val_loss, "val_accuracy": 0.1})
    assert any(isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in callbacks) == reduces
    if reduces:
        assert float(model.optimizer.learning_rate) == pytest.approx(0.0025)


def test_a_rung_promotes_its_best_challengers_and_always_the_untuned_configuration():
    scores = {0: 0.10, 1: 0.50, 2: 0.40, 3: 0.45, 4: 0.20, 5: 0.05}
    assert search.promoted(scores, reduction=3) == [0, 1, 3]  # 2 of 5 challengers
    # The untuned settings take no challenger's place, even when they score best.
    assert search.promoted({0: 0.9, 1: 0.5, 2: 0.4}, reduction=3) == [0, 1]
    assert search.promoted({0: 0.1, 1: 0.5, 2: 0.5}, reduction=3) == [0, 1]  # a tie: lower id
    assert search.promoted({1: 0.5, 2: 0.4}, reduction=2) == [1]  # untuned failed
    assert search.promoted({0: 0.5}, reduction=3) == [0]  # no challenger scored


def test_a_rung_also_promotes_the_challengers_tied_with_the_last_one_promoted():
    scores = {0: 0.43, 1: 0.61, 2: 0.62, 3: 0.59, 4: 0.30}
    assert search.promoted(scores, reduction=4) == [0, 2]  # exactly 1 of 4
    # On 1,144 images an accuracy near 0.6 varies by about 0.0145: config 1 (0.01 below the
    # last promoted) is a tie at one standard error, config 3 (0.03 below) is not.
    assert search.promoted(scores, reduction=4, tie_se=1.0, n_images=1144) == [0, 1, 2]
    assert search.promoted(scores, reduction=4, tie_se=2.5, n_images=1144) == [0, 1, 2, 3]
    assert search.promoted(scores, reduction=4, tie_se=0.0, n_images=1144) == [0, 2]
    assert search.promoted(scores, reduction=4, tie_se=1.0, n_images=100_000) == [0, 2]
    # A perfect score has no spread: only an equal one ties with it.
    assert search.promoted({1: 1.0, 2: 1.0, 3: 0.99}, reduction=4, tie_se=3.0,
                           n_images=50) == [1, 2]


@pytest.mark.parametrize("sampler", ["random", "grid"])
def test_the_first_configurations_start_with_the_untuned_and_are_seeded_and_distinct(sampler):
    untuned = {"learning_rate": 0.002, "dropout": 0.3, "batch_size": 32}  # not a grid point
    first = search.first_configurations(settings(sampler=sampler), SPACE, untuned, seed=7)
    again = search.first_configurations(settings(sampler=sampler), SPACE, untuned, seed=7)
    assert first == again and first[0] == untuned and len(first) == 6
    assert len({json.dumps(c, sort_keys=True) for c in first}) == 6
    assert all(c[k] in SPACE[k] for c in first[1:] for k in SPACE)
    # A space smaller than n_trials gives each of its points once.
    small = {"dropout": [0.3, 0.4, 0.5]}
    drawn = search.first_configurations(settings(sampler=sampler), small, {"dropout": 0.3}, 1)
    assert sorted(c["dropout"] for c in drawn) == [0.3, 0.4, 0.5]


def test_ranges_are_drawn_inside_them_on_their_scale_and_seeded():
    space = {"learning_rate": {"low": 0.0005, "high": 0.01, "log": True},
             "units": {"low": 32, "high": 128, "step": 32}, "dropout": [0.2, 0.3]}
    untuned = {"learning_rate": 0.001, "units": 128, "dropout": 0.5}
    first = search.first_configurations(settings(n_trials=30), space, untuned, seed=3)
    assert first == search.first_configurations(settings(n_trials=30), space, untuned, seed=3)
    rates = [c["learning_rate"] for c in first[1:]]
    assert len(first) == 30 and all(0.0005 <= r <= 0.01 for r in rates)
    assert np.median(rates) < 0.004  # log scale: half below the geometric middle (~0.0022)
    assert {c["units"] for c in first[1:]} <= {32, 64, 96, 128}
    assert all(isinstance(c["units"], int) for c in first[1:])
    assert search.in_space(0.001, space["learning_rate"]) and not search.in_space(
        0.02, space["learning_rate"]) and not search.in_space(True, space["units"])
    assert search.untuned_in_space(untuned, space) is False  # dropout 0.5 is no choice


@pytest.mark.parametrize(("spec", "named"), [
    ([], "must be a non-empty list of choices or a range"),
    ({"low": 0.1}, "must be a list of choices or a range"),
    ({"low": 0.1, "high": 0.2, "scale": "log"}, "must be a list of choices or a range"),
    ({"low": 0.2, "high": 0.1}, "low and high must be numbers with low < high"),
    ({"low": "a", "high": 0.1}, "low and high must be numbers"),
    ({"low": 0.0, "high": 0.1, "log": True}, "a log-scale range needs low > 0 and no step"),
    ({"low": 0.1, "high": 0.5, "log": "yes"}, r"learning_rate\.log must be true or false"),
    ({"low": 0.1, "high": 0.5, "step": 0}, r"learning_rate\.step must be above 0"),
    ("0.1", "must be a list of choices or a range"),
])
def test_a_bad_space_key_is_named_with_the_fix(tmp_path, spec, named):
    path = write_params(tmp_path, lenet5={"learning_rate": spec})
    with pytest.raises(ParamsError, match=named) as raised:
        search.tune_settings(load_params(path).tune, "lenet5")
    assert "tune.lenet5.learning_rate" in str(raised.value)


def test_the_grid_sampler_needs_lists(tmp_path):
    path = write_params(tmp_path, sampler="grid",
                        lenet5={"learning_rate": {"low": 0.001, "high": 0.01, "log": True}})
    with pytest.raises(ParamsError, match=r"tune\.lenet5\.learning_rate is a range, and the "
                                          "grid sampler needs a list of choices"):
        search.tune_settings(load_params(path).tune, "lenet5")


def test_the_default_spaces_are_valid_and_tpe_is_the_default():
    import dataclasses

    params = project_params()
    assert params.tune.sampler == "tpe"
    random = dataclasses.replace(params.tune, sampler="random")
    for arch in params.train.architectures:
        _, space = search.tune_settings(params.tune, arch)
        untuned = search.untuned_configuration(params.train, arch, space)  # each key has a value
        for config in search.first_configurations(random, space, untuned, seed=0)[1:]:
            search.chosen_settings(params, arch, config)  # every draw is a valid recipe


def test_whole_batches_drop_a_seeded_few_rows():
    images, ids = np.arange(70).reshape(70, 1, 1), np.arange(70) % 7
    kept, kept_ids = search.whole_batches(images, ids, 32, seed=1)
    assert len(kept) == 64 and np.array_equal(kept[:, 0, 0] % 7, kept_ids)  # rows stay paired
    assert np.all(np.diff(kept[:, 0, 0]) > 0)  # the order kept, no row twice
    assert np.array_equal(search.whole_batches(images, ids, 32, seed=1)[0], kept)
    assert len(search.whole_batches(images, ids, 35, 1)[0]) == 70  # already whole
    assert len(search.whole_batches(images[:20], ids[:20], 32, 1)[0]) == 20  # under one batch


def test_rank_correlations_and_the_rung_rows():
    rungs = [{"index": 0, "share": 1 / 9, "epochs": 1, "promoted": [0, 2],
              "scores": {"0": 0.1, "1": 0.3, "2": 0.5, "3": 0.2}},
             {"index": 1, "share": 1 / 3, "epochs": 3, "promoted": [0, 2],
              "scores": {"0": 0.4, "1": 0.6, "2": 0.7}},
             {"index": 2, "share": 1.0, "epochs": 10, "promoted": [],
              "scores": {"0": 0.8, "2": 0.85}}]
    assert tune.rank_correlations(rungs) == {"0-1": 1.0, "1-2": None}  # 2 shared: no rank
    rungs[1]["scores"] = {"0": 0.7, "1": 0.6, "2": 0.4}
    assert tune.rank_correlations(rungs)["0-1"] == -1.0
    rows = tune.rung_rows(rungs)
    assert [r[1:5] for r in rows[:4]] == [(0, "untuned", 0.1, 1), (0, "config-1", 0.3, 0),
                                          (0, "config-2", 0.5, 1), (0, "config-3", 0.2, 0)]
    assert rows[2][0] == "rung 0 (11% of the data for 1 epochs): config-2 (promoted)"
    assert len(rows) == 4 + 3 + 2


def test_tpe_configurations_are_drawn_when_a_worker_takes_them():
    first = search.first_configurations(settings(sampler="tpe"), SPACE, {"dropout": 0.3}, 1)
    assert first == [{"dropout": 0.3}, None, None, None, None, None]


def test_bad_settings_are_clear_errors(tmp_path):
    for changes, message in (
            ({"sampler": "annealing"}, "tune.sampler must be one of random, grid, tpe"),
            ({"reduction": 1}, "tune.reduction must be a whole number, 2 or more"),
            ({"workers": 0}, "tune.workers must be a whole number, 1 or more"),
            ({"storage": "tune.db"}, "tune.storage must be null .* or an Optuna RDB URL"),
            ({"tie_se": -1}, r"tune.tie_se must be a number from 0 .* to 10 standard errors"),
            ({"tie_se": float("nan")}, r"tune.tie_se must be a number from 0"),
            ({"tie_se": "one"}, r"'tune.tie_se' must be a number, got 'one'")):
        with pytest.raises(ParamsError, match=message):
            search.tune_settings(load_params(write_params(tmp_path, **changes)).tune, "lenet5")
    values = yaml.safe_load(write_params(tmp_path).read_text())
    del values["tune"]["rungs"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ParamsError, match="missing key 'tune.rungs'"):
        search.tune_settings(load_params(tmp_path / "params.yaml").tune, "lenet5")
    with pytest.raises(ParamsError, match="has no tune section"):
        search.tune_settings(None, "lenet5")
    with pytest.raises(ParamsError, match="no search space tune.resnet"):
        search.tune_settings(load_params(write_params(tmp_path)).tune, "resnet")
    with pytest.raises(ParamsError, match="tune.lenet5 searches units, which train.lenet5"):
        search.untuned_configuration(load_params(write_params(tmp_path)).train, "lenet5",
                                     {"units": [64]})
    # The stage's command line says it in one line.
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"^tune: params.yaml: tune.sampler must be one of random, grid"):
        tune.main(["--arch", "lenet5", "--params", str(write_params(tmp_path,
                                                                     sampler="annealing")),
                   "--split", str(tmp_path / "split"), "--untuned-model", str(out / "u.keras"),
                   "--untuned-history", str(out / "u.csv"), "--untuned-metrics",
                   str(out / "u.json"), "--best-params", str(out / "b.json"),
                   "--model", str(out / "m.keras"), "--history", str(out / "h.csv"),
                   "--metrics", str(out / "m.json"), "--rungs", str(out / "r.csv")])


def test_a_bad_untuned_history_fails_before_the_search(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "u.keras").write_bytes(b"")
    (out / "u.json").write_text('{"val_accuracy": 0.5}')
    (out / "u.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n")
    with pytest.raises(SystemExit, match=r"^tune: .*u\.csv has no epochs.*train@lenet5"):
        tune.main(["--arch", "lenet5", "--params", str(write_params(tmp_path)),
                   "--split", str(tmp_path / "no-split"), "--untuned-model", str(out / "u.keras"),
                   "--untuned-history", str(out / "u.csv"), "--untuned-metrics",
                   str(out / "u.json"), "--best-params", str(out / "b.json"),
                   "--model", str(out / "m.keras"), "--history", str(out / "h.csv"),
                   "--metrics", str(out / "m.json"), "--rungs", str(out / "r.csv")])
    assert sorted(p.name for p in out.iterdir()) == ["u.csv", "u.json", "u.keras"]


def test_a_storage_that_cannot_be_opened_names_the_setting():
    with pytest.raises(search.SearchError, match="tune.storage='postgresql://nobody@127.0.0.1"
                                                 ":1/none'.*database server is running"):
        search.open_storage("postgresql://nobody@127.0.0.1:1/none")


# --- whole searches on tiny data ------------------------------------------------------------

@pytest.mark.slow
def test_the_untuned_configuration_runs_at_every_rung_and_the_winner_is_the_top_rung_model(
        tmp_path, tiny_split, mlflow_store):
    from mlflow import MlflowClient

    # Ten standard errors on 52 validation images: every challenger ties with the second.
    params_path = write_params(tmp_path, tie_se=10.0)
    untuned = untuned_files(tmp_path, params_path, tiny_split)
    # Make the untuned model look weak: a configuration of the search must win.
    summary_path = untuned[2]
    weak = {**json.loads(summary_path.read_text()), "val_accuracy": 0.0}
    summary_path.write_text(json.dumps(weak))
    summary, (best, model, history, metrics, rungs_csv) = run_tune(tmp_path, params_path,
                                                                   tiny_split, untuned)
    rungs = read_rungs(rungs_csv)
    assert sorted(rungs) == [0, 1] and "rungs" not in summary
    assert sorted(rungs[0]) == ["config-1", "config-2", "config-3", "untuned"]
    assert rungs[0]["untuned"][1] and "untuned" in rungs[1]
    assert rungs[1]["untuned"][0] == 0.0  # the untuned model's (rewritten) figure
    assert set(rungs[1]) == {name for name, (_, up) in rungs[0].items() if up}
    # The untuned settings, the best half of 3 challengers and the third, tied with them.
    first = {0 if name == "untuned" else int(name.split("-")[1]): score
             for name, (score, _) in rungs[0].items()}
    assert search.promoted(first, reduction=2) != [0, 1, 2, 3]  # without the ties: 2 of 3
    assert search.promoted(first, reduction=2, tie_se=10.0, n_images=52) == [0, 1, 2, 3]
    assert len(rungs[1]) == 1 + 3
    assert summary["configurations"] == 4 and summary["top_rung_configurations"] == 4
    assert set(summary["rung_rank_correlation"]) == {"0-1"}
    assert summary["winner"] != "untuned-settings"
    assert summary["val_accuracy"] == pytest.approx(rungs[1][summary["winner"]][0], abs=1e-6)
    # The tuned model is that top-rung model: it scores what the search recorded.
    assert val_accuracy(model, tiny_split) == pytest.approx(summary["val_accuracy"], abs=1e-6)
    written = json.loads(best.read_text())
    assert written == {"winner": summary["winner"], "settings": summary["chosen"]}
    assert json.loads(metrics.read_text()) == summary
    assert summary["reported_epoch"] <= summary["epochs"] <= 3

    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("handwriting").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("variant") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trained = len(rungs[0]) + len(rungs[1]) - 1  # untuned's top: reused
    assert len(children) == trained == summary["trials"] - 1
    assert {c.data.tags["state"] for c in children} == {"complete"}
    assert parent.data.tags["winner"] == summary["winner"]


@pytest.mark.slow
def test_when_the_untuned_settings_win_the_tuned_model_is_the_untuned_one(
        tmp_path, tiny_split, mlflow_store):
    import keras

    params_path = write_params(tmp_path)
    untuned = untuned_files(tmp_path, params_path, tiny_split)
    strong = {**json.loads(untuned[2].read_text()), "val_accuracy": 1.0}
    untuned[2].write_text(json.dumps(strong))
    summary, (best, model, history, _, rungs_csv) = run_tune(tmp_path, params_path, tiny_split,
                                                             untuned)
    assert summary["winner"] == "untuned-settings"
    assert read_rungs(rungs_csv)[1]["untuned"][0] == 1
    assert summary["tuning_gain_val_accuracy"] == 0.0
    assert json.loads(best.read_text())["settings"] == {"learning_rate": 0.001,
                                                        "dropout": 0.3, "batch_size": 32}
    tuned_weights = keras.models.load_model(model).get_weights()
    untuned_weights = keras.models.load_model(untuned[0]).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(tuned_weights, untuned_weights))
    assert history.read_text() == untuned[1].read_text()


@pytest.mark.slow
def test_a_seeded_search_repeats_itself(tmp_path, tiny_split, mlflow_store):
    params = load_params(write_params(tmp_path, n_trials=3))

    def once(folder):
        folder.mkdir()
        return search.search("lenet5", params, tiny_split, untuned_val_accuracy=0.0,
                             scratch=folder)

    def untimed(result):
        return [{k: v for k, v in rung.items() if k != "wall_seconds"} for rung in result.rungs]

    first, second = once(tmp_path / "a"), once(tmp_path / "b")
    assert untimed(first) == untimed(second) and first.config == second.config
    assert first.trials == second.trials and first.trials["fail"] == 0


@pytest.mark.slow
def test_failing_trials_do_not_end_the_search_and_all_failed_is_a_clear_error(
        tmp_path, tiny_split, mlflow_store, monkeypatch):
    from handwriting.models import zoo

    real_build = zoo.build

    def build_that_breaks(arch, input_shape, num_classes, **hparams):
        if hparams["dropout"] == 0.4:
            raise RuntimeError("simulated crash")
        return real_build(arch, input_shape, num_classes, **hparams)

    monkeypatch.setattr(zoo, "build", build_that_breaks)
    params = load_params(write_params(tmp_path, sampler="grid", n_trials=8, reduction=4))
    result = search.search("lenet5", params, tiny_split, untuned_val_accuracy=0.0,
                           scratch=tmp_path)
    first = result.rungs[0]["scores"]
    assert len(first) == 4  # the grid's 8 points (and the untuned one among them), 4 failed
    assert result.trials["fail"] == 4 and result.config["dropout"] == 0.3

    params = load_params(write_params(tmp_path, lenet5={"learning_rate": [1e12],
                                                        "optimizer": ["sgd"]}, n_trials=2,
                                         sampler="random"))
    values = yaml.safe_load((tmp_path / "params.yaml").read_text())
    values["train"]["lenet5"].update(learning_rate=1e12, optimizer="sgd")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(search.SearchError, match="all 1 trials of lenet5 at rung 0 failed"):
        search.search("lenet5", load_params(tmp_path / "params.yaml"), tiny_split,
                      untuned_val_accuracy=0.0, scratch=tmp_path)


def test_the_stage_needs_the_untuned_model(tmp_path, tiny_split):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="run `dvc repro train@lenet5` first"):
        run_tune(tmp_path, write_params(tmp_path), tiny_split,
                 (missing / "u.keras", missing / "u.csv", missing / "u.json"))


# --- trials trained at once ----------------------------------------------------------------

def test_a_tpe_slot_starts_early_only_among_the_random_first_draws():
    assert search.may_start_early(7, {"dropout": 0.3})  # given up front: any time
    assert all(search.may_start_early(n, None) for n in range(search.TPE_STARTUP))
    assert not search.may_start_early(search.TPE_STARTUP, None)  # learns from all before it


def test_trials_at_once_is_one_per_core_or_the_variable_and_one_on_tensorflow(monkeypatch):
    import os

    from handwriting.models.search.workers import AT_ONCE_ENV, MAX_AT_ONCE

    monkeypatch.delenv(AT_ONCE_ENV, raising=False)
    for cores, expected in ((1, 1), (3, 3), (16, MAX_AT_ONCE)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)),
                            raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda n=cores: n)
        assert search.trials_at_once("jax") == expected
        assert search.trials_at_once("tensorflow") == 1
    monkeypatch.setenv(AT_ONCE_ENV, "3")
    assert search.trials_at_once("jax") == 3 and search.trials_at_once("tensorflow") == 1
    assert search.trials_at_once("jax", 2) == 2 and search.trials_at_once("tensorflow", 2) == 1
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(AT_ONCE_ENV, bad)
        with pytest.raises(search.SearchError, match=f"{AT_ONCE_ENV} must be a whole number"):
            search.trials_at_once("jax")
    with pytest.raises(search.SearchError, match="at least 1, got 0"):
        search.trials_at_once("jax", 0)


def test_trials_at_once_run_the_same_search_as_one_at_a_time(monkeypatch):
    """The scheduler alone (a stand-in for the training, whose score is a function of the
    settings): TPE's draws, every score and the promotions are the same one at a time and
    three at once; trials do overlap, but TPE's modelled draws wait for every trial before
    them. (That real training gives the same bytes is the JAX tune-stage test in
    tests/integration/test_engine_processes.py.)"""
    import threading
    import time

    import optuna

    from handwriting.models.search import trials
    from handwriting.models.search.schedule import Rung
    from handwriting.models.search.settings import make_sampler
    from handwriting.models.search.studies import queue, rung_configurations, rung_scores

    lock = threading.Lock()
    training: set[int] = set()
    starts: list[tuple[int, frozenset]] = []

    def stand_in(context, rung, cid, config, *, number, parent):
        with lock:
            starts.append((cid, frozenset(training)))
            training.add(cid)
        time.sleep(0.05)
        with lock:
            training.discard(cid)
        return round(1 - abs(np.log10(config["learning_rate"]) + 2.5) / 3
                     - config["dropout"] / 10, 6)

    monkeypatch.setattr(trials, "train_trial", stand_in)
    space = {"learning_rate": {"low": 0.0001, "high": 0.1, "log": True},
             "dropout": [0.2, 0.3, 0.4, 0.5]}
    configs = dict(enumerate(search.first_configurations(
        settings(sampler="tpe", n_trials=9), space, {"learning_rate": 0.001, "dropout": 0.3},
        seed=1)))
    context = search.TrialContext("lenet5", None, space, (np.zeros(1), np.zeros(1)),
                                  (np.zeros(1), np.zeros(1)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def once(at_once):
        starts.clear()
        study = optuna.create_study(direction="maximize",
                                    sampler=make_sampler("tpe", space, 1))
        study.set_user_attr("rung", vars(Rung(0, 0.25, 1, False)))
        queue(study, configs, space)
        assert trials.run_waiting(study, context, at_once) == 9
        return rung_configurations(study), rung_scores(study), list(starts)

    alone, together = once(1), once(3)
    assert alone[:2] == together[:2]
    assert len(set(map(str, alone[0].values()))) == 9  # nine different configurations
    assert all(not others for _, others in alone[2])
    assert any(others for _, others in together[2]), "no two trials trained at once"
    assert all(not others for cid, others in together[2] if cid >= search.TPE_STARTUP)
