"""The architecture registry: every list of architectures comes from it, and the zoo builds
exactly the registered ones."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from handwriting.models.registry import (
    FALLBACK_ORDER,
    REGISTRY,
    SEED_ARCHITECTURES,
    Architecture,
    has_frozen_base,
    in_study_order,
)


def test_the_lists_derive_from_the_registry():
    assert SEED_ARCHITECTURES == ("lenet5", "vgg16", "lstm", "gru", "lenet5_gru", "vgg16_gru")
    assert FALLBACK_ORDER[0] == "rescnn" and set(FALLBACK_ORDER) == set(REGISTRY)
    ranks = [entry.fallback_rank for entry in REGISTRY.values()]
    assert len(set(ranks)) == len(ranks), "two architectures share a fallback rank"
    assert [name for name in REGISTRY if has_frozen_base(name)] == ["vgg16", "vgg16_gru"]
    assert not has_frozen_base("ensemble") and not has_frozen_base("no-such-arch")
    assert in_study_order(["rescnn", "gru", "aaa", "lenet5"]) == ["lenet5", "gru", "aaa",
                                                                   "rescnn"]


def test_the_zoo_builds_every_registered_architecture_and_no_other():
    zoo = pytest.importorskip("handwriting.models.zoo")
    assert list(zoo.ARCHITECTURES) == list(REGISTRY)
    assert all(zoo.ARCHITECTURES[name].__name__ == f"build_{name}" for name in REGISTRY)


def test_an_entry_checks_its_family():
    with pytest.raises(ValueError, match="family must be one of cnn, recurrent"):
        Architecture("mlp", "dense", frozen_base=False, seed_study=False, fallback_rank=9)


def test_train_architectures_are_checked_against_the_registry(tmp_path):
    from handwriting.models.registry import architectures
    from handwriting.params import ParamsError, load_params
    from tests.conftest import REPO, project_params

    params = project_params()
    assert architectures(params.train) == params.train.architectures
    bad = dataclasses.replace(params.train, architectures=["lenet5", "lenet6"],
                              sections={**params.train.sections, "lenet6": {}})
    with pytest.raises(ParamsError, match="train.architectures names lenet6, which the registry"):
        architectures(bad)
    with pytest.raises(ParamsError, match="has no train section"):
        architectures(None)
    # The typed section checks the list itself when params.yaml is read.
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    for names, message in ((["gru", "gru"], "train.architectures lists gru more than once"),
                           ([], "train.architectures must list at least one"),
                           ("lenet5", "'train.architectures' must be a list of strings"),
                           (["lenet5", "resnet"], "resnet is listed in architectures and has "
                                                  "no section train.resnet")):
        values["train"]["architectures"] = names
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
        with pytest.raises(ParamsError, match=message):
            load_params(tmp_path / "params.yaml")
