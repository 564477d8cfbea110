"""A typed view of params.yaml: one small frozen dataclass per section, every one built by
:func:`build_section` (the keys, each value's type, then the record's own checks).

Unknown or missing keys are errors that name the key, so a typo in params.yaml (or in a
``dvc exp run -S`` override) fails loudly instead of silently using a default; every error is
a :class:`ParamsError`, which a stage's ``main()`` turns into a one-line exit. Each function
is passed the section it needs (``arch_settings(params.train, arch)``). A section whose keys
are partly open (``train.<arch>``, ``tune.<arch>``) keeps those in one ``rest`` field, which
the code that owns them checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from handwriting.imaging import PreprocessSettings


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or holds an unknown or invalid value."""


@dataclass(frozen=True)
class Base:
    seed: int
    image_size: int
    deterministic: bool

    def __post_init__(self) -> None:
        if not 8 <= self.image_size <= 512:
            raise ParamsError(f"image_size must be between 8 and 512, got {self.image_size}")


@dataclass(frozen=True)
class Preprocess:
    margin: float
    max_pixels: int


@dataclass(frozen=True)
class Synthetic:
    per_class: int
    per_class_overrides: dict[str, int]
    # Every other key of raw.synthetic: how the generator draws. The generator owns these
    # settings (handwriting.synth.DrawSettings: their names, defaults and checks); the raw
    # stage builds them, so a new one is a field there and a key in params.yaml.
    drawing: dict = field(default_factory=dict, metadata={"rest": True})


@dataclass(frozen=True)
class Raw:
    source: str
    folder: str
    synthetic: Synthetic


@dataclass(frozen=True)
class Balance:
    per_class: int | None


@dataclass(frozen=True)
class Augment:
    copies: int
    rotation_degrees: float
    translation: float
    scale: float
    shear: float
    elastic_alpha: float
    thickness_probability: float
    noise_std: float


@dataclass(frozen=True)
class Split:
    train: float
    val: float
    test: float


def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


# Valid values of the searched and evaluated settings (the records below check them).
SAMPLERS = ("random", "grid", "tpe")  # tune.sampler
ENSEMBLE_KINDS = ("soft", "hard")  # evaluate.ensemble
ENSEMBLE_WEIGHTINGS = ("val_accuracy", "none")  # evaluate.ensemble_weighting


@dataclass(frozen=True)
class Train:
    """``train``: which architectures the pipeline trains, in order (read them with
    :func:`handwriting.models.registry.architectures`, which checks each against the
    registry), the fit settings every one shares (``defaults``) and one section per
    architecture (``train.<arch>``, in ``sections``): its fit settings and its builder's
    hyperparameters, which :func:`handwriting.models.training.arch_settings` splits and
    checks. (The registry is not imported here: every stage reads params.yaml, and only the
    model stages depend on the models package.)"""

    architectures: list[str]
    defaults: dict
    sections: dict = field(default_factory=dict, metadata={"rest": True})

    def __post_init__(self) -> None:
        if not self.architectures:
            raise ParamsError("architectures must list at least one architecture")
        repeated = sorted({name for name in self.architectures
                           if self.architectures.count(name) > 1})
        if repeated:
            raise ParamsError(f"architectures lists {', '.join(repeated)} more than once")
        missing = [arch for arch in self.architectures
                   if not isinstance(self.sections.get(arch), dict)]
        if missing:
            raise ParamsError(f"{missing[0]} is listed in architectures and has no section "
                              f"train.{missing[0]}; add one (see the other architectures) or "
                              "remove it from the list")


