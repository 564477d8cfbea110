"""The feedback writer: what it accepts, what it refuses, and that it never writes where it
should not (outside the feedback folder, partial files, duplicates, overwrites)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from handwriting import labels
from handwriting.datasets import scan_class_folders
from handwriting.feedback import (
    FeedbackPathError,
    count_corrections,
    save_correction,
    total_corrections,
)
from handwriting.imaging import ImageError, PreprocessSettings, decode


def letter_image(text: str = "A", size: int = 96, thickness: int = 6) -> np.ndarray:
    """A dark letter drawn on a white uint8 canvas."""
    image = np.full((size, size), 255, np.uint8)
    cv2.putText(image, text, (size // 5, size * 4 // 5), cv2.FONT_HERSHEY_SIMPLEX, size / 40,
                0, thickness)
    return image


def png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["", "AB", "1", "../a", "upper/A", " A", "a\n", "é", "Ä"])
def test_bad_labels_are_refused_and_nothing_is_written(tmp_path, label):
    with pytest.raises(labels.LabelError, match="A-Z, a-z"):
        save_correction(png(letter_image()), label, tmp_path / "feedback")
    assert all_files(tmp_path) == []


@pytest.mark.parametrize("label", [None, 1, b"A", ["A"]])
def test_non_string_labels_are_refused(tmp_path, label):
    with pytest.raises(labels.LabelError, match="must be a string holding one letter"):
        save_correction(png(letter_image()), label, tmp_path)
    assert all_files(tmp_path) == []


@pytest.mark.parametrize("label, folder", [("A", "upper/A"), ("z", "lower/z"),
                                           ("a", "lower/a"), ("Z", "upper/Z")])
def test_a_correction_lands_in_its_class_folder(tmp_path, label, folder):
    path = save_correction(png(letter_image(label)), label, tmp_path)
    assert path.parent == (tmp_path / folder).resolve()
    assert path.suffix == ".png" and path.is_file()
    assert all_files(tmp_path) == [path]


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def test_empty_bytes_are_refused(tmp_path):
    with pytest.raises(ImageError, match="empty"):
        save_correction(b"", "A", tmp_path)
    assert all_files(tmp_path) == []


def test_corrupt_bytes_are_refused(tmp_path):
    data = png(letter_image())
    with pytest.raises(ImageError, match="cannot be decoded"):
        save_correction(data[: len(data) // 3], "A", tmp_path)
    with pytest.raises(ImageError, match="cannot be decoded"):
        save_correction(b"this is not an image", "A", tmp_path)
    assert all_files(tmp_path) == []


@pytest.mark.parametrize("value", [0, 255, 128])
def test_blank_images_are_refused(tmp_path, value):
    blank = np.full((64, 64), value, np.uint8)
    with pytest.raises(ImageError, match="no ink"):
        save_correction(png(blank), "A", tmp_path)
    with pytest.raises(ImageError, match="no ink"):
        save_correction(blank, "A", tmp_path)
    assert all_files(tmp_path) == []


def test_images_over_the_byte_limit_are_refused(tmp_path):
    data = png(letter_image())
    with pytest.raises(ImageError, match="over the limit"):
        save_correction(data, "A", tmp_path, max_bytes=len(data) - 1)
    assert all_files(tmp_path) == []
    assert save_correction(data, "A", tmp_path, max_bytes=len(data)).is_file()


def test_images_over_the_pixel_limit_are_refused(tmp_path):
    huge = letter_image(size=200)
    settings = PreprocessSettings(max_pixels=100 * 100)
    with pytest.raises(ImageError, match="over the limit"):
        save_correction(png(huge), "A", tmp_path, settings=settings)
    with pytest.raises(ImageError, match="over the limit"):
        save_correction(huge, "A", tmp_path, settings=settings)
    assert all_files(tmp_path) == []


def test_unsupported_inputs_are_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="bytes or a NumPy array"):
        save_correction("letter.png", "A", tmp_path)  # a path is not image data
    assert all_files(tmp_path) == []


def test_the_file_is_a_reencoded_grayscale_png_of_the_same_pixels(tmp_path):
    colour = cv2.cvtColor(letter_image("R"), cv2.COLOR_GRAY2BGR)
    colour[..., 2] = 255  # red background: not gray, so the stored file must be converted
    ok, jpeg = cv2.imencode(".jpg", colour)
    assert ok
    path = save_correction(jpeg.tobytes(), "R", tmp_path)
    stored = path.read_bytes()
    assert stored.startswith(b"\x89PNG") and stored != jpeg.tobytes()
    on_disk = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert on_disk.ndim == 2 and on_disk.dtype == np.uint8
    expected = np.round(decode(jpeg.tobytes()) * 255).astype(np.uint8)
    assert np.array_equal(on_disk, expected)


def test_an_rgba_canvas_array_is_composited_on_white(tmp_path):
    rgba = np.zeros((80, 80, 4), np.uint8)  # transparent everywhere ...
    cv2.line(rgba, (20, 10), (20, 70), (0, 0, 0, 255), 8)  # ... but an opaque black stroke
    path = save_correction(rgba, "l", tmp_path)
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored[40, 60] == 255 and stored[40, 20] == 0


def test_the_raw_stage_scanner_accepts_what_was_saved(tmp_path):
    for char in "AbZ":
        save_correction(png(letter_image(char)), char, tmp_path)
    entries = scan_class_folders(tmp_path)
    assert [(e.char, e.problem) for e in entries] == [("b", ""), ("A", ""), ("Z", "")]


# --------------------------------------------------------------------------------------------
# Names, duplicates, atomicity
# --------------------------------------------------------------------------------------------


def test_different_images_get_different_names(tmp_path):
    first = save_correction(png(letter_image("A", size=96)), "A", tmp_path)
    second = save_correction(png(letter_image("A", size=112)), "A", tmp_path)
    assert first != second and first.is_file() and second.is_file()
    assert count_corrections(tmp_path)["A"] == 2


def test_the_same_image_twice_is_stored_once(tmp_path):
    data = png(letter_image("k"))
    first = save_correction(data, "k", tmp_path)
    before = first.stat().st_mtime_ns
    second = save_correction(data, "k", tmp_path)
    # The same pixels as an array are the same correction too.
    third = save_correction(letter_image("k"), "k", tmp_path)
    assert first == second == third
    assert first.stat().st_mtime_ns == before
    assert all_files(tmp_path) == [first]


def test_the_same_image_under_two_letters_is_two_corrections(tmp_path):
    data = png(letter_image("O"))
    upper, lower = save_correction(data, "O", tmp_path), save_correction(data, "o", tmp_path)
    assert upper.name == lower.name and upper.parent != lower.parent


def test_an_existing_file_with_the_name_is_never_overwritten(tmp_path):
    data = png(letter_image("Q"))
    path = save_correction(data, "Q", tmp_path)
    other = png(letter_image("W"))
    path.write_bytes(other)  # a different image squatting on the name
    again = save_correction(data, "Q", tmp_path)
    assert again != path and again.is_file()
    assert path.read_bytes() == other


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_link(source, target):
        raise OSError(28, "No space left on device")

    def broken_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", broken_link)
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        save_correction(png(letter_image()), "A", tmp_path)
    assert all_files(tmp_path) == []


def test_no_temporary_file_is_left_after_a_save(tmp_path):
    save_correction(png(letter_image()), "A", tmp_path)
    names = [p.name for p in all_files(tmp_path)]
    assert len(names) == 1 and not names[0].startswith(".")


# --------------------------------------------------------------------------------------------
# Never outside the folder
# --------------------------------------------------------------------------------------------


def test_a_symlinked_class_folder_pointing_outside_is_refused(tmp_path):
    feedback, outside = tmp_path / "feedback", tmp_path / "outside"
    (feedback / "upper").mkdir(parents=True)
    outside.mkdir()
    (feedback / "upper" / "A").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FeedbackPathError, match="symbolic link"):
        save_correction(png(letter_image()), "A", feedback)
    assert list(outside.iterdir()) == []


def test_a_symlinked_case_folder_pointing_outside_is_refused_before_mkdir(tmp_path):
    feedback, outside = tmp_path / "feedback", tmp_path / "outside"
    feedback.mkdir()
    outside.mkdir()
    (feedback / "lower").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FeedbackPathError, match="symbolic link"):
        save_correction(png(letter_image("a")), "a", feedback)
    assert list(outside.iterdir()) == []  # not even the class folder was created there


def test_a_symlink_inside_the_folder_to_another_class_is_refused(tmp_path):
    feedback = tmp_path / "feedback"
    (feedback / "lower" / "b").mkdir(parents=True)
    (feedback / "lower" / "d").symlink_to(feedback / "lower" / "b", target_is_directory=True)
    with pytest.raises(FeedbackPathError):
        save_correction(png(letter_image("d")), "d", feedback)
    assert list((feedback / "lower" / "b").iterdir()) == []


def test_a_symlinked_target_name_is_refused(tmp_path):
    data = png(letter_image("M"))
    path = save_correction(data, "M", tmp_path / "feedback")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep")
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(FeedbackPathError, match="symbolic link"):
        save_correction(data, "M", tmp_path / "feedback")
    assert outside.read_bytes() == b"keep"


def test_a_class_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "upper").mkdir()
    (tmp_path / "upper" / "B").write_text("not a folder")
    with pytest.raises(FeedbackPathError, match="not a folder"):
        save_correction(png(letter_image("B")), "B", tmp_path)


def test_a_symlinked_feedback_folder_itself_is_followed(tmp_path):
    real = tmp_path / "big-disk" / "feedback"
    real.mkdir(parents=True)
    link = tmp_path / "feedback"
    link.symlink_to(real, target_is_directory=True)
    path = save_correction(png(letter_image("C")), "C", link)
    assert path.parent == real / "upper" / "C"


def test_the_feedback_folder_is_created_when_missing(tmp_path):
    path = save_correction(png(letter_image("e")), "e", tmp_path / "new" / "feedback")
    assert path.is_file() and path.parent == (tmp_path / "new" / "feedback/lower/e").resolve()


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


def test_counts_per_letter_and_total(tmp_path):
    assert count_corrections(tmp_path / "missing") == dict.fromkeys(labels.CLASSES, 0)
    save_correction(png(letter_image("A", size=96)), "A", tmp_path)
    save_correction(png(letter_image("A", size=112)), "A", tmp_path)
    save_correction(png(letter_image("a")), "a", tmp_path)
    (tmp_path / "upper" / "A" / "notes.txt").write_text("not an image")
    (tmp_path / "stray.png").write_bytes(b"")  # outside any class folder: not counted
    counts = count_corrections(tmp_path)
    assert list(counts) == list(labels.CLASSES)
    assert counts["A"] == 2 and counts["a"] == 1
    assert sum(counts.values()) == 3 == total_corrections(tmp_path)
