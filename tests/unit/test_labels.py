"""The 52 classes: fixed order, folders that survive case-insensitive file systems."""

import pytest

from handwriting import labels


def test_fixed_order_upper_then_lower():
    assert labels.NUM_CLASSES == 52
    assert "".join(labels.CLASSES[:26]) == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert "".join(labels.CLASSES[26:]) == "abcdefghijklmnopqrstuvwxyz"
    assert labels.index_of("A") == 0 and labels.index_of("a") == 26 and labels.index_of("z") == 51


def test_round_trips():
    for index, char in enumerate(labels.CLASSES):
        assert labels.char_of(index) == char
        assert labels.index_of(char) == index
        assert labels.char_of_folder(labels.folder_of(char)) == char


def test_folders_differ_case_insensitively():
    folders = labels.all_folders()
    assert labels.folder_of("A") == "upper/A" and labels.folder_of("a") == "lower/a"
    assert len({folder.lower() for folder in folders}) == 52


def test_folder_parsing_uses_the_last_two_parts():
    assert labels.char_of_folder("/data/set/lower/q") == "q"


@pytest.mark.parametrize("bad", ["1", "AB", "", " ", "é", "Ω"])
def test_labels_outside_the_52_are_errors(bad):
    with pytest.raises(labels.LabelError, match="not one of the 52"):
        labels.index_of(bad)


@pytest.mark.parametrize("bad", ["upper/a", "lower/A", "A", "digits/1", "upper/AA"])
def test_bad_folders_are_errors(bad):
    with pytest.raises(labels.LabelError, match="not a class folder"):
        labels.char_of_folder(bad)


def test_bad_indices_are_errors():
    for bad in (-1, 52):
        with pytest.raises(labels.LabelError):
            labels.char_of(bad)


def test_case_insensitive_folding():
    assert labels.case_insensitive(labels.index_of("c")) == labels.index_of("C")
    assert labels.case_insensitive(labels.index_of("C")) == labels.index_of("C")


def test_merged37_folds_only_the_fifteen_look_alike_letters():
    merged = {labels.merged37_index(i) for i in range(labels.NUM_CLASSES)}
    assert len(merged) == 37
    for char in "cijklmopsuvwxyz":
        assert labels.merged37_index(labels.index_of(char)) == labels.index_of(char.upper())
    for char in "abdefghnqrtABCO":
        assert labels.merged37_index(labels.index_of(char)) == labels.index_of(char)
