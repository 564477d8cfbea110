"""The champion: the one rule that names the model we serve, used by evaluate (which names
it in the report) and export (which serves and registers it), and by the registry's alias.

The candidates are the tuned models and, with a soft vote, their ensemble. The champion is the
candidate with the best macro F1 on the **validation** split (the test split stays for the
figures) among those whose compute cost, counted from the model graph
(:mod:`handwriting.models.cost`), is within ``export.compute_budget_mflops`` (million
multiply-adds per image; 0: no limit). A count does not depend on the machine or its load, so
the same models always give the same champion. When no candidate fits the budget the cheapest
one is served, with a warning: a budget is never dropped silently. Ties go to the cheaper
model, then to the alphabetically first name.

The champion answers "not sure" below a confidence threshold chosen on the validation split
(:func:`unsure_threshold`, ``export.unsure_keep_correct``); evaluate reports what it does on
the test split and the real-handwriting sets (:func:`unsure_effect`), export stores it in the
serving folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class Candidate:
    """A model that may be served: its validation macro F1 and its cost per image."""

    val_f1_macro: float
    mflops: float


@dataclass(frozen=True)
class Choice:
    """The outcome of :func:`choose`."""

    champion: str
    budget_mflops: float
    within_budget: frozenset[str]  # the candidates the budget allowed
    fallback: bool  # True when none fitted and the cheapest was taken

    def describe(self, candidates: dict[str, Candidate]) -> str:
        """One line for the stage's log and the report."""
        best = candidates[self.champion]
        budget = f"{self.budget_mflops:g} M multiply-adds" if self.budget_mflops else "none"
        line = (f"{self.champion} (validation F1 {best.val_f1_macro:.4f}, {best.mflops:.2f} M "
                f"multiply-adds per image; compute budget {budget})")
        if self.fallback:
            line += (" -- WARNING: no candidate fits the compute budget "
                     "(export.compute_budget_mflops); the cheapest one is served")
        return line

    def as_dict(self, candidates: dict[str, Candidate]) -> dict[str, Any]:
        """The choice and every candidate's figures, for a metrics file."""
        return {"champion": self.champion, "compute_budget_mflops": self.budget_mflops,
                "fallback_to_cheapest": self.fallback,
                "candidates": {key: {"val_f1_macro": round(c.val_f1_macro, 6),
                                     "mflops": round(c.mflops, 3),
                                     "within_budget": key in self.within_budget}
                               for key, c in sorted(candidates.items())}}


def fits(mflops: float, budget_mflops: float) -> bool:
    """Whether a model costing ``mflops`` fits ``budget_mflops`` (0: no limit)."""
    return budget_mflops == 0 or mflops <= budget_mflops


def choose(candidates: dict[str, Candidate], budget_mflops: float) -> Choice:
    """The champion among ``candidates`` (see the module's docstring for the rule)."""
    if not candidates:
        raise ValueError("no candidate models to choose a champion from")
    if budget_mflops < 0:
        raise ValueError(f"the compute budget must be 0 (no limit) or more, got {budget_mflops}")
    eligible = {key for key, c in candidates.items() if fits(c.mflops, budget_mflops)}
    if eligible:
        champion = min(eligible, key=lambda key: (-candidates[key].val_f1_macro,
                                                  candidates[key].mflops, key))
    else:
        champion = min(candidates, key=lambda key: (candidates[key].mflops, key))
    return Choice(champion=champion, budget_mflops=budget_mflops,
                  within_budget=frozenset(eligible), fallback=not eligible)


def should_move_alias(score: float, previous_score: float | None,
                      previous_mflops: float | None, budget_mflops: float = 0.0) -> bool:
    """Whether a newly registered champion with validation F1 ``score`` takes the registry's
    ``champion`` alias: when there is no current one (or it has no score), when the current one
    costs more than the budget now in force, or when the new one is at least as good."""
    if previous_score is None:
        return True
    if previous_mflops is not None and not fits(previous_mflops, budget_mflops):
        return True
    return score >= previous_score


def unsure_threshold(y_true: np.ndarray, probabilities: np.ndarray,
                     keep_correct: float) -> float:
    """The confidence below which the champion answers "not sure": the top-1 probability that
    keeps ``keep_correct`` of its correct answers (on the validation split); 0.0 when
    ``keep_correct`` is 1 or nothing is correct."""
    top = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    if keep_correct >= 1 or not correct.any():
        return 0.0
    return round(float(np.quantile(top[correct], 1.0 - keep_correct, method="lower")), 6)


def unsure_effect(y_true: np.ndarray, probabilities: np.ndarray,
                  threshold: float) -> dict[str, float]:
    """What the threshold does on a labelled set: the share of answers it turns into "not
    sure", the accuracy of the answers it keeps, and the accuracy without it."""
    top = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    kept = top >= threshold
    return {"unsure_share": round(float(1.0 - kept.mean()), 6) if len(top) else 0.0,
            "accuracy_answered": round(float(correct[kept].mean()), 6) if kept.any() else 0.0,
            "accuracy_all": round(float(correct.mean()), 6) if len(top) else 0.0}
