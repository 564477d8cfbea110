"""The one string form of a model of the pipeline, and its parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from handwriting.models.reference import ModelRef, tuned_names


def test_a_reference_round_trips_through_its_name():
    for name in ("lenet5-tuned", "lenet5_gru-untuned", "my-arch-tuned"):
        assert str(ModelRef.parse(name)) == name
    assert ModelRef.parse("my-arch-tuned") == ModelRef("my-arch", "tuned")
    assert ModelRef.tuned("gru").path(Path("models")) == Path("models/gru/tuned.keras")
    assert tuned_names(["lenet5", "gru"]) == ["lenet5-tuned", "gru-tuned"]


@pytest.mark.parametrize("name", ["lenet5", "lenet5-best", "-tuned", "ensemble", ""])
def test_a_bad_name_says_what_is_expected(name):
    with pytest.raises(ValueError, match="expected <arch>-<variant>"):
        ModelRef.parse(name)


def test_a_reference_checks_its_parts():
    with pytest.raises(ValueError, match="variant must be one of untuned, tuned"):
        ModelRef("lenet5", "best")
    with pytest.raises(ValueError, match="not an architecture name"):
        ModelRef("a/b", "tuned")
