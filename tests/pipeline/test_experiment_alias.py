"""A real `dvc exp run` of the export stage never moves the served model: the registry version
it adds gets the ``challenger`` alias and ``champion`` stays where it was.

The stage is dvc.yaml's own export stage (its command, params and data deps), in a throwaway
git + DVC repository holding the tiny project of tests/unit/test_export.py, with its own MLflow
store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

mlflow = pytest.importorskip("mlflow")

from handwriting.serving.pyfunc import ALIAS, CHALLENGER  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.unit.test_export import NAME, project  # noqa: E402, F401  (the tiny project)

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]


def _repository(tiny, root):
    """The tiny project's inputs where dvc.yaml's export stage reads them, and that stage."""
    shutil.copytree(tiny / "split", root / "data" / "split")
    for arch in ("lenet5", "gru"):
        shutil.copytree(tiny / "models" / arch, root / "models" / arch)
    shutil.copytree(tiny / "metrics" / "train", root / "metrics" / "train")
    shutil.copy(tiny / "metrics" / "champion.json", root / "metrics" / "champion.json")
    shutil.copy(tiny / "params.yaml", root / "params.yaml")
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["export"]
    # the package is the installed one (PYTHONPATH below); the model deps those the project has
    stage["deps"] = [d for d in stage["deps"] if (root / d).exists()]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"export": stage}}))


def test_a_dvc_experiment_registers_a_challenger_and_leaves_the_champion(project,  # noqa: F811
                                                                        tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _repository(project, root)
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    env = {key: value for key, value in os.environ.items()
           if key not in ("DVC_EXP_NAME", "DVC_ROOT", "DVC_EXP_BASELINE_REV")}
    env.update(PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}",
               PYTHONPATH=str(REPO / "src"), MLFLOW_TRACKING_URI=uri)

    def run(*command: str) -> str:
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    run("git", "init", "-q")
    run("git", "config", "user.name", "test")
    run("git", "config", "user.email", "test@example.com")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run("git", "add", "dvc.yaml", "params.yaml", ".dvc", ".dvcignore")
    run("git", "commit", "-q", "-m", "the export stage")

    assert "alias 'champion' now points to it" in run(sys.executable, "-m", "dvc", "repro")
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == "1"

    out = run(sys.executable, "-m", "dvc", "exp", "run", "-n", "sweep-1",
              "-S", "export.unsure_keep_correct=0.9")
    assert "as 'challenger' (experiment sweep-1); 'champion' stays on version 1" in out
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == "1"
    challenger = client.get_model_version_by_alias(NAME, CHALLENGER)
    assert str(challenger.version) == "2" and challenger.tags["dvc_exp_name"] == "sweep-1"
