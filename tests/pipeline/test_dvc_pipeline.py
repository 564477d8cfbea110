"""Real `dvc repro` of the data stages in a temporary copy of the repository, with tiny params.

Checks the properties the pipeline promises: outputs in the right shape, no source image in two
subsets, validation and test free of augmented images, byte-identical reruns, a no-op second
`dvc repro`, and a param change that reruns only the stages reading it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from handwriting import labels
from handwriting.datasets import load_arrays
from tests.conftest import REPO

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

DATA_STAGES = ["feedback_inbox", "raw", "balance", "augment", "split"]


def tiny_params(values: dict) -> dict:
    for arch in values["train"]["architectures"]:
        values["train"][arch]["epochs"] = 1
    values["tune"].update(n_trials=2, rungs=2, reduction=2)
    values["raw"]["synthetic"]["per_class"] = 4
    values["raw"]["synthetic"]["per_class_overrides"] = {"r": 6}
    values["raw"]["synthetic"]["canvas_sizes"] = [64, 96]
    values["augment"]["copies"] = 2
    return values


def _copy_repository(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = REPO / relative
        if source.is_file() and not relative.startswith(("data/", "metrics/", "plots/")):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


class Repo:
    """A throwaway git + DVC copy of the project whose stages run the copy's own code."""

    def __init__(self, root: Path):
        self.root = root
        self.env = dict(os.environ)
        # The copy's own store and root, whatever the caller's environment says.
        for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
            self.env.pop(name, None)
        # `python` in dvc.yaml must be this interpreter, importing this copy's package.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"
        self.env["PYTHONPATH"] = str(root / "src")

    def run(self, *command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        # The timeout turns a stuck command into a failure that names it.
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def dvc(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, timeout=timeout)

    def edit_params(self, change) -> None:
        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(change(yaml.safe_load(path.read_text())),
                                       sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repo:
    root = tmp_path_factory.mktemp("repo")
    _copy_repository(root)
    copy = Repo(root)
    copy.edit_params(tiny_params)
    copy.run("git", "init", "-q")
    copy.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    copy.dvc("repro", *DATA_STAGES[-1:])
    return copy


def test_outputs_have_every_class_and_the_promised_sizes(repo):
    root = repo.root
    for char in labels.CLASSES:
        expected = 6 if char == "r" else 4
        assert len(list((root / "data/raw" / labels.folder_of(char)).glob("*.png"))) == expected
    balanced = load_arrays(root / "data/balanced")
    assert np.bincount(balanced["labels"], minlength=52).tolist() == [4] * 52
    assert balanced["images"].shape == (208, 32, 32) and balanced["images"].dtype == np.uint8
    augmented = load_arrays(root / "data/augmented")
    assert len(augmented["images"]) == 208 * 3
    assert (root / "plots/samples.png").stat().st_size > 20_000
    assert (root / "data/split/manifest.csv").is_file()


def test_no_source_in_two_subsets_and_no_augmented_image_in_val_or_test(repo):
    subsets = {name: load_arrays(repo.root / "data/split" / name) for name in
               ("train", "val", "test")}
    sources = {name: set(data["source_ids"].tolist()) for name, data in subsets.items()}
    assert not sources["train"] & sources["val"]
    assert not sources["train"] & sources["test"]
    assert not sources["val"] & sources["test"]
    assert (subsets["val"]["variants"] == 0).all() and (subsets["test"]["variants"] == 0).all()
    assert (subsets["train"]["variants"] > 0).any()
    for name in ("val", "test"):  # stratified: every class present
        assert set(subsets[name]["labels"].tolist()) == set(range(52))


def test_second_repro_does_nothing_quickly_and_status_is_clean(repo):
    started = time.perf_counter()
    result = repo.dvc("repro", *DATA_STAGES[-1:])
    elapsed = time.perf_counter() - started
    assert "Running stage" not in result.stdout
    assert elapsed < 10, f"a no-op dvc repro took {elapsed:.1f} s"
    assert "up to date" in repo.dvc("status", *DATA_STAGES[-1:]).stdout


def test_forced_rerun_gives_byte_identical_outputs(repo):
    lock_before = (repo.root / "dvc.lock").read_text()
    sheet_before = (repo.root / "plots/samples.png").read_bytes()
    repo.dvc("repro", "--force", *DATA_STAGES[-1:])
    # dvc.lock records the md5 of every output: identical lock, identical bytes.
    assert (repo.root / "dvc.lock").read_text() == lock_before
    assert (repo.root / "plots/samples.png").read_bytes() == sheet_before


def test_a_param_change_reruns_only_the_stages_that_read_it(repo):
    repo.edit_params(lambda v: {**v, "split": {"train": 0.6, "val": 0.2, "test": 0.2}})
    status = repo.dvc("status", *DATA_STAGES[-1:]).stdout
    assert "split:" in status
    for upstream in ("raw:", "balance:", "augment:"):
        assert upstream not in status
    repo.edit_params(lambda v: {**v, "split": {"train": 0.7, "val": 0.15, "test": 0.15}})


def test_feedback_images_make_the_next_repro_rebuild_the_data(repo):
    feedback = repo.root / "data/feedback/lower/r"
    feedback.mkdir(parents=True)
    shutil.copy(next((repo.root / "data/raw/lower/r").glob("*.png")), feedback / "fix.png")
    assert "raw:" in repo.dvc("status").stdout
    repo.dvc("repro", *DATA_STAGES[-1:])
    assert (repo.root / "data/raw/lower/r/feedback-fix.png").is_file()
    assert "up to date" in repo.dvc("status", *DATA_STAGES[-1:]).stdout
    shutil.rmtree(repo.root / "data/feedback/lower")


def test_train_stage_writes_model_history_metrics_and_an_mlflow_run(repo):
    repo.dvc("repro", "train@lenet5")
    root = repo.root
    assert (root / "models/lenet5/untuned.keras").stat().st_size > 10_000
    history = (root / "plots/history/lenet5-untuned.csv").read_text().splitlines()
    assert history[0] == "epoch,accuracy,loss,val_accuracy,val_loss" and len(history) == 2
    assert "val_accuracy" in (root / "metrics/train/lenet5-untuned.json").read_text()
    assert (root / "mlflow.db").is_file() and (root / "mlartifacts").is_dir()
    assert "lenet5-untuned.json" in repo.dvc("metrics", "show").stdout
    assert "train@lenet5" not in repo.dvc("status", "train@lenet5").stdout
    # a change to another architecture's params leaves this one alone
    repo.edit_params(lambda v: {**v, "train": {**v["train"],
                                                "gru": {**v["train"]["gru"], "units": 16}}})
    status = repo.dvc("status", "train@lenet5", "train@gru").stdout
    assert "train@gru" in status and "train@lenet5" not in status


def test_tune_stage_and_a_change_reruns_only_that_architecture(repo):
    repo.dvc("repro", "tune@lenet5")
    root = repo.root
    best = json.loads((root / "models/lenet5/best_params.json").read_text())
    assert set(best["settings"]) == \
        set(yaml.safe_load((root / "params.yaml").read_text())["tune"]["lenet5"])
    assert (root / "models/lenet5/tuned.keras").is_file()
    summary = json.loads((root / "metrics/train/lenet5-tuned.json").read_text())
    assert summary["winner"] == best["winner"] and summary["configurations"] == 2
    with (root / "plots/tune/lenet5-rungs.csv").open(newline="") as handle:
        rungs = list(csv.DictReader(handle))
    assert {row["rung"] for row in rungs} == {"0", "1"}  # both rungs drawn
    assert {row["configuration"] for row in rungs} == {"untuned", "config-1"}
    assert summary["val_accuracy"] >= summary["untuned_val_accuracy"]
    lenet5_stages = ("train@lenet5", "tune@lenet5")
    assert "up to date" in repo.dvc("status", *lenet5_stages).stdout

    def change_gru(values):
        values["train"]["gru"]["units"] = 32
        values["tune"]["gru"]["units"] = [32]
        return values

    repo.edit_params(change_gru)
    assert "up to date" in repo.dvc("status", *lenet5_stages).stdout
    # (No dry run of tune@gru: it reads train@gru's model, which a dry run does not make.)
    dry = repo.dvc("repro", "--dry", "train@gru", *lenet5_stages).stdout
    assert "Running stage 'train@gru'" in dry, dry
    for unchanged in (*lenet5_stages, "raw", "split"):
        assert f"Running stage '{unchanged}'" not in dry, dry
    status = repo.dvc("status", "tune@gru", *lenet5_stages).stdout
    assert "tune@gru" in status and "lenet5" not in status, status

    def change_lenet5_space(values):
        values["tune"]["lenet5"]["batch_size"] = [32]
        return values

    repo.edit_params(change_lenet5_space)
    status = repo.dvc("status", *lenet5_stages).stdout
    assert "tune@lenet5" in status and "train@lenet5" not in status


def _mlflow_runs_by_experiment(db: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT value, COUNT(*) FROM tags WHERE key = 'dvc_exp_name' GROUP BY value")
        return dict(rows.fetchall())


def _stop_queue_workers(root: Path, grace: float = 15.0) -> None:
    """Terminate any DVC queue worker of the repository at ``root`` still alive ``grace``
    seconds after `dvc queue stop` (their pid files are in .dvc/tmp/exps/celery)."""
    import signal

    deadline = time.monotonic() + grace
    for pid_file in (root / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break  # gone
            time.sleep(0.5)
        else:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def test_queued_experiments_two_at_once_keep_their_mlflow_runs(repo):
    # DVC runs queued experiments in temporary copies that it deletes afterwards: their runs
    # must land in this repository's store, and two workers share the SQLite store safely.
    repo.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    repo.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    experiments = {"q-lenet-ep2": "train.lenet5.epochs=2",
                   "q-lenet-bs16": "train.lenet5.batch_size=16"}
    names = list(experiments)
    for name, value in experiments.items():
        repo.dvc("exp", "run", "--queue", "-n", name, "-S", value, "train@lenet5")
    # The workers outlive `dvc queue start` and inherit its output: captured, the call would
    # wait for them to exit, and DVC's worker sometimes misses its own empty-queue shutdown
    # (seen once in CI: a worker idle for half an hour after its task succeeded). So the
    # start writes to a file, the status is polled, and the workers are stopped below.
    with (repo.root / "queue-start.log").open("w") as log:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"],
                       cwd=repo.root, env=repo.env, stdout=log, stderr=subprocess.STDOUT,
                       check=True, timeout=120)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = repo.dvc("queue", "status", timeout=60).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(5)
        logs = {name: subprocess.run([sys.executable, "-m", "dvc", "queue", "logs", name],
                                     cwd=repo.root, env=repo.env, capture_output=True,
                                     text=True, timeout=60).stdout[-3000:] for name in names}
    finally:
        repo.dvc("queue", "stop", "--kill", timeout=120)
        _stop_queue_workers(repo.root)
    assert status.count("Success") == 2, (status, logs)
    runs = _mlflow_runs_by_experiment(repo.root / "mlflow.db")
    assert runs.get("q-lenet-ep2", 0) >= 1 and runs.get("q-lenet-bs16", 0) >= 1, runs


def test_the_crossdata_fingerprint_changes_with_the_folder_and_only_then(repo, tmp_path):
    # evaluate depends on data/crossdata.json (tests/pipeline/test_dvc_yaml.py): its hash in
    # dvc.lock is what reruns evaluate, so it must move with the folder and only with it.
    import cv2

    folder = tmp_path / "real"
    (folder / "upper" / "A").mkdir(parents=True)
    cv2.imwrite(str(folder / "upper" / "A" / "1.png"), np.full((8, 8), 200, np.uint8))

    def fingerprint_hash() -> str:
        repo.dvc("repro", "crossdata")  # always_changed: it runs on every repro
        lock = yaml.safe_load((repo.root / "dvc.lock").read_text())
        return lock["stages"]["crossdata"]["outs"][0]["md5"]

    def set_folders(folders):
        repo.edit_params(lambda v: {**v, "evaluate": {**v["evaluate"], "crossdata": folders}})

    set_folders([str(folder)])
    first = fingerprint_hash()
    assert fingerprint_hash() == first  # nothing changed: evaluate stays up to date
    cv2.imwrite(str(folder / "upper" / "A" / "1.png"), np.full((8, 8), 90, np.uint8))
    changed = fingerprint_hash()
    shutil.rmtree(folder)
    removed = fingerprint_hash()
    assert len({first, changed, removed}) == 3
    assert "always changed" in repo.dvc("status", "crossdata").stdout
    set_folders(["../shared/data/emnist-letters"])
