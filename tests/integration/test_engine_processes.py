"""Training engines across processes: a model trained on JAX by the train stage loads on
TensorFlow (and exports to ONNX with full agreement) and the other way round, and JAX trains
byte-identical ``.keras`` files in two processes through the train stage itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from handwriting import labels
from handwriting.datasets import save_arrays
from tests.conftest import repo_params

pytest.importorskip("jax")

# Train stages in processes of their own: over 5 s each (`pytest -m "not slow"` leaves them out).
pytestmark = pytest.mark.slow

ARCHS = ("lenet5", "gru")


# Loads the .keras files named on the command line on this process's backend and prints
# each one's probabilities of the probe images (an .npy file) to an .npy file beside it.
PREDICT = """
import sys
import numpy as np
import keras
probe = np.load(sys.argv[1])
for path in sys.argv[2:]:
    np.save(path + f".{keras.backend.backend()}.npy",
            keras.models.load_model(path).predict(probe, verbose=0))
print(keras.backend.backend())
"""


def _run(command, tmp_path, env_backend: str | None = None, **env):
    import os

    environment = {**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if env_backend:
        environment["KERAS_BACKEND"] = env_backend
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    """A split, params on the JAX engine and probe images; the stages log to its own store."""
    project = tmp_path_factory.mktemp("engines")
    rng = np.random.default_rng(0)
    for subset, count in (("train", 104), ("val", 52)):
        save_arrays(project / "split" / subset, labels=np.arange(count) % labels.NUM_CLASSES,
                    images=rng.integers(0, 256, size=(count, 32, 32), dtype=np.uint8))
    values = repo_params()
    values["train"]["lenet5"].update(epochs=1, batch_size=16)
    values["train"]["gru"].update(epochs=1, batch_size=16, units=8)
    values["train"]["defaults"]["engine"] = "jax"
    (project / "jax.yaml").write_text(yaml.safe_dump(values))
    np.save(project / "probe.npy", rng.random((16, 32, 32, 1), dtype=np.float32))
    return project


def _train_jax_stage(project, arch: str, out: str) -> str:
    """The train stage, in a process of its own, on the JAX engine."""
    _run([sys.executable, "-m", "handwriting.stages.train", "--arch", arch,
          "--params", str(project / "jax.yaml"), "--split", str(project / "split"),
          "--model", f"{out}/{arch}.keras", "--history", f"{out}/{arch}.csv",
          "--metrics", f"{out}/{arch}.json"], project,
         MLFLOW_TRACKING_URI=f"sqlite:///{(project / 'mlflow.db').as_posix()}",
         DVC_EXP_NAME="test-exp")
    return str(project / out / f"{arch}.keras")


@pytest.fixture(scope="module")
def jax_models(tiny_project) -> list[str]:
    """The train stage's .keras files of every test architecture, trained on JAX (once for the
    module: the determinism and cross-backend tests both read them)."""
    return [_train_jax_stage(tiny_project, arch, "jax") for arch in ARCHS]


def test_jax_trains_byte_identical_models_in_two_processes(tiny_project, jax_models):
    for arch, first in zip(ARCHS, jax_models, strict=True):
        second = _train_jax_stage(tiny_project, arch, "second")
        with open(first, "rb") as a, open(second, "rb") as b:
            assert a.read() == b.read(), f"{arch}: two JAX runs wrote different files"


def test_a_model_trained_on_jax_loads_and_exports_on_tensorflow(tiny_project, jax_models,
                                                                tmp_path):
    import keras

    from handwriting.serving.onnx_export import agreement_with, export_onnx

    assert _run([sys.executable, "-c", PREDICT, "probe.npy", *jax_models], tiny_project,
                env_backend="jax").strip() == "jax"
    probe = np.load(tiny_project / "probe.npy")
    for path in jax_models:
        on_jax = np.load(path + ".jax.npy")
        model = keras.models.load_model(path)  # this process: TensorFlow
        on_tensorflow = model.predict(probe, verbose=0)
        np.testing.assert_allclose(on_tensorflow, on_jax, atol=1e-5)
        onnx_path = export_onnx(model, tmp_path / "onnx" / "model.onnx")
        agreement = agreement_with(on_tensorflow, onnx_path, probe)
        assert agreement["top1_agreement"] == 1.0 and agreement["max_abs_diff"] < 1e-5


def test_a_model_trained_on_tensorflow_loads_on_jax(tiny_project):
    import keras

    from handwriting.datasets import load_arrays
    from handwriting.keras_files import save_keras
    from handwriting.models.fitting import fit_model
    from handwriting.models.zoo import build
    from tests.conftest import fit_settings

    # Trained here: this process runs Keras on TensorFlow, with the train stage's fit routine.
    train, val = (load_arrays(tiny_project / "split" / subset) for subset in ("train", "val"))
    paths = []
    for arch, hparams in (("lenet5", {}), ("gru", {"units": 8})):
        model = build(arch, (32, 32, 1), labels.NUM_CLASSES, **hparams)
        fit_model(model, fit_settings(epochs=1, batch_size=16),
                  train=(train["images"], train["labels"]), val=(val["images"], val["labels"]),
                  seed=0, verbose=0)
        paths.append(str(tiny_project / f"tf-{arch}.keras"))
        save_keras(model, Path(paths[-1]))
    assert _run([sys.executable, "-c", PREDICT, "probe.npy", *paths], tiny_project,
                env_backend="jax").strip() == "jax"
    probe = np.load(tiny_project / "probe.npy")
    for path in paths:
        np.testing.assert_allclose(np.load(path + ".jax.npy"),
                                   keras.models.load_model(path).predict(probe, verbose=0),
                                   atol=1e-5)


def test_the_tune_stage_on_jax_writes_the_same_files_whatever_the_trials_at_once(
        tiny_project, jax_models):
    """The tune stage, in processes of its own on JAX (as `dvc repro` runs it), one trial at
    a time and two at once (HANDWRITING_TRIALS_AT_ONCE): the same tuned model, byte for byte,
    and the same scores at every rung."""
    values = yaml.safe_load((tiny_project / "jax.yaml").read_text())
    values["tune"].update(sampler="tpe", n_trials=6, rungs=2, reduction=2, patience=1,
                          tie_se=0.0)
    values["tune"]["lenet5"] = {"learning_rate": {"low": 0.001, "high": 0.01, "log": True},
                                "batch_size": [16, 32], "dropout": [0.2, 0.4]}
    (tiny_project / "tune.yaml").write_text(yaml.safe_dump(values))
    untuned = Path(jax_models[ARCHS.index("lenet5")])
    written = {}
    for at_once in ("1", "2"):
        out = tiny_project / f"tuned-{at_once}"
        _run([sys.executable, "-m", "handwriting.stages.tune", "--arch", "lenet5",
              "--params", str(tiny_project / "tune.yaml"), "--split",
              str(tiny_project / "split"), "--untuned-model", str(untuned),
              "--untuned-history", str(untuned.with_suffix(".csv")),
              "--untuned-metrics", str(untuned.with_suffix(".json")),
              "--best-params", f"{out}/best.json", "--model", f"{out}/tuned.keras",
              "--history", f"{out}/tuned.csv", "--metrics", f"{out}/tuned.json",
              "--rungs", f"{out}/rungs.csv"], tiny_project,
             MLFLOW_TRACKING_URI=f"sqlite:///{(tiny_project / 'mlflow.db').as_posix()}",
             DVC_EXP_NAME="test-exp", HANDWRITING_TRIALS_AT_ONCE=at_once)
        written[at_once] = {name: (out / name).read_bytes()
                            for name in ("tuned.keras", "rungs.csv", "best.json")}
    assert written["1"] == written["2"]