@dataclass(frozen=True)
class Tune:
    """``tune``: the sampler, the rung schedule and where the trials are kept, and one search
    space per architecture (``tune.<arch>``, in ``spaces``; checked by
    :func:`handwriting.models.search.tune_settings`)."""

    sampler: str
    n_trials: int
    reduction: int
    rungs: int
    patience: int
    storage: str | None
    workers: int
    tie_se: float
    spaces: dict = field(default_factory=dict, metadata={"rest": True})

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise invalid(self, "sampler", f"one of {', '.join(SAMPLERS)}")
        for key, least in (("n_trials", 1), ("reduction", 2), ("rungs", 1), ("patience", 1),
                           ("workers", 1)):
            if not _whole(getattr(self, key), least):
                raise invalid(self, key, f"a whole number, {least} or more")
        if not 0 <= self.tie_se <= 10:  # also refuses NaN
            raise invalid(self, "tie_se", "a number from 0 (promote exactly the best "
                          "1/reduction) to 10 standard errors")
        if self.storage is not None and (not isinstance(self.storage, str)
                                         or "://" not in self.storage):
            raise invalid(self, "storage", "null (in memory) or an Optuna RDB URL such as "
                          "postgresql://user:password@host/db or sqlite:///tune.db")


# The keys of ``tune`` that set the search itself (every other key is a space).
SEARCH_SETTINGS = tuple(f.name for f in dataclasses.fields(Tune) if not f.metadata.get("rest"))


@dataclass(frozen=True)
class Evaluate:
    """``evaluate``: the ensemble (soft: weighted average of probabilities | hard: majority
    vote) and its weighting (val_accuracy | none), single-image calls timed per model, test
    images per explanation grid, and the external dataset folders scored (``crossdata``)."""

    ensemble: str
    ensemble_weighting: str
    latency_calls: int
    explain_samples: int
    crossdata: list[str]

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLE_KINDS:
            raise invalid(self, "ensemble", f"one of {', '.join(ENSEMBLE_KINDS)}")
        if self.ensemble_weighting not in ENSEMBLE_WEIGHTINGS:
            raise invalid(self, "ensemble_weighting", f"one of {', '.join(ENSEMBLE_WEIGHTINGS)}")
        for key in ("latency_calls", "explain_samples"):
            if not _whole(getattr(self, key), 1):
                raise invalid(self, key, "a whole number, 1 or more")
        if not all(self.crossdata):
            raise invalid(self, "crossdata", "a list of folder paths")


