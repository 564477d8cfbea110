"""Export stage on tiny models: the champion choice, the serving folder against its Keras model,
metrics/serving.json, the ONNX exports of every tuned model, the registry's ``champion`` alias
(moved only when the new model is at least as good), and the pyfunc model's answers and errors.

The models: a LeNet-5 trained for a few seconds to tell vertical bars ("A") from horizontal bars
("b") and an untrained GRU, so the LeNet-5 is clearly the better one.
"""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
mlflow = pytest.importorskip("mlflow")

from handwriting import labels  # noqa: E402
from handwriting.datasets import save_arrays  # noqa: E402
from handwriting.evaluation import champion, comparison  # noqa: E402
from handwriting.evaluation.champion import Candidate  # noqa: E402
from handwriting.imaging import to_uint8  # noqa: E402
from handwriting.params import ParamsError, load_params  # noqa: E402
from handwriting.serving.predictor import UNSURE_MESSAGE, Predictor  # noqa: E402
from handwriting.serving.pyfunc import ALIAS, register_champion  # noqa: E402
from handwriting.stages import export  # noqa: E402
from tests.conftest import repo_params  # noqa: E402
from tests.unit.test_serving import bar, bars, png_bytes  # noqa: E402

NAME = "letters-test"


def test_the_champion_is_the_best_validation_model_within_the_compute_budget():
    candidates = {"lenet5-tuned": Candidate(0.80, 0.4), "gru-tuned": Candidate(0.82, 5.2),
                  "ensemble": Candidate(0.88, 330.0)}
    choice = champion.choose(candidates, 10)
    assert (choice.champion, choice.within_budget, choice.fallback) == \
        ("gru-tuned", {"lenet5-tuned", "gru-tuned"}, False)
    assert champion.choose(candidates, 1).champion == "lenet5-tuned"
    assert champion.choose(candidates, 0).champion == "ensemble"  # 0: no limit
    # A tie goes to the cheaper model, then to the first name.
    tied = {"b-tuned": Candidate(0.7, 2.0), "a-tuned": Candidate(0.7, 2.0),
            "ensemble": Candidate(0.7, 4.0)}
    assert champion.choose(tied, 0).champion == "a-tuned"
    with pytest.raises(ValueError, match="no candidate"):
        champion.choose({}, 10)
    with pytest.raises(ValueError, match="budget"):
        champion.choose(candidates, -1)


def test_when_nothing_fits_the_budget_the_cheapest_is_served_and_said_so():
    candidates = {"lenet5-tuned": Candidate(0.80, 0.4), "ensemble": Candidate(0.88, 330.0)}
    choice = champion.choose(candidates, 0.1)
    assert (choice.champion, choice.fallback, choice.within_budget) == \
        ("lenet5-tuned", True, frozenset())
    assert "WARNING" in choice.describe(candidates)
    assert choice.as_dict(candidates)["fallback_to_cheapest"] is True


def test_the_unsure_threshold_keeps_the_asked_share_of_correct_answers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1000)
    probabilities = rng.dirichlet([1, 1, 1], 1000)
    correct = probabilities.argmax(axis=1) == y
    threshold = champion.unsure_threshold(y, probabilities, 0.9)
    kept = probabilities.max(axis=1)[correct] >= threshold
    assert kept.mean() == pytest.approx(0.9, abs=0.01)
    assert champion.unsure_threshold(y, probabilities, 1.0) == 0.0
    effect = champion.unsure_effect(y, probabilities, threshold)
    assert effect["accuracy_all"] == pytest.approx(correct.mean())
    assert effect["accuracy_answered"] > effect["accuracy_all"]  # confident answers are better
    assert 0 < effect["unsure_share"] < 1
    assert champion.unsure_effect(y, probabilities, 0.0)["unsure_share"] == 0.0


