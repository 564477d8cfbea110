"""MLflow set-up: one SQLite store and one artifact folder per repository.

The tracking URI is ``sqlite:///<absolute repo path>/mlflow.db`` unless ``MLFLOW_TRACKING_URI``
is set, and artifacts go to ``<repo>/mlartifacts``; both are git-ignored. (Not the deprecated
``./mlruns`` file store, and never a relative URI, which would change with the working
directory.) Nothing happens at import time: call :func:`configure` first.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

EXPERIMENT = "handwriting"


def repo_root(start: Path | None = None) -> Path:
    """The user's repository: the nearest folder at or above ``start`` holding dvc.yaml (the
    working directory itself when there is none).

    Without ``start``, a stage run by DVC answers ``DVC_ROOT``: queued and ``--temp``
    experiments run in a temporary copy of the repository that DVC deletes afterwards, and DVC
    points ``DVC_ROOT`` at the user's repository, so their MLflow runs land in the user's store
    and relative paths in params.yaml mean what they mean there.
    """
    dvc_root = os.environ.get("DVC_ROOT")
    if start is None and dvc_root and (Path(dvc_root) / "dvc.yaml").is_file():
        return Path(dvc_root).resolve()
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
    # Several stages may start at once (`dvc queue start -j 2`): creating the SQLite store's
    # tables and the experiment must happen once, so the first use is serialised by a lock file.
    with _store_lock(root):
        client = MlflowClient()
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            experiment_id = client.create_experiment(
                experiment, artifact_location=(root / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def _store_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on ``<repo>/mlflow.db.lock`` (released when the block ends)."""
    import fcntl

    with open(root / "mlflow.db.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def git_commit(root: Path | None = None) -> str:
    """The commit the run's code comes from: the baseline commit of a ``dvc exp run``
    experiment, else the commit checked out in the repository ('unknown' outside git)."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(root),
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_tags(*, stage: str, architecture: str, variant: str, pretrained: bool,
             root: Path | None = None) -> dict[str, str]:
    """The tags every training and evaluation run carries."""
    tags = {
        "git_commit": git_commit(root),
        "data_version": data_version(),
        "dvc_stage": stage,
        "architecture": architecture,
        "variant": variant,
        "pretrained": str(pretrained).lower(),
    }
    return {**tags, **experiment_tags()}


SPLIT_DATA = "data/split"


def data_version(lock: Path = Path("dvc.lock"), path: str = SPLIT_DATA) -> str:
    """The hash DVC recorded for ``path`` (the split the models learn from and are scored on)
    in ``lock``, the dvc.lock of the stage's working directory, which DVC updates as each
    stage finishes; "unknown" outside a DVC pipeline. ``dvc data status`` and ``git log
    dvc.lock`` lead from it to the data."""
    import yaml

    try:
        # libyaml's loader when PyYAML has it: a tenth of the pure-Python one's time on a
        # dvc.lock of 2,600 lines, read by every tracked run
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        stages = (yaml.load(lock.read_text(encoding="utf-8"), Loader=loader) or {}).get(
            "stages", {})
    except (OSError, yaml.YAMLError):
        return "unknown"
    for stage in stages.values():
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            if isinstance(out, dict) and out.get("path") == path and "md5" in out:
                return str(out["md5"])
    return "unknown"


def pinned(packages: Iterable[str]) -> list[str]:
    """``package==version`` of each of ``packages`` at this environment's version (the bare
    name where it is not installed): the pip requirements of a model logged to MLflow."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in packages:
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


def experiment_tags() -> dict[str, str]:
    """``dvc_exp_name`` when the run belongs to a ``dvc exp run`` experiment, else nothing."""
    name = os.environ.get("DVC_EXP_NAME")
    return {"dvc_exp_name": name} if name else {}


def resolve(path: str | Path) -> Path:
    """A path from params.yaml: ``~`` expanded, a relative one taken from the user's
    repository (see :func:`repo_root`), not from the working directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root() / path
