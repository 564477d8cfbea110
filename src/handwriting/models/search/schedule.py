"""The rung schedule of successive halving, and which configurations a rung promotes
(pure functions: no Optuna, no Keras)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from handwriting.params import Tune

UNTUNED = 0  # the configuration id of the untuned settings


@dataclass(frozen=True)
class Rung:
    """One budget of the schedule: a share of the training split and a number of epochs."""

    index: int
    share: float
    epochs: int
    top: bool


def rung_schedule(settings: Tune, epochs: int, *, subsample: bool = True) -> list[Rung]:
    """The budgets, lowest first: rung ``r`` trains on a share ``s = reduction ** -(rungs-1-r)``
    of the data for ``sqrt(s)`` of ``epochs`` (at least 1); the top rung is all the data,
    ``epochs``. Shrinking the data and the epochs alike keeps enough steps at a small budget
    for the learning rate, its schedule and the batch size to show their effect (a lowest
    rung of one epoch on a ninth of the data scored every configuration near chance).

    ``subsample`` False (a frozen VGG-16 base's head, trained on cached features): every rung
    is all the data, and only the epochs shrink (on a share of the rows, the head of a random
    base scored every configuration near chance)."""
    rungs = []
    for index in range(settings.rungs):
        shrink = float(settings.reduction) ** -(settings.rungs - 1 - index)
        rungs.append(Rung(index, shrink if subsample else 1.0,
                          max(1, round(epochs * math.sqrt(shrink))),
                          top=index == settings.rungs - 1))
    return rungs


def promoted(scores: dict[int, float], reduction: int) -> list[int]:
    """The configurations a rung promotes: the best ``1 / reduction`` of its challengers (at
    least one; ties go to the lower id) and the untuned configuration whatever its score, in
    id order. The untuned one takes no challenger's place, so a challenger always reaches
    the top rung."""
    challengers = sorted((cid for cid in scores if cid != UNTUNED),
                         key=lambda cid: (-scores[cid], cid))
    best = challengers[:max(1, math.ceil(len(challengers) / reduction))]
    return sorted(set(best) | ({UNTUNED} if UNTUNED in scores else set()))

