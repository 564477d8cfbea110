"""The hyperparameter search of the ``tune@<arch>`` stages: successive halving over rungs of
growing budget, with Optuna studies holding the trials so that several workers can share them.

The schedule (:func:`rung_schedule`): ``tune.n_trials`` configurations start at the lowest rung;
rung ``r`` of ``R`` (``tune.rungs``) trains on a share ``s = tune.reduction ** -(R-1-r)`` of the
training split for ``sqrt(s)`` of the untuned epochs (lower rungs: whole batches, validated
after the last epoch), and each rung promotes the best ``1 / tune.reduction`` of its
challengers (at least one) to the next. Configuration 0 is the untuned settings: it is
promoted at every rung whatever its score, without taking a challenger's place, and at the
top rung (all the training data, the untuned epochs) its result *is* the untuned model of
``train@<arch>`` (training is deterministic, so training it again would give the same
weights). The tuned model is the best top-rung model, so it is never worse than the untuned
one on validation, and at least one challenger always gets the full budget.

The space of a key is a list of choices or a range (``{low, high, log, step}``); the sampler
(``tune.sampler``) is Optuna's TPE by default (its first :data:`TPE_STARTUP` draws random, then
drawn where the finished lowest-rung trials scored well), or its random or grid sampler. The
rung scheme is the project's own rather than Optuna's pruners: the untuned settings must run
at every rung and be adopted, not retrained, at the top, and a rung's decisions wait for all
its trials (Optuna's asynchronous halving decides by finishing order, so two workers would not
give the same search twice).

Each rung is one Optuna study (``<arch>-<fingerprint>-rung<r>``) in ``tune.storage``: in memory
for one worker, or any Optuna RDB URL (a temporary SQLite file when ``tune.workers`` > 1 and no
storage is named, PostgreSQL to add workers on other machines). The configurations of a rung
are queued as waiting trials and workers take them with Optuna's atomic pop, so no trial is run
twice; a heartbeat marks the trial of a killed worker failed and queues it once more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.models.engine import use_engine
from handwriting.models.fitting import (
    FIT_KEYS,
    FeatureCache,
    FitSettings,
    fit_model,
    frozen_feature_split,
    load_subset,
    make_reproducible,
    mlflow_epoch_logger,
)
from handwriting.models.training import arch_settings, variant_ranges
from handwriting.params import Params, ParamsError


class SearchError(RuntimeError):
    """The search found nothing: every trial failed."""


SAMPLERS = ("random", "grid", "tpe")
HEARTBEAT_SECONDS = 5  # a worker's trial beats this often; 3 missed beats mark it failed
UNTUNED = 0  # the configuration id of the untuned settings
STUCK_SECONDS = 60 * 60  # a rung whose running trials make no progress this long is an error


@dataclass(frozen=True)
class TuneSettings:
    """The ``tune`` params: the sampler, the rung schedule and where the trials are kept."""

    sampler: str
    n_trials: int
    reduction: int
    rungs: int
    patience: int
    storage: str | None
    workers: int

    def __post_init__(self) -> None:
        def fail(key: str, expected: str) -> ParamsError:
            return ParamsError(f"tune.{key} must be {expected}, got {getattr(self, key)!r}")

        if self.sampler not in SAMPLERS:
            raise fail("sampler", f"one of {', '.join(SAMPLERS)}")
        for key, least in (("n_trials", 1), ("reduction", 2), ("rungs", 1), ("patience", 1),
                           ("workers", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise fail(key, f"a whole number, {least} or more")
        if self.storage is not None and (not isinstance(self.storage, str)
                                         or "://" not in self.storage):
            raise fail("storage", "null (in memory) or an Optuna RDB URL such as "
                                  "postgresql://user:password@host/db or sqlite:///tune.db")

    @classmethod
    def from_params(cls, params: Params) -> TuneSettings:
        """The settings of ``params.tune``; a missing key is named with its section."""
        tune = params.tune or {}
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in tune]
        if missing:
            raise ParamsError(f"missing key(s) {', '.join('tune.' + k for k in missing)} "
                              "in params.yaml")
        return cls(**{name: tune[name] for name in names})


SEARCH_SETTINGS = tuple(f.name for f in dataclasses.fields(TuneSettings))


Space = dict[str, Any]  # per key: a list of choices, or a range {low, high, log, step}
RANGE_KEYS = {"low", "high", "log", "step"}


def tune_settings(params: Params, arch: str) -> tuple[TuneSettings, Space]:
    """(search settings, search space of ``arch``) from the ``tune`` params.

    A key of the space is a list of choices, or a range ``{low: 0.0003, high: 0.01, log:
    true}`` (``log``: drawn on a log scale; ``step``: only multiples of it above ``low``;
    whole numbers for ``low``, ``high`` and ``step`` draw whole numbers). The grid sampler
    needs lists."""
    settings = TuneSettings.from_params(params)
    space = (params.tune or {}).get(arch)
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


@dataclass(frozen=True)
class Rung:
    """One budget of the schedule: a share of the training split and a number of epochs."""

    index: int
    share: float
    epochs: int
    top: bool


def rung_schedule(settings: TuneSettings, epochs: int) -> list[Rung]:
    """The budgets, lowest first: rung ``r`` trains on a share ``s = reduction ** -(rungs-1-r)``
    of the data for ``sqrt(s)`` of ``epochs`` (at least 1); the top rung is all the data,
    ``epochs``. Shrinking the data and the epochs alike keeps enough steps at a small budget
    for the learning rate, its schedule and the batch size to show their effect (a lowest
    rung of one epoch on a ninth of the data scored every configuration near chance)."""
    rungs = []
    for index in range(settings.rungs):
        shrink = float(settings.reduction) ** -(settings.rungs - 1 - index)
        rungs.append(Rung(index, shrink, max(1, round(epochs * math.sqrt(shrink))),
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


def untuned_configuration(params: Params, arch: str, space: Space) -> dict[str, Any]:
    """The untuned settings of ``arch`` for the keys of its search space."""
    fit, hparams = arch_settings(params, arch)
    untuned = {**vars(fit), **hparams}
    missing = [key for key in space if key not in untuned]
    if missing:
        raise ParamsError(f"tune.{arch} searches {', '.join(missing)}, which train.{arch} does "
                          "not set (and is not a fit setting); add it to train." + arch)
    return {key: untuned[key] for key in space}


def first_configurations(settings: TuneSettings, space: Space,
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


def fingerprint(settings: TuneSettings, space: Space, params: Params, arch: str,
                arrays: list[np.ndarray]) -> str:
    """A short hash of everything a trial's result depends on: a study kept in a persistent
    storage is only reused for the same settings, space, recipe and data."""
    fit, hparams = arch_settings(params, arch)
    digest = hashlib.sha256(json.dumps(
        [vars(settings) | {"storage": None, "workers": None}, space, vars(fit), hparams,
         params.base.seed, params.base.image_size, params.base.deterministic,
         (params.augment or {}) if fit.augment_on_the_fly else None],
        sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


# --- storage and studies ------------------------------------------------------------------

def open_storage(url: str | None):
    """An Optuna storage: in memory for ``None``, else an RDB storage with a heartbeat (a trial
    whose worker stops beating is failed and queued once more)."""
    import optuna

    if url is None:
        return optuna.storages.InMemoryStorage()
    sqlite = url.startswith("sqlite")
    # pysqlite in autocommit mode, so that _immediate_transactions decides how each begins
    engine = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else {}
    with warnings.catch_warnings():  # "experimental" (since Optuna 2.8): Optuna's recovery
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=3 * HEARTBEAT_SECONDS, heartbeat_stale_trial_callback=retry)
    except Exception as error:  # SQLAlchemy/driver errors: name the setting and the fix
        detail = " ".join(str(error).split())  # the driver's message on one line
        raise SearchError(f"cannot open the Optuna storage tune.storage={url!r} "
                          f"({type(error).__name__}: {detail}); check the URL and that the "
                          "database server is running (PostgreSQL also needs psycopg: "
                          "pip install -e '.[postgres]')") from None
    if sqlite:
        _immediate_transactions(storage.engine)
    return storage


def _immediate_transactions(engine) -> None:
    """Begin every transaction on ``engine`` (SQLite) with ``BEGIN IMMEDIATE``.

    Optuna pops a waiting trial by reading its state and then setting it to running, inside one
    transaction that PostgreSQL and MySQL lock with ``SELECT ... FOR UPDATE``. SQLite ignores
    that clause and starts its write lock only at the update, so two worker processes could both
    read "waiting" and both run the trial (then one fails with "Cannot tell a COMPLETE trial").
    An immediate transaction takes the write lock at its start, which makes the pop atomic; the
    other workers wait (up to the 60 s timeout) for the lock, which each holds for milliseconds.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "begin")
    def begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def study_name(arch: str, key: str, rung: Rung) -> str:
    """The name of the study of one rung of one search."""
    return f"{arch}-{key}-rung{rung.index}"


