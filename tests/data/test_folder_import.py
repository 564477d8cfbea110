"""The folder source: real EMNIST letters import; bad files are reported and skipped."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from handwriting import labels
from handwriting.imaging import PreprocessSettings, preprocess
from handwriting.params import load_params
from handwriting.stages import raw
from tests.conftest import repo_params

SETTINGS = PreprocessSettings(image_size=32)


def small_emnist_copy(emnist_dir: Path, target: Path, per_class: int = 2) -> Path:
    for char in labels.CLASSES:
        folder = target / labels.folder_of(char)
        folder.mkdir(parents=True)
        for path in sorted((emnist_dir / labels.folder_of(char)).glob("*.png"))[:per_class]:
            shutil.copy(path, folder / path.name)
    return target


def test_emnist_imports_with_the_right_labels_and_polarity(emnist_dir, tmp_path):
    source = small_emnist_copy(emnist_dir, tmp_path / "emnist")
    imported, skipped = raw.import_folder(source, tmp_path / "raw", SETTINGS)
    assert imported == 104 and skipped == []
    for char in "Aa":
        files = sorted((tmp_path / "raw" / labels.folder_of(char)).glob("*.png"))
        assert len(files) == 2
        original = cv2.imread(str(emnist_dir / labels.folder_of(char) / files[0].name),
                              cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE), original)
        # white-on-black EMNIST and its inverted copy are the same model input
        np.testing.assert_array_equal(preprocess(original, 32), preprocess(255 - original, 32))


def test_bad_files_are_listed_and_skipped_never_fatal(emnist_dir, tmp_path):
    source = small_emnist_copy(emnist_dir, tmp_path / "mixed", per_class=1)
    (source / "upper" / "A" / "empty.png").write_bytes(b"")
    (source / "upper" / "B" / "text.png").write_text("not an image")
    (source / "upper" / "C" / "notes.txt").write_text("a note")
    cv2.imwrite(str(source / "upper" / "D" / "blank.png"), np.full((20, 20), 255, np.uint8))
    (source / "upper" / "a").mkdir()  # lower-case letter under upper/: wrong label
    cv2.imwrite(str(source / "upper" / "a" / "misfiled.png"), np.zeros((5, 5), np.uint8))
    (source / "stray.png").write_bytes(b"x")
    good = cv2.imread(str(next((source / "lower" / "b").glob("*.png"))), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(source / "lower" / "b" / "again.jpg"), good)
    imported, skipped = raw.import_folder(source, tmp_path / "raw", SETTINGS)
    reasons = dict(skipped)
    assert imported == 53  # one per class plus the JPEG copy
    assert set(reasons) == {"upper/A/empty.png", "upper/B/text.png", "upper/C/notes.txt",
                            "upper/D/blank.png", "upper/a/misfiled.png", "stray.png"}
    assert "empty" in reasons["upper/A/empty.png"]
    assert "cannot be decoded" in reasons["upper/B/text.png"]
    assert "not an image file type" in reasons["upper/C/notes.txt"]
    assert "no ink" in reasons["upper/D/blank.png"]
    assert "not a class folder" in reasons["upper/a/misfiled.png"]
    assert (tmp_path / "raw" / "lower" / "b" / "again.jpg.png").is_file()


def params_for_folder(tmp_path: Path, folder: Path) -> Path:
    values = repo_params()
    values["raw"]["source"] = "folder"
    values["raw"]["folder"] = str(folder)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def run_raw(tmp_path: Path, params: Path, feedback: Path) -> int:
    return raw.main(["--params", str(params), "--feedback", str(feedback),
                     "--out", str(tmp_path / "data" / "raw"),
                     "--report", str(tmp_path / "metrics" / "raw.json"),
                     "--skipped", str(tmp_path / "metrics" / "raw_skipped.csv"),
                     "--samples", str(tmp_path / "plots" / "samples.png")])


def test_raw_stage_with_folder_and_feedback_writes_report_and_sheet(emnist_dir, tmp_path):
    source = small_emnist_copy(emnist_dir, tmp_path / "emnist", per_class=1)
    (source / "upper" / "Q" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    feedback = tmp_path / "feedback"
    (feedback / "lower" / "q").mkdir(parents=True)
    shutil.copy(next((source / "lower" / "q").glob("*.png")), feedback / "lower/q/mine.png")
    assert run_raw(tmp_path, params_for_folder(tmp_path, source), feedback) == 0
    report = json.loads((tmp_path / "metrics" / "raw.json").read_text())
    assert report == {"images": 53, "skipped": 1, "feedback_images": 1, "classes_present": 52}
    with (tmp_path / "metrics" / "raw_skipped.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == ["upper/Q/broken.png"]
    assert (tmp_path / "data" / "raw" / "lower" / "q" / "feedback-mine.png").is_file()
    assert (tmp_path / "plots" / "samples.png").stat().st_size > 10_000


def test_missing_folder_is_a_clear_error_and_keeps_old_output(tmp_path):
    old = tmp_path / "data" / "raw" / "upper" / "A"
    old.mkdir(parents=True)
    (old / "kept.png").write_bytes(b"old")
    with pytest.raises(SystemExit, match="^raw: params.yaml: raw.folder=.* is not a directory; "
                                         "set raw.folder"):
        run_raw(tmp_path, params_for_folder(tmp_path, tmp_path / "nowhere"), tmp_path / "fb")
    assert (old / "kept.png").read_bytes() == b"old"
    assert not list(tmp_path.glob("data/.*partial"))


def test_folder_with_no_usable_image_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty" / "upper" / "A"
    empty.mkdir(parents=True)
    (empty / "x.png").write_bytes(b"")
    params = params_for_folder(tmp_path, tmp_path / "empty")
    with pytest.raises(raw.NoUsableImageError, match="^no usable image found in .*empty"):
        raw.run(load_params(params), tmp_path / "data" / "raw", tmp_path / "fb",
                tmp_path / "metrics" / "raw.json", tmp_path / "metrics" / "raw_skipped.csv",
                tmp_path / "plots" / "samples.png")
    with pytest.raises(SystemExit, match="^raw: no usable image found"):
        run_raw(tmp_path, params, tmp_path / "fb")
