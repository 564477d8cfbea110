"""Adding an architecture: a builder in the zoo, its registry entry, and its train and tune
entries in params.yaml.

A tiny extra builder is registered (the zoo and the registry) and listed in
``train.architectures``; the train, tune, evaluate and export stages then take it like the
seed's six, with no other code edited. (dvc.yaml's stages follow ``train.architectures`` through ``foreach``; its evaluate and
export deps name each ``models/<arch>`` folder, and ``test_dvc_yaml`` fails until a new one is
listed there.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")

from handwriting import labels  # noqa: E402
from handwriting.datasets import save_arrays  # noqa: E402
from handwriting.models import zoo  # noqa: E402
from handwriting.models.registry import REGISTRY, Architecture  # noqa: E402
from handwriting.params import load_params  # noqa: E402
from handwriting.stages import evaluate, export, train, tune  # noqa: E402
from tests.conftest import repo_params  # noqa: E402

# Every stage on real (tiny) models: over 5 s each (`pytest -m "not slow"` leaves them out).
pytestmark = pytest.mark.slow


def build_tinycnn(input_shape, num_classes, *, filters: int = 4, dropout: float = 0.1):
    """A seventh architecture, as small as a model can be: one convolution, pooled, softmax."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(filters, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tinycnn")


def run_pipeline(tmp_path, sections: dict[str, dict], spaces: dict[str, dict],
                 **evaluate_changes) -> dict:
    """train, tune, evaluate and export on tiny random data with lenet5 and the architectures
    of ``sections`` (their train.<arch> sections; ``spaces`` their tune.<arch> spaces)."""
    rng = np.random.default_rng(0)
    for subset, count in (("train", 104), ("val", 52), ("test", 52)):
        save_arrays(tmp_path / "split" / subset, labels=np.arange(count) % labels.NUM_CLASSES,
                    images=rng.integers(0, 256, size=(count, 32, 32), dtype=np.uint8))
    values = repo_params()
    archs = ["lenet5", *sections]
    values["train"] = {"architectures": archs, "defaults": values["train"]["defaults"],
                       "lenet5": {**values["train"]["lenet5"], "epochs": 1}, **sections}
    values["tune"] = {**{k: v for k, v in values["tune"].items() if not isinstance(v, dict)},
                      "n_trials": 2, "rungs": 2, "reduction": 2,
                      "lenet5": {"learning_rate": [0.001]}, **spaces}
    values["evaluate"].update(latency_calls=5, explain_samples=2, crossdata=[],
                              **evaluate_changes)
    values["export"].update(latency_calls=5, throughput_batch=8)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(values))

    split, models, metrics = tmp_path / "split", tmp_path / "models", tmp_path / "metrics"
    for arch in archs:
        train.run(arch, params_path, split, models / arch / "untuned.keras",
                  tmp_path / "plots" / f"{arch}-untuned.csv",
                  metrics / "train" / f"{arch}-untuned.json")
        tune.run(arch, params_path, split, models / arch / "untuned.keras",
                 tmp_path / "plots" / f"{arch}-untuned.csv",
                 metrics / "train" / f"{arch}-untuned.json", models / arch / "best_params.json",
                 models / arch / "tuned.keras", tmp_path / "plots" / f"{arch}-tuned.csv",
                 metrics / "train" / f"{arch}-tuned.json",
                 tmp_path / "plots" / f"{arch}-rungs.csv")
    params = load_params(params_path)
    results = evaluate.run(params, split, models, metrics / "train", metrics / "evaluate.json",
                           metrics / "crossdata.json", metrics / "comparison.md",
                           metrics / "per_class", metrics / "confused.csv",
                           tmp_path / "plots" / "evaluate", metrics / "champion.json")
    figures = export.run(params, split, models, metrics / "train", metrics / "champion.json",
                         models / "serving", models / "onnx", metrics / "serving.json",
                         register=False)
    return {"results": results, "figures": figures, "models": models, "metrics": metrics,
            "params": params,
            "decision": json.loads((metrics / "champion.json").read_text())}


def test_a_seventh_architecture_needs_only_its_builder_and_params(tmp_path, monkeypatch,
                                                                  mlflow_store):
    monkeypatch.setitem(zoo.ARCHITECTURES, "tinycnn", build_tinycnn)
    monkeypatch.setitem(REGISTRY, "tinycnn", Architecture(
        "tinycnn", "cnn", frozen_base=False, seed_study=False, fallback_rank=8))
    run = run_pipeline(tmp_path, {"tinycnn": {"epochs": 1, "batch_size": 32,
                                              "learning_rate": 0.01, "filters": 4,
                                              "dropout": 0.1}},
                       {"tinycnn": {"filters": [4, 8]}})
    models, metrics, decision = run["models"], run["metrics"], run["decision"]

    assert set(run["results"]["tinycnn"]) == {"untuned", "tuned", "tuning_gain"}
    assert "| tinycnn (beyond the seed) |" in (metrics / "comparison.md").read_text()
    assert set(decision["candidates"]) == {"lenet5-tuned", "tinycnn-tuned", "ensemble"}
    assert decision["candidates"]["tinycnn-tuned"]["mflops"] > 0
    assert (models / "onnx" / "tinycnn-tuned.onnx").stat().st_size > 0
    assert set(run["figures"]["exports"]) == {"lenet5-tuned", "tinycnn-tuned", "ensemble"}
    best = json.loads((models / "tinycnn" / "best_params.json").read_text())
    assert best["settings"]["filters"] in (4, 8)


def test_the_residual_cnn_with_its_recipe_goes_through_every_stage_and_into_the_app(
        tmp_path, mlflow_store):
    from handwriting.app import catalog

    recipe = {"epochs": 2, "batch_size": 32, "learning_rate": 0.002, "label_smoothing": 0.1,
              "lr_schedule": "cosine", "warmup_epochs": 1, "augment_on_the_fly": 0.5,
              "width": 4, "dropout": 0.1}
    # Equal ensemble weights: on random data a validation accuracy of 0 is likely.
    run = run_pipeline(tmp_path, {"rescnn": recipe}, {"rescnn": {"learning_rate": [0.002]}},
                       ensemble_weighting="none")
    models, metrics, decision = run["models"], run["metrics"], run["decision"]

    assert set(run["results"]["rescnn"]) == {"untuned", "tuned", "tuning_gain"}
    report = (metrics / "comparison.md").read_text()
    assert "| rescnn (beyond the seed) |" in report and "| lenet5 |" in report
    assert "rescnn-tuned" in decision["candidates"]
    assert (models / "onnx" / "rescnn-tuned.onnx").stat().st_size > 0
    summary = json.loads((metrics / "train" / "rescnn-untuned.json").read_text())
    assert summary["epochs"] == 2
    choices, _ = catalog.catalog(models, metrics, run["params"].evaluate)
    names = [choice.name for choice in choices]
    assert {"rescnn-untuned", "rescnn-tuned"} <= set(names)
    ensemble = next(choice for choice in choices if choice.kind == "ensemble")
    assert "rescnn-tuned" in [member.name for member in ensemble.members]
