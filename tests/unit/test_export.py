"""Export stage on tiny models: the champion choice, the serving folder against its Keras model,
metrics/serving.json, the ONNX exports of every tuned model, the registry's ``champion`` alias
(moved only when the new model is at least as good), and the pyfunc model's answers and errors.

The models: a LeNet-5 trained for a few seconds to tell vertical bars ("A") from horizontal bars
("b") and an untrained GRU, so the LeNet-5 is clearly the better one.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
mlflow = pytest.importorskip("mlflow")

from handwriting import labels  # noqa: E402
from handwriting.datasets import save_arrays  # noqa: E402
from handwriting.imaging import to_uint8  # noqa: E402
from handwriting.params import load_params  # noqa: E402
from handwriting.serving.predictor import Predictor  # noqa: E402
from handwriting.serving.pyfunc import ALIAS, register_champion  # noqa: E402
from handwriting.stages import export  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.unit.test_serving import bar, bars, png_bytes  # noqa: E402

NAME = "letters-test"


def test_pick_champion_takes_the_best_and_prefers_a_single_model_on_a_tie():
    assert export.pick_champion({"a-tuned": 0.5, "b-tuned": 0.7, "ensemble": 0.6}) == "b-tuned"
    assert export.pick_champion({"a-tuned": 0.5, "ensemble": 0.8}) == "ensemble"
    assert export.pick_champion({"ensemble": 0.7, "b-tuned": 0.7, "a-tuned": 0.7}) == "a-tuned"
    with pytest.raises(ValueError, match="no candidate"):
        export.pick_champion({})


def test_the_champion_must_answer_within_the_latency_budget():
    scores = {"lenet5-tuned": 0.80, "gru-tuned": 0.82, "ensemble": 0.88}
    latencies = {"lenet5-tuned": 0.4, "gru-tuned": 0.9, "ensemble": 12.0}
    assert export.choose_champion(scores, latencies, 1.0) == \
        ("gru-tuned", {"lenet5-tuned", "gru-tuned"})
    assert export.choose_champion(scores, latencies, 0.5) == ("lenet5-tuned", {"lenet5-tuned"})
    assert export.choose_champion(scores, latencies, 0)[0] == "ensemble"  # 0: no limit
    # Nothing fast enough: the best of all rather than nothing to serve.
    assert export.choose_champion(scores, latencies, 0.1) == ("ensemble", set(scores))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project: params, val and test splits of bar images, two tuned models."""
    from handwriting.models.zoo import build

    root = tmp_path_factory.mktemp("project")
    values = yaml.safe_load((REPO / "params.yaml").read_text())
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
                             project / "models" / "serving", project / "models" / "onnx",
                             project / "metrics" / "serving.json")
        yield figures, f"sqlite:///{(store / 'mlflow.db').as_posix()}"


def test_export_picks_the_best_validation_model_and_writes_its_serving_folder(project, exported):
    figures, _ = exported
    candidates = figures["candidates"]
    assert set(candidates) == {"lenet5-tuned", "gru-tuned", "ensemble"}
    scores = {key: part["val_f1_macro"] for key, part in candidates.items()}
    latencies = {key: part["latency_p50_ms"] for key, part in candidates.items()}
    assert scores["lenet5-tuned"] > scores["gru-tuned"]
    assert all(latency > 0 for latency in latencies.values())
    champion, eligible = export.choose_champion(scores, latencies, figures["latency_budget_ms"])
    assert figures["champion"] == champion
    assert {key for key, part in candidates.items() if part["within_budget"]} == eligible
    serving = project / "models" / "serving"
    config = json.loads((serving / "serving.json").read_text())
    assert config["model"]["name"] == figures["champion"]
    assert config["image_size"] == 32 and config["labels"] == list(labels.CLASSES)
    assert json.loads((project / "metrics" / "serving.json").read_text()) == figures
    # The served model gives the Keras champion's answers on images it has never seen.
    images, _ = bars(16, seed=9)
    served = Predictor.from_directory(serving).probabilities(images)
    keras_model = keras.saving.load_model(serving / "model.keras", compile=False)
    expected = keras.ops.convert_to_numpy(keras_model(images[..., None]))
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_serving_figures_report_agreement_sizes_latency_and_throughput(exported):
    figures, _ = exported
    for variant in ("onnx", "int8"):
        part = figures[variant]
        assert part["images"] == 96
        assert 0.0 <= part["max_abs_diff"] <= 1.0 and 0.0 <= part["test_accuracy"] <= 1.0
        assert part["size_mb"] > 0
        latency = part["latency_end_to_end"]
        assert 0 < latency["p50_ms"] <= latency["p99_ms"]
        assert part["throughput_images_per_s"] > 0
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
        assert part["val_f1_macro"] == figures["candidates"][key]["val_f1_macro"]


def test_the_champion_is_registered_with_its_alias_and_tags(exported):
    figures, uri = exported
    client = mlflow.MlflowClient(tracking_uri=uri)
    version = client.get_model_version_by_alias(NAME, ALIAS)
    assert str(version.version) == "1"
    assert version.tags["champion"] == figures["champion"]
    assert float(version.tags["val_f1_macro"]) == pytest.approx(figures["val_f1_macro"])


def test_the_alias_rule_compares_scores_under_the_latency_budget():
    from handwriting.serving.pyfunc import should_move_alias

    assert should_move_alias(0.5, None, None)  # no champion yet
    assert should_move_alias(0.8, 0.8, 0.5) and not should_move_alias(0.79, 0.8, 0.5)
    # A better but slower current champion gives way once a budget it misses is in force...
    assert should_move_alias(0.7, 0.9, 12.0, budget_ms=1.0)
    # ... but not without a budget, or when it meets the budget.
    assert not should_move_alias(0.7, 0.9, 12.0, budget_ms=0.0)
    assert not should_move_alias(0.7, 0.9, 0.8, budget_ms=1.0)


def test_the_alias_moves_only_to_a_model_at_least_as_good(project, exported, mlflow_store):
    from handwriting import tracking

    tracking.configure()
    serving = project / "models" / "serving"
    image = png_bytes(bar(True, np.random.default_rng(0)))
    outcomes = []
    for score in (0.8, 0.7, 0.8):
        with mlflow.start_run():
            outcomes.append(register_champion(serving, name="alias-test", champion="x",
                                              score=score, example_image=image))
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
    assert list(answer.columns) == ["label", "probability", "top_labels", "top_probabilities"]
    for row, data in zip(answer.itertuples(), files):
        expected = predictor.predict(data, top_k=3)
        assert list(row.top_labels) == [label for label, _ in expected]
        assert row.label == expected[0][0]
        np.testing.assert_allclose(row.top_probabilities, [p for _, p in expected], atol=1e-6)
    assert answer["label"].tolist() == ["A", "b"]


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
    with pytest.raises(SystemExit, match="models/lstm/tuned.keras is missing"):
        export.run(load_params(tmp_path / "params.yaml"), project / "split", project / "models",
                   project / "metrics" / "train", tmp_path / "serving", tmp_path / "onnx",
                   tmp_path / "serving.json", register=False)
    del values["export"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(SystemExit, match="no 'export' section"):
        export.run(load_params(tmp_path / "params.yaml"), project / "split", project / "models",
                   project / "metrics" / "train", tmp_path / "serving", tmp_path / "onnx",
                   tmp_path / "serving.json", register=False)


def test_the_ensemble_model_is_the_weighted_soft_vote_of_its_members():
    from handwriting.evaluation.metrics import soft_vote
    from handwriting.models.zoo import build
    from handwriting.serving.ensemble import build_soft_vote_ensemble

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
