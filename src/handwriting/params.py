"""A typed view of params.yaml: one small dataclass per section.

Unknown or missing keys are errors that name the key, so a typo in params.yaml (or in a
``dvc exp run -S`` override) fails loudly instead of silently using a default.
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


@dataclass(frozen=True)
class Export:
    registered_model: str
    compute_budget_mflops: float
    unsure_keep_correct: float
    latency_calls: int
    throughput_batch: int


@dataclass(frozen=True)
class Params:
    base: Base
    preprocess: Preprocess
    raw: Raw = field(default=None)  # type: ignore[assignment]
    balance: Balance = field(default=None)  # type: ignore[assignment]
    augment: Augment = field(default=None)  # type: ignore[assignment]
    split: Split = field(default=None)  # type: ignore[assignment]
    # Per-architecture training settings: the train stage validates them against the builders.
    train: dict = field(default=None)  # type: ignore[arg-type]
    # Search settings and per-architecture spaces: the tune stage validates them.
    tune: dict = field(default=None)  # type: ignore[arg-type]
    evaluate: dict = field(default=None)  # type: ignore[arg-type]
    export: Export = field(default=None)  # type: ignore[assignment]

    @property
    def preprocessing(self) -> PreprocessSettings:
        """The settings of the shared preprocessing."""
        return PreprocessSettings(image_size=self.base.image_size, margin=self.preprocess.margin,
                                  max_pixels=self.preprocess.max_pixels)


def _build(cls: type, values: Any, where: str) -> Any:
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
            raise ParamsError(f"params.yaml: missing key '{key}'")
        value = values[name]
        kind = spec.type if isinstance(spec.type, type) else _TYPES.get(spec.type)
        if dataclasses.is_dataclass(kind):
            built[name] = _build(kind, value, key)
        else:
            # Annotations are strings here (from __future__ import annotations).
            built[name] = _check_scalar(value, cast(str, spec.type), key)
    return cls(**built)


_TYPES: dict[str, type] = {
    "Base": Base, "Preprocess": Preprocess, "Synthetic": Synthetic, "Raw": Raw,
    "Balance": Balance, "Augment": Augment, "Split": Split, "Export": Export,
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
    params = _build(Params, values or {}, "")
    if not 8 <= params.base.image_size <= 512:
        raise ParamsError(f"params.yaml: base.image_size must be between 8 and 512, "
                          f"got {params.base.image_size}")
    if params.export is not None:
        if not params.export.registered_model.strip():
            raise ParamsError("params.yaml: export.registered_model must name the registered "
                              "model, e.g. handwriting-letters")
        if params.export.compute_budget_mflops < 0:
            raise ParamsError("params.yaml: export.compute_budget_mflops must be 0 (no limit) "
                              f"or more, got {params.export.compute_budget_mflops}")
        if not 0 < params.export.unsure_keep_correct <= 1:
            raise ParamsError("params.yaml: export.unsure_keep_correct must be in (0, 1] (1: "
                              f"never unsure), got {params.export.unsure_keep_correct}")
        for key in ("latency_calls", "throughput_batch"):
            if getattr(params.export, key) < 1:
                raise ParamsError(f"params.yaml: export.{key} must be at least 1, got "
                                  f"{getattr(params.export, key)}")
    return params
