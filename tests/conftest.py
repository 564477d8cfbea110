"""Shared fixtures: paths of the repository and of the real EMNIST sample beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMNIST = REPO.parent / "shared" / "data" / "emnist-letters"


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