@dataclass(frozen=True)
class Export:
    registered_model: str
    compute_budget_mflops: float
    unsure_keep_correct: float
    latency_calls: int
    throughput_batch: int

    def __post_init__(self) -> None:
        if not self.registered_model.strip():
            raise ParamsError("registered_model must name the registered model, e.g. "
                              "handwriting-letters")
        if self.compute_budget_mflops < 0:
            raise ParamsError("compute_budget_mflops must be 0 (no limit) or more, got "
                              f"{self.compute_budget_mflops}")
        if not 0 < self.unsure_keep_correct <= 1:
            raise ParamsError("unsure_keep_correct must be in (0, 1] (1: never unsure), got "
                              f"{self.unsure_keep_correct}")
        for key in ("latency_calls", "throughput_batch"):
            if getattr(self, key) < 1:
                raise ParamsError(f"{key} must be at least 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class Params:
    base: Base
    preprocess: Preprocess
    raw: Raw = field(default=None)  # type: ignore[assignment]
    balance: Balance = field(default=None)  # type: ignore[assignment]
    augment: Augment = field(default=None)  # type: ignore[assignment]
    split: Split = field(default=None)  # type: ignore[assignment]
    train: Train = field(default=None)  # type: ignore[assignment]
    tune: Tune = field(default=None)  # type: ignore[assignment]
    evaluate: Evaluate = field(default=None)  # type: ignore[assignment]
    export: Export = field(default=None)  # type: ignore[assignment]

    @property
    def preprocessing(self) -> PreprocessSettings:
        """The settings of the shared preprocessing."""
        return PreprocessSettings(image_size=self.base.image_size, margin=self.preprocess.margin,
                                  max_pixels=self.preprocess.max_pixels)

    def require(self, *sections: str) -> None:
        """A ParamsError naming every one of ``sections`` that params.yaml lacks (the loader
        lets a section no stage of the caller needs be absent)."""
        missing = [name for name in sections if getattr(self, name) is None]
        if missing:
            raise missing_section(*missing)


def missing_section(*names: str) -> ParamsError:
    """The error for sections ``names`` absent from params.yaml, with the fix."""
    return ParamsError(f"params.yaml has no {' or '.join(names)} section; copy it from the "
                       "project's params.yaml")


def invalid(record: Any, key: str, expected: str) -> ParamsError:
    """The error of a record's own check: its field ``key`` is not ``expected``
    (:func:`build_section` prefixes where in params.yaml the record is)."""
    return ParamsError(f"{key} must be {expected}, got {getattr(record, key)!r}")


def build_section(cls: type, values: Any, where: str, missing_hint: str = "") -> Any:
    """``cls`` (a dataclass) built from the mapping ``values`` found at ``where`` in
    params.yaml: every field's key required unless its default is None, no unknown key
    (except into a field marked ``rest``, which takes every key no other field names), each
    value checked against the field's annotation, nested dataclasses built alike; then the
    record's own ``__post_init__`` checks. Every error is a :class:`ParamsError` that names
    the key (``missing_hint`` follows a missing key's)."""
    if not isinstance(values, dict):
        raise ParamsError(f"params.yaml: '{where or 'the file'}' must be a mapping, "
                          f"got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    rest = next((f.name for f in fields.values() if f.metadata.get("rest")), None)
    if rest is not None:  # the keys no other field names, passed on as one mapping
        values = {**{k: v for k, v in values.items() if k in fields and k != rest},
                  rest: {k: v for k, v in values.items() if k not in fields}}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        names = ", ".join(f"{where}.{key}" if where else key for key in unknown)
        raise ParamsError(f"params.yaml: unknown key(s) {names}; known keys here: "
                          f"{', '.join(fields)}")
    built: dict[str, Any] = {}
    for name, spec in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in values:
            if spec.default is None:
                built[name] = None
                continue
            raise ParamsError(f"params.yaml: missing key '{key}'{missing_hint}")
        value = values[name]
        kind = spec.type if isinstance(spec.type, type) else _TYPES.get(spec.type)
        if dataclasses.is_dataclass(kind):
            built[name] = build_section(kind, value, key)
        else:
            # Annotations are strings here (from __future__ import annotations).
            built[name] = _check_scalar(value, cast(str, spec.type), key)
    try:
        return cls(**built)
    except ParamsError as error:  # the record's own check: say where it is
        raise ParamsError(f"params.yaml: {where + '.' if where else ''}{error}") from None


_TYPES: dict[str, type] = {
    "Base": Base, "Preprocess": Preprocess, "Synthetic": Synthetic, "Raw": Raw,
    "Balance": Balance, "Augment": Augment, "Split": Split, "Train": Train, "Tune": Tune,
    "Evaluate": Evaluate, "Export": Export,
}


def _check_scalar(value: Any, annotation: str, key: str) -> Any:
    def fail(expected: str) -> ParamsError:
        return ParamsError(f"params.yaml: '{key}' must be {expected}, got {value!r}")

    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
    elif annotation == "int | None":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise fail("an integer or null")
    elif annotation == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
    elif annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        value = float(value)
    elif annotation == "str":
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise fail("a string")
    elif annotation == "list[str]":
        value = [] if value is None else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail("a list of strings")
    elif annotation == "list[int]":
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise fail("a list of integers")
    elif annotation == "dict":
        if not isinstance(value, dict):
            raise fail("a mapping")
    elif annotation == "dict[str, int]":
        value = value or {}
        if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
            raise fail("a mapping of letters to integers")
    return value


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Sections a stage does not need may be absent."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root or "
                          "pass --params") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return build_section(Params, values or {}, "")
