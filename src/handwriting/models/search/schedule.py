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


def promoted(scores: dict[int, float], reduction: int, *, tie_se: float = 0.0,
             n_images: int = 0) -> list[int]:
    """The configurations a rung promotes: the best ``1 / reduction`` of its challengers (at
    least one; ties go to the lower id) and the untuned configuration whatever its score, in
    id order. The untuned one takes no challenger's place, so a challenger always reaches
    the top rung.

    ``tie_se`` > 0: a challenger whose accuracy is within ``tie_se`` standard errors of the
    last one promoted by rank goes on too. On ``n_images`` validation images an accuracy
    ``p`` varies by chance by about ``sqrt(p (1 - p) / n_images)``, so a rank inside that
    margin is a coin toss, not a finding (0: exactly the best ``1 / reduction``)."""
    challengers = sorted((cid for cid in scores if cid != UNTUNED),
                         key=lambda cid: (-scores[cid], cid))
    count = max(1, math.ceil(len(challengers) / reduction))
    best = challengers[:count]
    if best and tie_se > 0 and n_images > 0:
        last = scores[best[-1]]
        margin = tie_se * math.sqrt(max(last * (1 - last), 0.0) / n_images)
        best += [cid for cid in challengers[count:] if scores[cid] >= last - margin]
    return sorted(set(best) | ({UNTUNED} if UNTUNED in scores else set()))
