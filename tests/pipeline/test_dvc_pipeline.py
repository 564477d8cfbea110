"""Real `dvc repro` of the data stages in a temporary copy of the repository, with tiny params.

Checks the properties the pipeline promises: outputs in the right shape, no source image in two
subsets, validation and test free of augmented images, byte-identical reruns, a no-op second
`dvc repro`, and a param change that reruns only the stages reading it.
"""

from __future__ import annotations

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

pytestmark = pytest.mark.pipeline

DATA_STAGES = ["feedback_inbox", "raw", "balance", "augment", "split"]


def tiny_params(values: dict) -> dict:
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
        # `python` in dvc.yaml must be this interpreter, importing this copy's package.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"
        self.env["PYTHONPATH"] = str(root / "src")

    def run(self, *command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True,
                                text=True)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def dvc(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args)

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
    result = repo.dvc("repro")
    elapsed = time.perf_counter() - started
    assert "Running stage" not in result.stdout
    assert elapsed < 10, f"a no-op dvc repro took {elapsed:.1f} s"
    assert "up to date" in repo.dvc("status").stdout


def test_forced_rerun_gives_byte_identical_outputs(repo):
    lock_before = (repo.root / "dvc.lock").read_text()
    sheet_before = (repo.root / "plots/samples.png").read_bytes()
    repo.dvc("repro", "--force", *DATA_STAGES[-1:])
    # dvc.lock records the md5 of every output: identical lock, identical bytes.
    assert (repo.root / "dvc.lock").read_text() == lock_before
    assert (repo.root / "plots/samples.png").read_bytes() == sheet_before


def test_a_param_change_reruns_only_the_stages_that_read_it(repo):
    repo.edit_params(lambda v: {**v, "split": {"train": 0.6, "val": 0.2, "test": 0.2}})
    status = repo.dvc("status").stdout
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
    assert "up to date" in repo.dvc("status").stdout
    shutil.rmtree(repo.root / "data/feedback/lower")
