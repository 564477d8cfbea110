"""The 52 letter classes: index <-> character <-> folder.

The order is fixed (A-Z then a-z) so that a class index means the same letter in every array,
model and report. On disk a class lives in ``upper/A`` or ``lower/a``: case-insensitive file
systems (macOS, Windows) cannot hold both ``A/`` and ``a/`` side by side.
"""

from __future__ import annotations

import string
from pathlib import PurePath

CLASSES: tuple[str, ...] = tuple(string.ascii_uppercase + string.ascii_lowercase)
NUM_CLASSES = len(CLASSES)
_INDEX = {char: index for index, char in enumerate(CLASSES)}


class LabelError(ValueError):
    """A label that is not one of the 52 letters."""


def _check(char: str) -> str:
    if char not in _INDEX:
        raise LabelError(
            f"{char!r} is not one of the 52 letter classes (A-Z, a-z); "
            "use a single ASCII letter"
        )
    return char


def index_of(char: str) -> int:
    """Class index (0-51) of a letter: A=0 ... Z=25, a=26 ... z=51."""
    return _INDEX[_check(char)]


def char_of(index: int) -> str:
    """The letter of a class index (0-51)."""
    if not 0 <= int(index) < NUM_CLASSES:
        raise LabelError(f"class index {index} is outside 0..{NUM_CLASSES - 1}")
    return CLASSES[int(index)]


def folder_of(char: str) -> str:
    """Relative folder of a letter's images: ``upper/A`` or ``lower/a``."""
    char = _check(char)
    return f"{'upper' if char.isupper() else 'lower'}/{char}"


def char_of_folder(folder: str | PurePath) -> str:
    """The letter stored in a class folder such as ``upper/A`` (only the last two parts count).

    Raises LabelError when the folder is not ``upper/<A-Z>`` or ``lower/<a-z>``.
    """
    parts = PurePath(folder).parts[-2:]
    if len(parts) == 2:
        case, char = parts
        expected = "upper" if char.isupper() else "lower"
        if char in _INDEX and case == expected:
            return char
    raise LabelError(
        f"folder {str(folder)!r} is not a class folder; expected upper/A ... upper/Z "
        "or lower/a ... lower/z"
    )


def all_folders() -> list[str]:
    """The 52 class folders in class order."""
    return [folder_of(char) for char in CLASSES]


def case_insensitive(index: int) -> int:
    """Index of the letter folded to upper case, for case-insensitive accuracy."""
    return index_of(char_of(index).upper())


# The letters whose capital and small forms look alike (EMNIST Balanced merges them into one
# class each, leaving 37 classes): a prediction of either case counts as right.
MERGED_LETTERS = "cijklmopsuvwxyz"


def merged37_index(index: int) -> int:
    """Index of the letter in the 37-class view: look-alike small letters fold to their capital."""
    char = char_of(index)
    return index_of(char.upper()) if char.lower() in MERGED_LETTERS else int(index)