def test_the_cost_count_matches_lenet5_by_hand():
    from handwriting.models.cost import multiply_adds
    from handwriting.models.zoo import build

    # conv1 28*28*6*25 + conv2 10*10*16*150 + fc 400*120 + 120*84 + 84*52
    expected = 117_600 + 240_000 + 48_000 + 10_080 + 84 * 52
    assert multiply_adds(build("lenet5", (32, 32, 1), labels.NUM_CLASSES)) == expected
    small, big = (build("gru", (32, 32, 1), labels.NUM_CLASSES, units=units)
                  for units in (16, 64))
    assert multiply_adds(small) < multiply_adds(big)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project: params, val and test splits of bar images, two tuned models."""
    from handwriting.models.zoo import build

    root = tmp_path_factory.mktemp("project")
    values = repo_params()
    values["train"]["architectures"] = ["lenet5", "gru"]
    values["export"].update(latency_calls=30, throughput_batch=64, registered_model=NAME)
    (root / "params.yaml").write_text(yaml.safe_dump(values))
    for subset, seed in (("val", 2), ("test", 3)):
        images, ids = bars(96, seed=seed)
        save_arrays(root / "split" / subset, images=to_uint8(images), labels=ids)
    keras.utils.set_random_seed(0)
    lenet5 = build("lenet5", (32, 32, 1), labels.NUM_CLASSES)
    x, y = bars(384, seed=1)
    lenet5.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    lenet5.fit(x[..., None], y, batch_size=32, epochs=6, verbose=0)
    models = {"lenet5": lenet5, "gru": build("gru", (32, 32, 1), labels.NUM_CLASSES, units=8)}
    (root / "metrics" / "train").mkdir(parents=True)
    for arch, model in models.items():
        (root / "models" / arch).mkdir(parents=True)
        model.save(root / "models" / arch / "tuned.keras")
        (root / "metrics" / "train" / f"{arch}-tuned.json").write_text(
            json.dumps({"val_accuracy": 0.9 if arch == "lenet5" else 0.1}))
    params = load_params(root / "params.yaml")
    scores = comparison.Scores()
    for arch, model in models.items():
        scores.add(f"{arch}-tuned", model)
    decision = comparison.choose_champion(params, root / "split", scores, [0.9, 0.1], "soft")
    (root / "metrics" / "champion.json").write_text(json.dumps(decision))
    return root


@pytest.fixture(scope="module")
def exported(project, tmp_path_factory):
    """The export stage run once on the tiny project, with its own MLflow store."""
    store = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(store / 'mlflow.db').as_posix()}")
        patch.chdir(store)
        figures = export.run(load_params(project / "params.yaml"), project / "split",
                             project / "models", project / "metrics" / "train",
                             project / "metrics" / "champion.json",
                             project / "models" / "serving", project / "models" / "onnx",
                             project / "metrics" / "serving.json")
        yield figures, f"sqlite:///{(store / 'mlflow.db').as_posix()}"


@pytest.mark.slow
def test_export_serves_the_champion_evaluate_named(project, exported):
    figures, _ = exported
    decision = json.loads((project / "metrics" / "champion.json").read_text())
    candidates = figures["candidates"]
    assert set(candidates) == {"lenet5-tuned", "gru-tuned", "ensemble"}
    assert candidates["lenet5-tuned"]["val_f1_macro"] > candidates["gru-tuned"]["val_f1_macro"]
    assert figures["champion"] == decision["champion"] == "lenet5-tuned"
    assert candidates["lenet5-tuned"]["mflops"] == pytest.approx(0.42, abs=0.01)
    assert candidates["ensemble"]["mflops"] == pytest.approx(
        candidates["lenet5-tuned"]["mflops"] + candidates["gru-tuned"]["mflops"], abs=0.002)
    assert all(part["within_budget"] == (part["mflops"] <= decision["compute_budget_mflops"])
               for part in candidates.values())
    serving = project / "models" / "serving"
    config = json.loads((serving / "serving.json").read_text())
    assert config["model"]["name"] == figures["champion"]
    assert config["unsure_threshold"] == decision["unsure"]["threshold"] > 0.0
    assert config["image_size"] == 32 and config["labels"] == list(labels.CLASSES)
    assert json.loads((project / "metrics" / "serving.json").read_text()) == figures
    # The served model gives the Keras champion's answers on images it has never seen.
    images, _ = bars(16, seed=9)
    served = Predictor.from_directory(serving).probabilities(images)
    keras_model = keras.saving.load_model(serving / "model.keras", compile=False)
    expected = keras.ops.convert_to_numpy(keras_model(images[..., None]))
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_serving_figures_report_agreement_and_sizes_and_the_run_the_timings(project,
                                                                            exported):
    figures, uri = exported
    for variant in ("onnx", "int8"):
        part = figures[variant]
        assert part["images"] == 96
        assert 0.0 <= part["max_abs_diff"] <= 1.0 and 0.0 <= part["test_accuracy"] <= 1.0
        assert part["size_mb"] > 0
    # Timings differ on every run: in the export run, never in metrics/serving.json.
    written = (project / "metrics" / "serving.json").read_text()
    assert "latency" not in written and "throughput" not in written
    run = mlflow.MlflowClient(tracking_uri=uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(tracking_uri=uri).search_experiments()],
        filter_string="tags.mlflow.runName = 'export'")[0]
    timed = run.data.metrics
    for variant in ("onnx", "int8"):
        assert 0 < timed[f"{variant}_latency_p50_ms"] <= timed[f"{variant}_latency_p99_ms"]
        assert timed[f"{variant}_throughput_images_per_s"] > 0
    assert all(timed[f"{key}.latency_p50_ms"] > 0 for key in figures["exports"])
    assert figures["onnx"]["top1_agreement"] == 1.0 and figures["onnx"]["max_abs_diff"] < 1e-4
    assert figures["int8"]["top1_agreement"] >= 0.9
    assert figures["int8"]["size_mb"] < figures["onnx"]["size_mb"]


def test_every_tuned_model_is_exported_and_checked(project, exported):
    figures, _ = exported
    assert set(figures["exports"]) == {"lenet5-tuned", "gru-tuned", "ensemble"}
    for key, part in figures["exports"].items():
        assert (project / "models" / "onnx" / f"{key}.onnx").stat().st_size > 0
        if key != "ensemble":
            assert (project / "models" / "onnx" / f"{key}.int8.onnx").stat().st_size > 0
        assert part["onnx"]["top1_agreement"] == 1.0 and part["onnx"]["max_abs_diff"] < 1e-4


def test_the_champion_is_registered_with_its_alias_and_tags(exported):
    figures, uri = exported
    client = mlflow.MlflowClient(tracking_uri=uri)
    version = client.get_model_version_by_alias(NAME, ALIAS)
    assert str(version.version) == "1"
    assert version.tags["champion"] == figures["champion"]
    assert float(version.tags["val_f1_macro"]) == pytest.approx(figures["val_f1_macro"])


def test_the_alias_rule_compares_scores_under_the_compute_budget():
    from handwriting.evaluation.champion import should_move_alias

    assert should_move_alias(0.5, None, None)  # no champion yet
    assert should_move_alias(0.8, 0.8, 0.5) and not should_move_alias(0.79, 0.8, 0.5)
    # A better but costlier current champion gives way once a budget it misses is in force...
    assert should_move_alias(0.7, 0.9, 330.0, budget_mflops=10.0)
    # ... but not without a budget, or when it meets the budget.
    assert not should_move_alias(0.7, 0.9, 330.0, budget_mflops=0.0)
    assert not should_move_alias(0.7, 0.9, 5.0, budget_mflops=10.0)


@pytest.mark.slow
def test_the_champion_does_not_depend_on_the_machine_s_load(project, exported, tmp_path,
                                                           monkeypatch):
    # A busy machine: every latency measured 100 times slower. The choice is the same.
    from handwriting.serving import figures as measure

    slow = measure.end_to_end_latency_ms
    monkeypatch.setattr(measure, "end_to_end_latency_ms", lambda predictor, files: {
        key: value * 100 for key, value in slow(predictor, files[:5]).items()})
    figures = export.run(load_params(project / "params.yaml"), project / "split",
                         project / "models", project / "metrics" / "train",
                         project / "metrics" / "champion.json", tmp_path / "serving",
                         tmp_path / "onnx", tmp_path / "serving.json", register=False)
    assert figures["champion"] == "lenet5-tuned"
    assert json.loads((tmp_path / "serving" / "serving.json").read_text())["model"]["name"] \
        == "lenet5-tuned"
    # and the figures are byte for byte those of the run on an idle machine
    assert (tmp_path / "serving.json").read_bytes() == \
        (project / "metrics" / "serving.json").read_bytes()


def test_export_refuses_a_missing_or_foreign_champion_file(project, tmp_path):
    params = load_params(project / "params.yaml")
    args = (project / "split", project / "models", project / "metrics" / "train")
    outs = (tmp_path / "serving", tmp_path / "onnx", tmp_path / "serving.json")
    with pytest.raises(export.DecisionError,
                       match="champion.json is missing; run `dvc repro evaluate`"):
        export.run(params, *args, tmp_path / "champion.json", *outs, register=False)
    decision = json.loads((project / "metrics" / "champion.json").read_text())
    decision["champion"] = "vgg16-tuned"
    (tmp_path / "champion.json").write_text(json.dumps(decision))
    with pytest.raises(export.DecisionError, match="does not train"):
        export.run(params, *args, tmp_path / "champion.json", *outs, register=False)
    (tmp_path / "champion.json").write_text("{")
    with pytest.raises(export.DecisionError, match="not a champion decision"):
        export.run(params, *args, tmp_path / "champion.json", *outs, register=False)


def test_the_stage_turns_a_refused_champion_file_into_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params()))
    with pytest.raises(SystemExit, match=r"^export: .*champion\.json is missing; run `dvc "
                                         "repro evaluate`"):
        export.main(["--params", str(tmp_path / "params.yaml"), "--split", str(tmp_path / "split"),
                     "--models", str(tmp_path / "models"),
                     "--train-metrics", str(tmp_path / "train"),
                     "--champion", str(tmp_path / "champion.json"),
                     "--serving", str(tmp_path / "serving"), "--onnx", str(tmp_path / "onnx"),
                     "--metrics", str(tmp_path / "serving.json"), "--no-register"])
    assert not (tmp_path / "serving").exists()


def test_the_alias_moves_only_to_a_model_at_least_as_good(project, exported, mlflow_store):
    from handwriting import tracking

    tracking.configure()
    serving = project / "models" / "serving"
    image = png_bytes(bar(True, np.random.default_rng(0)))
    outcomes = []
    for score in (0.8, 0.7, 0.8):
        with mlflow.start_run():
            outcomes.append(register_champion(serving, name="alias-test", champion="x",
                                              score=score, example_image=image, mflops=0.4))
    assert [(o.version, o.alias_moved) for o in outcomes] == [("1", True), ("2", False),
                                                              ("3", True)]
    assert outcomes[1].previous_version == "1" and outcomes[1].previous_score == 0.8
    current = mlflow.MlflowClient().get_model_version_by_alias("alias-test", ALIAS)
    assert str(current.version) == "3"


@pytest.fixture(scope="module")
def served_model(exported):
    _, uri = exported
    mlflow.set_tracking_uri(uri)
    return mlflow.pyfunc.load_model(f"models:/{NAME}@{ALIAS}")


def _request(*files: bytes):
    import pandas as pd

    return pd.DataFrame({"image": [base64.b64encode(f).decode() for f in files]})


def test_the_registered_model_answers_like_the_predictor(project, served_model):
    rng = np.random.default_rng(4)
    files = [png_bytes(bar(True, rng)), png_bytes(bar(False, rng))]
    answer = served_model.predict(_request(*files), params={"top_k": 3})
    predictor = Predictor.from_directory(project / "models" / "serving")
    assert list(answer.columns) == ["label", "probability", "top_labels", "top_probabilities",
                                    "unsure", "message"]
    for row, data in zip(answer.itertuples(), files):
        expected = predictor.predict(data, top_k=3)
        assert list(row.top_labels) == [label for label, _ in expected]
        assert row.label == expected[0][0]
        np.testing.assert_allclose(row.top_probabilities, [p for _, p in expected], atol=1e-6)
    assert answer["label"].tolist() == ["A", "b"]
    assert answer["message"].tolist() == [UNSURE_MESSAGE if unsure else label for label, unsure
                                          in zip(answer["label"], answer["unsure"])]
    assert answer["unsure"].tolist() == [predictor.is_unsure(predictor.predict(data))
                                         for data in files]


def test_noise_is_answered_not_sure(project, served_model):
    rng = np.random.default_rng(5)
    noise = png_bytes(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    answer = served_model.predict(_request(noise))
    assert answer["unsure"].tolist() == [True]
    assert answer["message"].tolist() == [UNSURE_MESSAGE]
    predictor = Predictor.from_directory(project / "models" / "serving")
    assert predictor.is_unsure(predictor.predict(noise))
    bars_ = [predictor.predict(png_bytes(bar(True, rng))) for _ in range(20)]
    assert sum(predictor.is_unsure(answer) for answer in bars_) <= 5  # most letters are read


@pytest.mark.parametrize("body, params, message", [
    ("not base64!", None, "not valid base64"),
    ("", None, "empty"),
    (base64.b64encode(b"plain text, no image").decode(), None, "row 0"),
    ("BLANK", None, "ink"),
    ("GOOD", {"top_k": 0}, "top_k"),
    ("GOOD", {"top_k": 53}, "top_k"),
])
def test_the_registered_model_refuses_bad_input_clearly(served_model, body, params, message):
    import cv2
    import pandas as pd
    from mlflow.exceptions import MlflowException

    if body == "BLANK":
        body = base64.b64encode(cv2.imencode(".png", np.full((40, 40), 255, np.uint8))[1]
                                .tobytes()).decode()
    elif body == "GOOD":
        body = base64.b64encode(png_bytes(bar(True, np.random.default_rng(0)))).decode()
    with pytest.raises(MlflowException, match=message) as caught:
        served_model.predict(pd.DataFrame({"image": [body]}), params=params)
    assert caught.value.get_http_status_code() == 400


def test_the_registered_model_refuses_too_many_images(served_model):
    from mlflow.exceptions import MlflowException

    from handwriting.serving.pyfunc import MAX_IMAGES_PER_REQUEST

    image = png_bytes(bar(True, np.random.default_rng(0)))
    with pytest.raises(MlflowException, match=f"at most {MAX_IMAGES_PER_REQUEST}"):
        served_model.predict(_request(*[image] * (MAX_IMAGES_PER_REQUEST + 1)))


def test_export_names_a_missing_model_and_a_missing_section(project, tmp_path):
    values = yaml.safe_load((project / "params.yaml").read_text())
    values["train"]["architectures"] = ["lenet5", "lstm"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    decision = json.loads((project / "metrics" / "champion.json").read_text())
    decision["candidates"]["lstm-tuned"] = decision["candidates"].pop("gru-tuned")
    (tmp_path / "champion.json").write_text(json.dumps(decision))
    with pytest.raises(export.MissingModelError, match="models/lstm/tuned.keras is missing"):
        export.run(load_params(tmp_path / "params.yaml"), project / "split", project / "models",
                   project / "metrics" / "train", tmp_path / "champion.json",
                   tmp_path / "serving", tmp_path / "onnx", tmp_path / "serving.json",
                   register=False)
    del values["export"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ParamsError, match="^params.yaml has no export section"):
        export.run(load_params(tmp_path / "params.yaml"), project / "split", project / "models",
                   project / "metrics" / "train", tmp_path / "champion.json",
                   tmp_path / "serving", tmp_path / "onnx", tmp_path / "serving.json",
                   register=False)


def test_the_ensemble_model_is_the_weighted_soft_vote_of_its_members():
    from handwriting.evaluation.ensemble import build_soft_vote_ensemble, soft_vote
    from handwriting.models.zoo import build

    keras.utils.set_random_seed(1)
    members = [build("lenet5", (32, 32, 1), labels.NUM_CLASSES),
               build("gru", (32, 32, 1), labels.NUM_CLASSES, units=8)]
    images, _ = bars(8, seed=11)
    expected = soft_vote([keras.ops.convert_to_numpy(m(images[..., None])) for m in members],
                         [0.9, 0.3])
    ensemble = build_soft_vote_ensemble(members, [0.9, 0.3])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ensemble(images[..., None])),
                               expected, atol=1e-6)
    assert [m.name for m in members] == ["lenet5", "gru"]  # unique names are left alone
    with pytest.raises(ValueError, match="non-negative"):
        build_soft_vote_ensemble(members, [1.0, -1.0])
    with pytest.raises(ValueError, match="at least one"):
        build_soft_vote_ensemble([])
    with pytest.raises(ValueError, match="outputs"):
        inputs = keras.Input((32, 32, 1))
        build_soft_vote_ensemble([keras.Model(inputs, keras.layers.Dense(3)(
            keras.layers.Flatten()(inputs)))])


@pytest.mark.slow
def test_an_experiment_registers_a_challenger_and_promote_serves_it(project, exported,
                                                                    mlflow_store, capsys):
    # `dvc exp run` sets DVC_EXP_NAME for every stage: the export stage then registers its
    # model as the challenger and leaves the champion alone, however good the new model is.
    from handwriting import tracking
    from handwriting.cli import main
    from handwriting.serving.pyfunc import CHALLENGER

    tracking.configure()
    client = mlflow.MlflowClient()
    with mlflow.start_run():  # today's champion, worse than what the experiment brings
        register_champion(project / "models" / "serving", name=NAME, champion="x", score=0.01,
                          example_image=png_bytes(bar(True, np.random.default_rng(0))),
                          mflops=0.4)
    assert os.environ["DVC_EXP_NAME"] == "test-exp"  # set by the mlflow_store fixture
    params_path = project / "params.yaml"
    export.run(load_params(params_path), project / "split", project / "models",
               project / "metrics" / "train", project / "metrics" / "champion.json",
               project / "models" / "serving", project / "models" / "onnx",
               project / "metrics" / "serving.json")
    assert "as 'challenger' (experiment test-exp); 'champion' stays on version 1" \
        in capsys.readouterr().out
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == "1"
    challenger = client.get_model_version_by_alias(NAME, CHALLENGER)
    assert str(challenger.version) == "2" and challenger.tags["dvc_exp_name"] == "test-exp"

    assert main(["promote", "--params", str(params_path)]) == 0
    assert "now points to version 2 (previous: 1)" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == "2"
    assert CHALLENGER not in client.get_registered_model(NAME).aliases  # promoted, not a challenger
    # Nothing left to promote, or a version that does not exist: a clear error, nothing moved.
    assert main(["promote", "--name", NAME]) == 1
    assert "has no version with alias 'challenger'" in capsys.readouterr().err
    assert main(["promote", "--name", NAME, "--version", "9"]) == 1
    assert "has no version 9" in capsys.readouterr().err
    assert main(["promote", "--name", NAME, "--version", "1"]) == 0  # back to the old one
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == "1"
    assert main(["promote", "--params", str(project / "missing.yaml")]) == 2
    assert "name the model with --name" in capsys.readouterr().err