def queue(study, configurations: dict[int, dict[str, Any] | None], space: Space) -> None:
    """Queue each configuration not yet in ``study`` (done, waiting or running) as a waiting
    trial carrying its id (a persistent study picks up where it stopped)."""
    from optuna.trial import TrialState

    present = {t.user_attrs.get("config_id") for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))}
    for cid, config in configurations.items():
        if cid in present:
            continue
        attrs: dict[str, Any] = {"config_id": cid}
        fixed = {}
        if config is not None:
            attrs["config"] = config
            fixed = {k: v for k, v in config.items() if in_space(v, space[k])}
        study.enqueue_trial(fixed, user_attrs=attrs, skip_if_exists=False)


def rung_scores(study) -> dict[int, float]:
    """Each configuration's score in a rung study (its completed trial)."""
    from optuna.trial import TrialState

    return {t.user_attrs["config_id"]: float(t.value)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "config_id" in t.user_attrs}


def rung_configurations(study) -> dict[int, dict[str, Any]]:
    """Each configuration of a rung study, by id (TPE's are known once drawn)."""
    return {t.user_attrs["config_id"]: t.user_attrs["config"]
            for t in study.get_trials(deepcopy=False)
            if "config_id" in t.user_attrs and "config" in t.user_attrs}


def pending(study) -> tuple[int, int]:
    """(waiting, running) trials of a study."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return states.count(TrialState.WAITING), states.count(TrialState.RUNNING)


# --- one trial --------------------------------------------------------------------------

@dataclass
class TrialContext:
    """What every trial of one search shares: the settings, the data and where to log."""

    arch: str
    params: Params
    settings: TuneSettings
    space: Space
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    cache: FeatureCache = dataclasses.field(default_factory=FeatureCache)
    scratch: Path | None = None  # where top-rung trials leave their weights and history

    @classmethod
    def load(cls, arch: str, params: Params, split_dir: Path) -> TrialContext:
        """The context of ``arch``'s search on the split in ``split_dir``."""
        settings, space = tune_settings(params, arch)
        return cls(arch, params, settings, space, load_subset(split_dir, "train"),
                   load_subset(split_dir, "val"))


