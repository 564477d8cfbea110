"""The architectures the project knows: one registry with each one's metadata, from which every
list of architectures is derived (the seed study's members and order, the fallback order of
the command line and the app, which models have a frozen VGG-16 base).

Importing this module is cheap (no Keras): the command line and the app read it before they
load any model. The builders live in :mod:`handwriting.models.zoo`, whose ``ARCHITECTURES``
maps the same names to them (a test checks the two agree).

Adding an architecture: a ``build_<name>`` builder in the zoo, its entry here, ``train.<name>``
and ``tune.<name>`` in params.yaml and the name in ``train.architectures`` (README, "Adding an
architecture").
"""

from __future__ import annotations

from dataclasses import dataclass

from handwriting.params import ParamsError, Train, missing_section

FAMILIES = ("cnn", "recurrent", "cnn+recurrent")


@dataclass(frozen=True)
class Architecture:
    """One architecture and what the rest of the project needs to know about it."""

    name: str
    family: str  # cnn | recurrent (reads the image's rows as a sequence) | cnn+recurrent
    frozen_base: bool  # a frozen VGG-16 base under a trained head (its features are cached)
    seed_study: bool  # one of the seed study's six architectures
    fallback_rank: int  # 1 first: the order of the tuned models tried when none is served

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"architecture {self.name}: family must be one of "
                             f"{', '.join(FAMILIES)}, got {self.family!r}")


# In the seed study's order (the README's and the app's), then ours.
REGISTRY: dict[str, Architecture] = {a.name: a for a in (
    Architecture("lenet5", "cnn", frozen_base=False, seed_study=True, fallback_rank=3),
    Architecture("vgg16", "cnn", frozen_base=True, seed_study=True, fallback_rank=7),
    Architecture("lstm", "recurrent", frozen_base=False, seed_study=True, fallback_rank=5),
    Architecture("gru", "recurrent", frozen_base=False, seed_study=True, fallback_rank=4),
    Architecture("lenet5_gru", "cnn+recurrent", frozen_base=False, seed_study=True,
                 fallback_rank=2),
    Architecture("vgg16_gru", "cnn+recurrent", frozen_base=True, seed_study=True,
                 fallback_rank=6),
    Architecture("rescnn", "cnn", frozen_base=False, seed_study=False, fallback_rank=1),
)}

# The seed study's six architectures, in its order. Any other architecture of
# train.architectures is "beyond the seed" in the reports.
SEED_ARCHITECTURES = tuple(a.name for a in REGISTRY.values() if a.seed_study)
# The order in which the command line and the app fall back to a tuned model when no champion
# is served (models/serving/ missing): the best fast ones first.
FALLBACK_ORDER = tuple(sorted(REGISTRY, key=lambda name: REGISTRY[name].fallback_rank))


def has_frozen_base(arch: str) -> bool:
    """Whether ``arch`` trains a head on a frozen VGG-16 base (whose start, pretrained or
    random, the reports flag). False for a name not in the registry."""
    entry = REGISTRY.get(arch)
    return entry is not None and entry.frozen_base


def in_study_order(architectures) -> list[str]:
    """``architectures`` with the seed's six first, in the seed's order, then the others
    sorted."""
    found = set(architectures)
    seed = [arch for arch in SEED_ARCHITECTURES if arch in found]
    return seed + sorted(found - set(seed))


def architectures(train: Train | None) -> list[str]:
    """The names in ``train.architectures`` (the models the pipeline trains, in order), each
    checked against the registry: a ParamsError names an unknown one (the typed ``train``
    section has checked that the list is not empty and names none twice)."""
    if train is None:
        raise missing_section("train")
    unknown = [name for name in train.architectures if name not in REGISTRY]
    if unknown:
        raise ParamsError(f"params.yaml: train.architectures names {', '.join(unknown)}, which "
                          f"the registry does not know; known: {', '.join(REGISTRY)} (a new "
                          "one needs a builder and an entry in handwriting.models.registry)")
    return list(train.architectures)
