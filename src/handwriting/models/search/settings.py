"""The ``tune`` params of a search: its settings, the space of each architecture, the
samplers that draw from it, and the lowest rung's configurations."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from handwriting.models.training import arch_settings
from handwriting.params import SEARCH_SETTINGS, Params, ParamsError, Train, Tune, missing_section


class SearchError(RuntimeError):
    """The search found nothing: every trial failed."""


Space = dict[str, Any]  # per key: a list of choices, or a range {low, high, log, step}
RANGE_KEYS = {"low", "high", "log", "step"}


def tune_settings(tune: Tune | None, arch: str) -> tuple[Tune, Space]:
    """(search settings, search space of ``arch``) from the ``tune`` params.

    A key of the space is a list of choices, or a range ``{low: 0.0003, high: 0.01, log:
    true}`` (``log``: drawn on a log scale; ``step``: only multiples of it above ``low``;
    whole numbers for ``low``, ``high`` and ``step`` draw whole numbers). The grid sampler
    needs lists."""
    if tune is None:
        raise missing_section("tune")
    settings, space = tune, tune.spaces.get(arch)
    if not isinstance(space, dict) or not space:
        raise ParamsError(f"params.yaml has no search space tune.{arch}; add one, e.g. "
                          "{learning_rate: {low: 0.0003, high: 0.01, log: true}, "
                          "batch_size: [32, 64]}")
    for key, spec in space.items():
        _check_key(f"tune.{arch}.{key}", spec)
        if settings.sampler == "grid" and not isinstance(spec, list):
            raise ParamsError(f"tune.{arch}.{key} is a range, and the grid sampler needs a "
                              "list of choices: write the points as a list, or set "
                              "tune.sampler to tpe or random")
    if "engine" in space:
        raise ParamsError(f"tune.{arch}.engine: the engine changes the speed, not the model, "
                          f"so it is no hyperparameter; remove it and set train.{arch}.engine")
    return settings, space


def _check_key(where: str, spec: Any) -> None:
    """A ParamsError naming ``where`` unless ``spec`` is a non-empty list or a valid range."""
    if isinstance(spec, list):
        if not spec:
            raise ParamsError(f"{where} must be a non-empty list of choices or a range "
                              "{low: ..., high: ..., log: true|false}")
        return
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) \
            or not set(spec) <= RANGE_KEYS:
        raise ParamsError(f"{where} must be a list of choices or a range {{low: ..., high: "
                          f"..., log: true|false, step: ...}}, got {spec!r}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers) \
            or not low < high:
        raise ParamsError(f"{where}: low and high must be numbers with low < high, got "
                          f"low={low!r}, high={high!r}")
    if not isinstance(log, bool):
        raise ParamsError(f"{where}.log must be true or false, got {log!r}")
    if log and (low <= 0 or step is not None):
        raise ParamsError(f"{where}: a log-scale range needs low > 0 and no step")
    if step is not None and not step > 0:
        raise ParamsError(f"{where}.step must be above 0, got {step!r}")


def suggest(trial, key: str, spec: Any) -> Any:
    """Draw ``key`` from its choices or range with Optuna's ``trial``."""
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if all(isinstance(v, int) for v in (low, high, step if step is not None else 1)):
        return trial.suggest_int(key, low, high, step=step or 1, log=log)
    return trial.suggest_float(key, low, high, step=step, log=log)


def in_space(value: Any, spec: Any) -> bool:
    """Whether ``value`` is one of the choices or inside the range of ``spec``."""
    if isinstance(spec, list):
        return value in spec
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and spec["low"] <= value <= spec["high"]



def untuned_configuration(train: Train, arch: str, space: Space) -> dict[str, Any]:
    """The untuned settings of ``arch`` for the keys of its search space."""
    fit, hparams = arch_settings(train, arch)
    untuned = {**vars(fit), **hparams}
    missing = [key for key in space if key not in untuned]
    if missing:
        raise ParamsError(f"tune.{arch} searches {', '.join(missing)}, which train.{arch} does "
                          "not set (and is not a fit setting); add it to train." + arch)
    return {key: untuned[key] for key in space}


def first_configurations(settings: Tune, space: Space,
                         untuned: dict[str, Any], seed: int) -> list[dict[str, Any] | None]:
    """The lowest rung's configurations: the untuned one, then ``n_trials - 1`` drawn by the
    seeded sampler (random: distinct when the space allows; grid: distinct grid points in
    the grid sampler's order). ``None`` marks a TPE slot, drawn by whichever worker takes it
    (TPE learns from the trials finished by then)."""
    import optuna

    wanted = settings.n_trials - 1
    if settings.sampler == "tpe":
        return [untuned, *[None] * wanted]
    if all(isinstance(spec, list) for spec in space.values()):
        size = math.prod(len(choices) for choices in space.values())
        wanted = min(wanted, size - untuned_in_space(untuned, space))
    sampler = (optuna.samplers.GridSampler(space, seed=seed) if settings.sampler == "grid"
               else optuna.samplers.RandomSampler(seed=seed))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    draft = optuna.create_study(sampler=sampler)
    configurations: list[dict[str, Any] | None] = [untuned]

    def draw(trial) -> float:
        drawn = {key: suggest(trial, key, spec) for key, spec in space.items()}
        if drawn not in configurations:
            configurations.append(drawn)
        if len(configurations) > wanted:
            trial.study.stop()
        return 0.0

    if wanted > 0:
        draft.optimize(draw, n_trials=20 * (wanted + 1))
    return configurations


def untuned_in_space(untuned: dict[str, Any], space: Space) -> bool:
    """Whether the untuned settings are a point of the space."""
    return all(in_space(untuned[key], spec) for key, spec in space.items())


def fingerprint(settings: Tune, space: Space, params: Params, arch: str,
                arrays: list[np.ndarray]) -> str:
    """A short hash of everything a trial's result depends on: a study kept in a persistent
    storage is only reused for the same settings, space, recipe and data."""
    fit, hparams = arch_settings(params.train, arch)
    search = {key: getattr(settings, key) for key in SEARCH_SETTINGS}
    digest = hashlib.sha256(json.dumps(
        [search | {"storage": None, "workers": None}, space, vars(fit), hparams,
         params.base.seed, params.base.image_size, params.base.deterministic,
         (params.augment or {}) if fit.augment_on_the_fly else None],
        sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]



TPE_STARTUP = 4  # TPE's first draws are random; it models the scores after this many


def make_sampler(name: str, space: Space, seed: int):
    """A seeded Optuna sampler: the same params give the same configurations."""
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler(space, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP)
    return optuna.samplers.RandomSampler(seed=seed)

