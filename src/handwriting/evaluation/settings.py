"""The ``evaluate`` section of params.yaml, typed: what the evaluate stage, export's ensemble
and the app's ensemble read. Every key is required (the defaults live in params.yaml only);
a bad value is a :class:`~handwriting.params.ParamsError` naming the key, the value and the
valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from handwriting.params import ParamsError

KINDS = ("soft", "hard")
WEIGHTINGS = ("val_accuracy", "none")


@dataclass(frozen=True)
class EvaluateSettings:
    """``evaluate.ensemble`` (soft: weighted average of probabilities | hard: majority vote),
    ``evaluate.ensemble_weighting`` (val_accuracy | none), ``evaluate.latency_calls``
    (single-image calls timed per model), ``evaluate.explain_samples`` (test images per
    explanation grid) and ``evaluate.crossdata`` (external dataset folders)."""

    ensemble: str
    ensemble_weighting: str
    latency_calls: int
    explain_samples: int
    crossdata: tuple[str, ...]

    def __post_init__(self) -> None:
        def fail(key: str, expected: str) -> ParamsError:
            return ParamsError(f"params.yaml: evaluate.{key} must be {expected}, "
                               f"got {getattr(self, key)!r}")

        if self.ensemble not in KINDS:
            raise fail("ensemble", f"one of {', '.join(KINDS)}")
        if self.ensemble_weighting not in WEIGHTINGS:
            raise fail("ensemble_weighting", f"one of {', '.join(WEIGHTINGS)}")
        for key in ("latency_calls", "explain_samples"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(key, "a whole number, 1 or more")
        if not all(isinstance(folder, str) and folder for folder in self.crossdata):
            raise fail("crossdata", "a list of folder paths")

    @classmethod
    def from_section(cls, section: Any) -> EvaluateSettings:
        """The settings of params.yaml's ``evaluate`` mapping; a missing or unknown key is
        named."""
        if not isinstance(section, dict):
            raise ParamsError("params.yaml: the evaluate section is missing or not a mapping; "
                              "copy it from the project's params.yaml")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in section]
        unknown = sorted(set(section) - set(names))
        if missing or unknown:
            raise ParamsError("params.yaml: " + "; ".join(
                part for part in (
                    missing and f"missing key(s) {', '.join('evaluate.' + k for k in missing)}",
                    unknown and f"unknown key(s) {', '.join('evaluate.' + k for k in unknown)}"
                                f" (known: {', '.join(names)})") if part))
        crossdata = section["crossdata"] or []
        if not isinstance(crossdata, list):
            raise ParamsError("params.yaml: evaluate.crossdata must be a list of folder paths, "
                              f"got {crossdata!r}")
        return cls(**{**{name: section[name] for name in names}, "crossdata": tuple(crossdata)})
