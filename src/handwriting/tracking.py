"""MLflow set-up: one SQLite store and one artifact folder per repository.

The tracking URI is ``sqlite:///<absolute repo path>/mlflow.db`` unless ``MLFLOW_TRACKING_URI``
is set, and artifacts go to ``<repo>/mlartifacts``; both are git-ignored. (Not the deprecated
``./mlruns`` file store, and never a relative URI, which would change with the working
directory.) Nothing happens at import time: call :func:`configure` first.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

EXPERIMENT = "handwriting"


def repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding
    dvc.yaml; the working directory itself when there is none."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return start


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the repository's SQLite store (absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(repo_root(root) / 'mlflow.db').as_posix()}"


def configure(experiment: str = EXPERIMENT, root: Path | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    import mlflow
    from mlflow import MlflowClient

    root = repo_root(root)
    mlflow.set_tracking_uri(tracking_uri(root))
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        experiment_id = client.create_experiment(
            experiment, artifact_location=(root / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit(root: Path | None = None) -> str:
    """The commit checked out in the repository ('unknown' outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(root),
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_tags(*, stage: str, architecture: str, variant: str, pretrained: bool,
             root: Path | None = None) -> dict[str, str]:
    """The tags every training run carries."""
    tags = {
        "git_commit": git_commit(root),
        "dvc_stage": stage,
        "architecture": architecture,
        "variant": variant,
        "pretrained": str(pretrained).lower(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags
