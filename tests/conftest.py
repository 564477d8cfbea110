"""Shared fixtures: paths of the repository and of the real EMNIST sample beside it, plain
fit settings and params, a temporary MLflow store and a tiny split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Keras runs on TensorFlow in the test process, whichever test imports it first (evaluation,
# serving and the ONNX export run on it; Keras fixes its backend at its first import). Tests of
# the other training engines train in processes of their own.
os.environ["KERAS_BACKEND"] = "tensorflow"
EMNIST = REPO.parent / "shared" / "data" / "emnist-letters"


def fit_settings(**changes):
    """Plain fit settings for tests (Adam 1e-3, batch 32, 2 epochs, no recipe extras), with
    ``changes``."""
    from handwriting.models.fitting import FitSettings

    plain = dict(epochs=2, batch_size=32, learning_rate=1e-3, optimizer="adam",
                 label_smoothing=0.0, lr_schedule="constant", warmup_epochs=0,
                 augment_on_the_fly=0.0, fine_tune_blocks=0, fine_tune_epochs=0,
                 engine="tensorflow")
    return FitSettings(**{**plain, **changes})


def variant_ranges(**changes):
    """The repository's augment ranges (params.yaml's ``augment`` and the preprocessing's
    margin), with ``changes``."""
    import dataclasses

    from handwriting.augmentation import AugmentSettings
    ranges = AugmentSettings.from_params(project_params())
    return dataclasses.replace(ranges, **changes)


def project_params():
    """The repository's params.yaml read by the project's own loader (typed sections)."""
    from handwriting.params import load_params

    return load_params(REPO / "params.yaml")


def repo_params() -> dict:
    """The repository's params.yaml as a dict, training on the ``tensorflow`` engine, the test
    process's (above)."""
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values["train"]["defaults"]["engine"] = "tensorflow"
    return values


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory):
    """Frozen-base features and JAX's compiled steps persist in folders of this test session,
    not the user's caches."""
    from handwriting.models.engine import JAX_CACHE_ENV
    from handwriting.models.features import FEATURE_CACHE_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FEATURE_CACHE_ENV, str(tmp_path_factory.mktemp("feature-cache")))
        patch.setenv(JAX_CACHE_ENV, str(tmp_path_factory.mktemp("jax-cache")))
        yield


def benchmark_module(name: str):
    """benchmarks/<name>.py imported as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def emnist_dir() -> Path:
    """The real EMNIST letters sample (../shared/data/emnist-letters), read-only."""
    if not (EMNIST / "upper" / "A").is_dir():
        pytest.skip(f"the EMNIST sample is not at {EMNIST}")
    return EMNIST


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A temporary SQLite MLflow store (with DVC_EXP_NAME set) and tmp_path as the working
    directory; returns the tracking URI."""
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "test-exp")
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture()
def tiny_split(tmp_path):
    """Random 32x32 train (156) and val (52) arrays, every class present, under tmp_path/split
    (a module may define its own)."""
    from handwriting import labels
    from handwriting.datasets import save_arrays

    rng = np.random.default_rng(0)
    for subset, count in (("train", 156), ("val", 52)):
        class_ids = np.arange(count) % labels.NUM_CLASSES
        save_arrays(tmp_path / "split" / subset,
                    images=rng.integers(0, 256, size=(count, 32, 32), dtype=np.uint8),
                    labels=class_ids)
    return tmp_path / "split"
