"""The feedback loop's writer: users' corrections become training images.

When a prediction is wrong, the app lets the user name the right letter and calls
:func:`save_correction`, which files the image under ``<feedback_dir>/upper/A`` ...
``<feedback_dir>/lower/z`` (the layout of :func:`handwriting.labels.folder_of`). The ``raw``
stage imports that folder on the next ``dvc repro`` (``dvc.yaml`` lists ``data/feedback`` as
its dependency), so every correction reaches the next models.

What is written is checked first and never surprising:

* the label must be one of the 52 letters;
* the image must pass the shared preprocessing (decodable, not empty, not blank, not over the
  pixel limit) and, as encoded bytes, be no larger than ``max_bytes``;
* the file is a re-encoded grayscale PNG, named after a hash of its pixels, so the same image
  saved twice under a label is stored once and no file is ever overwritten;
* it appears atomically (a temporary file in the same folder, then a hard link or rename), so a
  reader never sees half a file and an error leaves nothing behind;
* nothing is written outside ``feedback_dir``: a class folder that is a symbolic link, or that
  resolves anywhere else, is refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from handwriting import labels
from handwriting.imaging import (
    ImageError,
    PreprocessSettings,
    array_to_gray,
    decode,
    is_image_file,
    preprocess_with,
    to_uint8,
)

# An upload of one letter is a few kilobytes; 10 MB already allows an uncompressed phone photo.
DEFAULT_MAX_BYTES = 10 * 2**20
# Enough of the SHA-256 to make an accidental clash practically impossible (64 bits) while
# keeping names short; a clash with different pixels falls back to the full digest.
_NAME_DIGITS = 16
_TEMP_PREFIX = ".incoming-"

ImageInput = bytes | bytearray | np.ndarray


class FeedbackPathError(ValueError):
    """A class folder that would place a correction outside the feedback folder."""


def check_label(label: object) -> str:
    """The label as a letter class, or LabelError saying what is allowed.

    Only a single ASCII letter is accepted (``"A"`` ... ``"Z"``, ``"a"`` ... ``"z"``): no
    whitespace, digits, several letters or folder names such as ``"upper/A"``.
    """
    if not isinstance(label, str):
        raise labels.LabelError(
            f"the label must be a string holding one letter (A-Z or a-z); got "
            f"{type(label).__name__} {label!r}")
    labels.index_of(label)  # raises LabelError naming the allowed classes
    return label


def _gray_of(image: ImageInput, name: str, max_bytes: int,
             settings: PreprocessSettings) -> np.ndarray:
    """Grayscale [0, 1] of the input after the shared preprocessing has accepted it."""
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        if len(data) > max_bytes:
            raise ImageError(
                name, f"{len(data):,} bytes is over the limit of {max_bytes:,} bytes "
                f"({max_bytes / 2**20:.1f} MB)",
                "crop or downscale the image, or save it as PNG or JPEG")
        gray = decode(data, name=name, max_pixels=settings.max_pixels)
    elif isinstance(image, np.ndarray):
        gray = array_to_gray(image, name=name)
    else:
        raise TypeError(f"image must be encoded image bytes or a NumPy array; got "
                        f"{type(image).__name__}")
    # The model input is not what is stored (the raw stage preprocesses again on import), but
    # running the one preprocessing here rejects blank, speck-only and oversized images with
    # the same rules and messages as training and prediction.
    preprocess_with(settings, gray, name=name)
    return gray


def _class_folder(root: Path, char: str) -> Path:
    """``root/upper/A`` (or ``lower/a``), refused when any part leads outside ``root``.

    Checked before anything is created: ``mkdir`` through a link to another place would
    already write there.
    """
    expected = root.joinpath(*labels.folder_of(char).split("/"))
    for part in (expected.parent, expected):
        if part.is_symlink() or (part.exists() and part.resolve() != part):
            raise FeedbackPathError(
                f"{part} is a symbolic link or resolves to {part.resolve()}, not a plain folder "
                f"inside the feedback folder {root}; corrections are only written to "
                f"{root}/upper/<A-Z> and {root}/lower/<a-z>: replace it with a real folder")
        if part.exists() and not part.is_dir():
            raise FeedbackPathError(f"{part} exists but is not a folder; move it away so the "
                                    "correction can be saved")
    return expected


def _encode_png(gray: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", to_uint8(gray))
    if not ok:  # only for shapes OpenCV cannot write, which decode() never returns
        raise ImageError("<correction>", "could not be encoded as PNG", "try another image")
    return encoded.tobytes()


def _same_pixels(path: Path, pixels: np.ndarray) -> bool:
    existing = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return existing is not None and existing.shape == pixels.shape and \
        bool(np.array_equal(existing, pixels))


def _publish(folder: Path, target: Path, png: bytes) -> Path:
    """Write ``png`` to ``target`` atomically without replacing an existing file."""
    handle, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=folder)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(png)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            # A hard link fails when the name exists, so a file is never overwritten, and a
            # concurrent save of the same image simply finds it there.
            os.link(temp, target)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: rename, after checking
            if not target.exists():
                os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def save_correction(image: ImageInput, label: str, feedback_dir: str | os.PathLike, *,
                    max_bytes: int = DEFAULT_MAX_BYTES,
                    settings: PreprocessSettings | None = None,
                    name: str | None = None) -> Path:
    """Save a user's correction: ``image`` is the letter ``label``. Returns the file's path.

    Args:
        image: the encoded image as uploaded or drawn (PNG, JPEG, ... bytes) or an image
            array (grayscale, RGB or RGBA, as a drawing canvas returns it).
        label: the right letter, one of the 52 classes.
        feedback_dir: the feedback folder (``data/feedback``); created if missing.
        max_bytes: the largest encoded image accepted.
        settings: the shared preprocessing's settings (``load_params().preprocessing``);
            default: the defaults.
        name: how the image is called in error messages (such as the uploaded file's name).

    The image is stored as a grayscale PNG at ``<feedback_dir>/<upper|lower>/<letter>/<hash>.png``.
    Saving the same pixels under the same letter again returns the existing file.

    Raises:
        handwriting.labels.LabelError: the label is not a single letter A-Z or a-z.
        handwriting.imaging.ImageError: the image is empty, corrupt, blank, over the pixel
            limit or over ``max_bytes``. Nothing is written.
        FeedbackPathError: the class folder is a symbolic link or not a folder.
    """
    char = check_label(label)
    settings = settings or PreprocessSettings()
    gray = _gray_of(image, name or "the corrected image", max_bytes, settings)
    pixels = to_uint8(gray)
    png = _encode_png(gray)
    digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()

    root = Path(feedback_dir)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    folder = _class_folder(root, char)
    folder.mkdir(parents=True, exist_ok=True)
    _class_folder(root, char)  # again: a link could have appeared while the folder was made

    for stem in (digest[:_NAME_DIGITS], digest):
        target = folder / f"{stem}.png"
        if target.is_symlink():
            raise FeedbackPathError(f"{target} is a symbolic link; remove it so the "
                                    "correction can be saved")
        if target.exists():
            if _same_pixels(target, pixels):
                return target
            continue  # a hash-prefix clash with another image: use the full digest
        return _publish(folder, target, png)
    raise FileExistsError(f"{folder}: {digest}.png exists and holds another image; move it "
                          "away and save again")


def count_corrections(feedback_dir: str | os.PathLike) -> dict[str, int]:
    """Saved corrections per letter, for all 52 letters in class order (0 when none).

    Counts the image files directly inside each class folder, as the ``raw`` stage would find
    them; a missing feedback folder counts as empty.
    """
    root = Path(feedback_dir)
    counts = {}
    for char in labels.CLASSES:
        folder = root.joinpath(*labels.folder_of(char).split("/"))
        counts[char] = sum(1 for path in folder.iterdir()
                           if path.is_file() and is_image_file(path)) if folder.is_dir() else 0
    return counts


def total_corrections(feedback_dir: str | os.PathLike) -> int:
    """The number of saved corrections, all letters together."""
    return sum(count_corrections(feedback_dir).values())