def chosen_settings(params: Params, arch: str, config: dict[str, Any],
                    epochs: int | None = None) -> tuple[FitSettings, dict[str, Any]]:
    """The untuned settings of ``arch`` with ``config`` applied: its fit keys to the fit
    settings, the others to the builder's hyperparameters."""
    fit, hparams = arch_settings(params, arch)
    fit = fit.replace(**{k: v for k, v in config.items() if k in FIT_KEYS},
                      **({"epochs": epochs} if epochs is not None else {}))
    return fit, {**hparams, **{k: v for k, v in config.items() if k not in FIT_KEYS}}


def subsample(images: np.ndarray, class_ids: np.ndarray, fraction: float,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded share of the rows, at least one per class present (nested: a smaller share
    of the same seed is a subset of a larger one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a share must be in (0, 1], got {fraction}")
    if fraction == 1:
        return images, class_ids
    rng = np.random.default_rng(seed)
    keep = [rows[: max(1, round(len(rows) * fraction))]
            for rows in (rng.permutation(np.flatnonzero(class_ids == c))
                         for c in range(labels.NUM_CLASSES)) if len(rows)]
    chosen = np.sort(np.concatenate(keep))
    return images[chosen], class_ids[chosen]


def whole_batches(images: np.ndarray, class_ids: np.ndarray, batch_size: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows less a seeded random few, so that they fill whole batches of ``batch_size``
    (all of them when they already do, or when there are fewer than one batch)."""
    extra = len(images) % batch_size
    if extra == 0 or len(images) < batch_size:
        return images, class_ids
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(images))[:len(images) - extra])
    return images[keep], class_ids[keep]


def _nan_guard(label: str):
    import keras

    class FailOnNaN(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise FloatingPointError(f"{label}: the loss became {loss}")

    return FailOnNaN()


def top_rung_callbacks(fit: FitSettings, patience: int, checkpoint: Path) -> list:
    """The top rung's training: early stopping on validation loss (best weights restored), a
    checkpoint of the best epoch, and learning-rate reduction on plateaus (unless a schedule
    already lowers the rate)."""
    import keras

    plateau = [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                 patience=max(1, patience // 2))
               ] if fit.lr_schedule == "constant" else []
    return [*plateau,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                          restore_best_weights=True),
            keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss",
                                            save_best_only=True, save_weights_only=True)]


def best_epoch(history: dict[str, list[float]]) -> dict[str, float]:
    """The epoch with the lowest validation loss, as a history row."""
    at = int(np.argmin(history["val_loss"]))
    return {"epoch": at + 1, **{k: float(v[at]) for k, v in history.items()
                                if k != "learning_rate"}}


def train_at_rung(context: TrialContext, rung: Rung, config: dict[str, Any], cid: int, *,
                  callbacks: list | None = None) -> float:
    """Train configuration ``cid`` (``config``) at ``rung``'s budget; returns its validation
    accuracy (at a lower rung after the last epoch, at the top the best epoch's, whose weights
    and history it leaves in ``context.scratch``). Raises what the training raises, and
    FloatingPointError when the loss turns NaN."""
    from handwriting.models.zoo import build

    params, arch = context.params, context.arch
    fit, hparams = chosen_settings(params, arch, config, epochs=rung.epochs)
    seed = params.base.seed
    label = f"{arch} rung {rung.index} config {cid}"
    make_reproducible(seed + cid, params.base.deterministic)
    model = build(arch, (params.base.image_size,) * 2 + (1,), labels.NUM_CLASSES, **hparams)
    callbacks = [*(callbacks or []), _nan_guard(label)]
    if frozen_feature_split(model) is not None:
        # A frozen base's features of the whole split are computed once (and kept in the
        # context's cache), and its head trains fast: its budget is the epochs alone.
        data = context.train
    else:  # whole batches only below the top: a short last batch is one more compile
        data = subsample(*context.train, rung.share, seed)
        data = data if rung.top else whole_batches(*data, fit.batch_size, seed)
    scratch = context.scratch
    if rung.top:
        if scratch is None:
            raise RuntimeError("a top-rung trial needs the stage's scratch folder")
        weights = scratch / f"config-{cid}.weights.h5"
        callbacks += top_rung_callbacks(fit, context.settings.patience, weights)
    # A lower rung is scored after its last epoch only: validating every epoch would cost
    # more than a short trial's training.
    history = fit_model(model, fit, train=data, val=context.val, seed=seed, cache=context.cache,
                        augmentation=variant_ranges(params, fit), verbose=0,
                        callbacks=callbacks, validation_freq=1 if rung.top else rung.epochs)
    history = {k: [float(x) for x in v] for k, v in history.items() if k != "learning_rate"}
    if not rung.top:
        return max(history["val_accuracy"])
    assert scratch is not None
    model.save_weights(str(weights))  # the restored best epoch
    (scratch / f"config-{cid}.history.json").write_text(json.dumps(history))
    return best_epoch(history)["val_accuracy"]


def run_trial(trial, context: TrialContext) -> float:
    """Train one queued configuration at its rung's budget (the study's user attributes);
    returns its validation accuracy. A nested MLflow run records it."""
    import mlflow
    import optuna

    from handwriting import tracking

    if "config_id" not in trial.user_attrs:  # the queue ran dry under this worker
        trial.study.stop()
        raise optuna.TrialPruned("no queued configuration left")
    rung = Rung(**trial.study.user_attrs["rung"])
    cid = trial.user_attrs["config_id"]
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    config = trial.user_attrs.get("config")
    if config is None:  # a TPE slot: the sampler draws it now
        config = {key: suggest(trial, key, spec) for key, spec in context.space.items()}
        trial.set_user_attr("config", config)
    else:
        for key, value in config.items():  # records the params Optuna knows
            if in_space(value, context.space[key]):
                suggest(trial, key, context.space[key])
    arch = context.arch
    label = f"{arch} rung {rung.index} ({rung.share:.0%} of the data, {rung.epochs} epochs) " \
            f"config {cid} {config}"
    parent = trial.study.user_attrs.get("mlflow_parent")
    tracking.configure()
    with mlflow.start_run(run_name=f"{arch}-rung{rung.index}-config{cid}",
                          parent_run_id=parent, nested=True):
        mlflow.set_tags({"architecture": arch, "variant": "trial", "rung": str(rung.index),
                         "config_id": str(cid), "trial_number": str(trial.number),
                         "state": "running", **tracking.experiment_tags()})
        mlflow.log_params({**config, "rung.share": rung.share, "rung.epochs": rung.epochs})
        try:
            score = train_at_rung(context, rung, config, cid,
                                  callbacks=[mlflow_epoch_logger()])
        except Exception as error:  # recorded as failed; Optuna's catch goes on
            mlflow.set_tags({"state": "failed",
                             "error": f"{type(error).__name__}: {error}"[:500]})
            print(f"tune: {label}: failed ({error})", file=sys.stderr, flush=True)
            raise
        mlflow.set_tag("state", "complete")
        mlflow.log_metric("rung_val_accuracy", score)
        print(f"tune: {label}: val_accuracy {score:.3f}", flush=True)
        return score


def run_waiting(study, context: TrialContext) -> int:
    """Run the study's waiting trials in this process until none is left; returns how many
    it took."""
    from optuna.trial import TrialState

    taken = []

    def objective(trial) -> float:
        taken.append(trial.number)
        return run_trial(trial, context)

    def stop_when_empty(study, _trial) -> None:
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.stop()

    if pending(study)[0]:
        study.optimize(objective, callbacks=[stop_when_empty], catch=(Exception,))
    return len(taken)


# --- workers ------------------------------------------------------------------------------

def worker_command(arch: str, params_path: Path, split_dir: Path, storage: str) -> list[str]:
    """The command line of one worker process on this machine. Each keeps TensorFlow's own
    thread count (all the cores), as the stage's process has: a trial then computes exactly
    what it computes with one worker (fewer threads would round differently)."""
    return [sys.executable, "-m", "handwriting.stages.tune", "--worker", "--arch", arch,
            "--params", str(params_path), "--split", str(split_dir), "--storage", storage]


def work(arch: str, params: Params, split_dir: Path, storage_url: str, *,
         follow: bool = False, poll_seconds: float = 2.0) -> int:
    """A worker: run the waiting trials of ``arch``'s lower rungs in ``storage_url`` until none
    is left (with ``follow``, until the search is finished). Returns the trials it ran."""
    use_engine(arch_settings(params, arch)[0].engine)  # before Keras is first imported
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    context = TrialContext.load(arch, params, split_dir)
    settings, space = tune_settings(params, arch)
    key = fingerprint(settings, space, params, arch, [*context.train, *context.val])
    ran = 0
    while True:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage)
                       if s.study_name.startswith(f"{arch}-{key}-rung"))
        # TPE draws differ from worker to worker (the other samplers' draws are queued).
        studies = [optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(
            settings.sampler, space, params.base.seed + os.getpid())) for name in names]
        open_ = [s for s in studies if not s.user_attrs["rung"]["top"] and pending(s)[0]]
        for study in open_:
            ran += run_waiting(study, context)
        finished = any(s.user_attrs.get("finished") for s in studies)
        if open_:
            continue
        if not follow or finished:
            return ran
        time.sleep(poll_seconds)


@contextmanager
def search_storage(settings: TuneSettings) -> Iterator[str | None]:
    """The storage URL of one search: ``tune.storage``, else a temporary SQLite file when
    several workers share it (removed afterwards), else ``None`` (in memory)."""
    if settings.storage is not None or settings.workers == 1:
        yield settings.storage
        return
    with tempfile.TemporaryDirectory(prefix="tune-") as folder:
        yield f"sqlite:///{Path(folder) / 'study.db'}"


def run_rung(study, context: TrialContext, *, url: str | None, workers: int,
             worker_cmd: list[str] | None) -> None:
    """Run every queued trial of a lower rung: in this process for one worker, else in
    ``workers`` worker processes (``worker_cmd``); then finish any trial a killed worker
    left behind."""
    if workers > 1 and url is not None and worker_cmd is not None:
        processes = [subprocess.Popen(worker_cmd) for _ in range(workers)]
        for process in processes:
            process.wait()
        failed = [p.returncode for p in processes if p.returncode]
        if failed:
            print(f"tune: {len(failed)} worker(s) ended with exit status {failed}; their "
                  "trials are failed by the heartbeat and run again here", file=sys.stderr)
    last_change, seen = time.monotonic(), None
    while True:
        waiting, running = pending(study)
        if (waiting, running) != seen:
            last_change, seen = time.monotonic(), (waiting, running)
        if waiting:
            run_waiting(study, context)
        elif running:  # another machine's worker, or a killed one's trial going stale
            if time.monotonic() - last_change > STUCK_SECONDS:
                raise SearchError(f"{running} trial(s) of {study.study_name} have been running "
                                  f"for {STUCK_SECONDS // 60} minutes with no progress; is a "
                                  "worker stuck? Stop it: the heartbeat then queues its trial "
                                  "again")
            _fail_stale(study)
            time.sleep(1)
        else:
            return


def _fail_stale(study) -> None:
    import optuna

    with warnings.catch_warnings():  # "experimental" (since Optuna 2.9): its own recovery
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


TPE_STARTUP = 4  # TPE's first draws are random; it models the scores after this many


def make_sampler(name: str, space: Space, seed: int):
    """A seeded Optuna sampler: the same params give the same configurations."""
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler(space, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP)
    return optuna.samplers.RandomSampler(seed=seed)


# --- the whole search ---------------------------------------------------------------------

@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search: the winning configuration at the top rung and every rung."""

    winner: int  # configuration id; UNTUNED (0) when the untuned settings won
    config: dict[str, Any]
    val_accuracy: float  # the winner's top-rung validation accuracy
    rungs: list[dict[str, Any]]  # per rung: budget, scores by configuration, promoted ids
    trials: dict[str, int]  # trials by state over every rung

    @property
    def winner_name(self) -> str:
        """``untuned-settings`` or ``config-<id>``."""
        return "untuned-settings" if self.winner == UNTUNED else f"config-{self.winner}"


def search(arch: str, params: Params, split_dir: Path, *, untuned_val_accuracy: float,
           scratch: Path, params_path: Path | None = None) -> SearchResult:
    """Run the successive-halving search of ``arch`` inside an MLflow parent run.

    ``untuned_val_accuracy`` is the untuned model's: configuration 0's top-rung result. The
    top-rung trials leave their weights and history in ``scratch``. Worker processes (when
    ``tune.workers`` > 1) read ``params_path``. Raises :class:`SearchError` when every trial of
    a rung failed."""
    use_engine(arch_settings(params, arch)[0].engine)  # before Keras is first imported
    import mlflow
    import optuna

    from handwriting import tracking

    settings, space = tune_settings(params, arch)
    context = TrialContext.load(arch, params, split_dir)
    context.scratch = scratch
    seed = params.base.seed
    untuned = untuned_configuration(params, arch, space)
    schedule = rung_schedule(settings, arch_settings(params, arch)[0].epochs)
    key = fingerprint(settings, space, params, arch, [*context.train, *context.val])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking.configure()
    configs = dict(enumerate(first_configurations(settings, space, untuned, seed)))
    rungs: list[dict[str, Any]] = []
    states: list[str] = []
    with search_storage(settings) as url, \
            mlflow.start_run(run_name=f"{arch}-search") as parent:
        mlflow.set_tags({**tracking.run_tags(stage=f"tune@{arch}", architecture=arch,
                                             variant="search", pretrained=False),
                         "sampler": settings.sampler})
        mlflow.log_params({**{f"tune.{k}": v for k, v in vars(settings).items()},
                           "tune.space": json.dumps(space, sort_keys=True),
                           "tune.schedule": json.dumps([vars(r) for r in schedule])})
        storage = open_storage(url)
        for rung in schedule:
            started = time.perf_counter()
            # The top rung runs here, in memory: its trials leave their weights in scratch.
            study = optuna.create_study(
                study_name=study_name(arch, key, rung), direction="maximize",
                storage=optuna.storages.InMemoryStorage() if rung.top else storage,
                sampler=make_sampler(settings.sampler, space, seed), load_if_exists=True)
            study.set_user_attr("rung", vars(rung))
            study.set_user_attr("mlflow_parent", parent.info.run_id)
            if rung.top:
                queue(study, {c: v for c, v in configs.items() if c != UNTUNED}, space)
                _add_untuned_result(study, untuned, space, untuned_val_accuracy, arch)
                run_waiting(study, context)
            else:
                queue(study, configs, space)
                command = None
                if url is not None and settings.workers > 1:
                    command = worker_command(arch, params_path or Path("params.yaml"),
                                             split_dir, url)
                run_rung(study, context, url=url, workers=settings.workers,
                         worker_cmd=command)
            scores = rung_scores(study)
            known = rung_configurations(study)
            states += [t.state.name.lower() for t in study.get_trials(deepcopy=False)
                       if "config_id" in t.user_attrs]
            if not scores:
                raise SearchError(f"all {len(configs)} trials of {arch} at rung {rung.index} "
                                  "failed (see the MLflow child runs and the messages above); "
                                  f"check tune.{arch} for settings that cannot train")
            keep = [] if rung.top else promoted(scores, settings.reduction)
            rungs.append({**vars(rung), "scores": {str(c): round(v, 6)
                                                   for c, v in sorted(scores.items())},
                          "promoted": keep,
                          "wall_seconds": round(time.perf_counter() - started, 1)})
            print(f"tune: {arch} rung {rung.index}: {len(scores)} configuration(s) scored in "
                  f"{rungs[-1]['wall_seconds']:.0f} s"
                  + (f"; promoted {keep}" if keep else ""), flush=True)
            configs = {cid: known[cid] for cid in keep}
        if url is not None:
            first = optuna.load_study(study_name=study_name(arch, key, schedule[0]),
                                      storage=storage)
            first.set_user_attr("finished", True)  # followers may stop
        winner = min(scores, key=lambda cid: (-scores[cid], cid))  # a tie goes to untuned
        counts = {state: states.count(state) for state in ("complete", "pruned", "fail")}
        mlflow.log_metrics({**{f"trials_{k}": v for k, v in counts.items()},
                            **{f"rung{r['index']}_wall_seconds": r["wall_seconds"]
                               for r in rungs},
                            "wall_seconds": sum(r["wall_seconds"] for r in rungs),
                            "best_val_accuracy": scores[winner],
                            "untuned_val_accuracy": untuned_val_accuracy})
        config = known[winner]
        mlflow.set_tag("winner", "untuned-settings" if winner == UNTUNED else
                       f"config-{winner}")
        mlflow.log_params({f"best.{k}": v for k, v in config.items()})
    return SearchResult(winner, config, scores[winner], rungs, counts)


def _add_untuned_result(study, untuned: dict[str, Any], space: Space,
                        val_accuracy: float, arch: str) -> None:
    """Configuration 0 at the top rung: the untuned model's validation accuracy."""
    import optuna

    if UNTUNED in rung_scores(study):
        return
    study.add_trial(optuna.trial.create_trial(
        value=val_accuracy, user_attrs={"config_id": UNTUNED, "config": untuned,
                                        "source": f"the untuned model of train@{arch}"}))
