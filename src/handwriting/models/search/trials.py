"""One trial: a configuration trained at one rung's budget, recorded in MLflow."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.models.features import FeatureCache
from handwriting.models.fitting import (
    FIT_KEYS,
    FitSettings,
    fit_model,
    load_subset,
    make_reproducible,
    settable_learning_rate,
)
from handwriting.models.history import mlflow_epoch_logger
from handwriting.models.search.schedule import Rung
from handwriting.models.search.settings import (
    TPE_STARTUP,
    Space,
    in_space,
    suggest,
    tune_settings,
)
from handwriting.models.search.studies import pending
from handwriting.models.training import arch_settings, variant_ranges
from handwriting.params import Params, Tune

# Seeding and building a model draw from Python's global random state (Keras's default
# layer seeds), which the threads of trials trained at once share: one at a time.
_SEEDING = threading.Lock()


@dataclass
class TrialContext:
    """What every trial of one search shares: the settings, the data and where to log."""

    arch: str
    params: Params
    space: Space
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    cache: FeatureCache = dataclasses.field(default_factory=FeatureCache)
    scratch: Path | None = None  # where top-rung trials leave their weights and history

    @classmethod
    def load(cls, arch: str, params: Params, split_dir: Path) -> TrialContext:
        """The context of ``arch``'s search on the split in ``split_dir``."""
        return cls(arch, params, tune_settings(params.tune, arch)[1],
                   load_subset(split_dir, "train"), load_subset(split_dir, "val"))

    @property
    def settings(self) -> Tune:
        """The search settings: ``params.tune`` (:meth:`load` has checked it is there)."""
        assert self.params.tune is not None
        return self.params.tune


def chosen_settings(params: Params, arch: str, config: dict[str, Any],
                    epochs: int | None = None) -> tuple[FitSettings, dict[str, Any]]:
    """The untuned settings of ``arch`` with ``config`` applied: its fit keys to the fit
    settings, the others to the builder's hyperparameters."""
    fit, hparams = arch_settings(params.train, arch)
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
        # Keras may call it on a thread of its own, after the step: the training loop then
        # does not wait for each step to finish before sending the next (a sixth faster).
        async_safe = True

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise FloatingPointError(f"{label}: the loss became {loss}")

    return FailOnNaN()


def top_rung_callbacks(fit: FitSettings, patience: int) -> list:
    """The top rung's training: early stopping on validation loss (the best epoch's weights
    restored when it ends) and learning-rate reduction on plateaus (unless a schedule sets the
    rate: a cosine decay, or a constant rate after a warm-up)."""
    import keras

    plateau = [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                 patience=max(1, patience // 2))
               ] if settable_learning_rate(fit) else []
    return [*plateau, keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                    restore_best_weights=True)]


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
    with _SEEDING:
        make_reproducible(seed + cid, params.base.deterministic)
        model = build(arch, (params.base.image_size,) * 2 + (1,), labels.NUM_CLASSES,
                      **hparams)
    callbacks = [*(callbacks or []), _nan_guard(label)]
    data = subsample(*context.train, rung.share, seed)  # all of it at a share of 1
    if rung.share < 1:  # whole batches of a share: a short last batch is one more compile
        data = whole_batches(*data, fit.batch_size, seed)
    scratch = context.scratch
    if rung.top:
        if scratch is None:
            raise RuntimeError("a top-rung trial needs the stage's scratch folder")
        callbacks += top_rung_callbacks(fit, context.settings.patience)
    # A lower rung is scored after its last epoch only: validating every epoch would cost
    # more than a short trial's training.
    history = fit_model(model, fit, train=data, val=context.val, seed=seed, cache=context.cache,
                        augmentation=variant_ranges(params, fit), verbose=0,
                        callbacks=callbacks, validation_freq=1 if rung.top else rung.epochs)
    history = {k: [float(x) for x in v] for k, v in history.items() if k != "learning_rate"}
    if not rung.top:
        return max(history["val_accuracy"])
    assert scratch is not None
    weights = scratch / f"config-{cid}.weights.h5"
    model.save_weights(str(weights))  # the restored best epoch
    (scratch / f"config-{cid}.history.json").write_text(json.dumps(history))
    return best_epoch(history)["val_accuracy"]


def start_trial(trial, context: TrialContext) -> tuple[Rung, int, dict[str, Any]]:
    """The rung, configuration id and settings of a queued trial, recorded in the trial; a
    TPE slot's settings are drawn now, by the sampler, from the trials finished by then."""
    import optuna

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
    return rung, cid, config


def train_trial(context: TrialContext, rung: Rung, cid: int, config: dict[str, Any], *,
                number: int, parent: str | None) -> float:
    """Train configuration ``cid`` at ``rung`` (Optuna's trial ``number``) in a nested MLflow
    run under ``parent``; returns its validation accuracy."""
    import mlflow

    from handwriting import tracking

    arch = context.arch
    label = f"{arch} rung {rung.index} ({rung.share:.0%} of the data, {rung.epochs} epochs) " \
            f"config {cid} {config}"
    tracking.configure()
    with mlflow.start_run(run_name=f"{arch}-rung{rung.index}-config{cid}",
                          parent_run_id=parent, nested=True):
        mlflow.set_tags({"architecture": arch, "variant": "trial", "rung": str(rung.index),
                         "config_id": str(cid), "trial_number": str(number),
                         "state": "running", **tracking.experiment_tags()})
        mlflow.log_params({**config, "rung.share": rung.share, "rung.epochs": rung.epochs})
        try:
            score = train_at_rung(context, rung, config, cid,
                                  callbacks=[mlflow_epoch_logger()])
        except Exception as error:  # recorded as failed; the caller goes on
            mlflow.set_tags({"state": "failed",
                             "error": f"{type(error).__name__}: {error}"[:500]})
            print(f"tune: {label}: failed ({error})", file=sys.stderr, flush=True)
            raise
        mlflow.set_tag("state", "complete")
        mlflow.log_metric("rung_val_accuracy", score)
        print(f"tune: {label}: val_accuracy {score:.3f}", flush=True)
        return score


def run_trial(trial, context: TrialContext) -> float:
    """Train one queued configuration at its rung's budget (the study's user attributes);
    returns its validation accuracy. A nested MLflow run records it."""
    rung, cid, config = start_trial(trial, context)
    return train_trial(context, rung, cid, config, number=trial.number,
                       parent=trial.study.user_attrs.get("mlflow_parent"))


def may_start_early(number: int, config: dict[str, Any] | None) -> bool:
    """Whether queued trial ``number`` may start while earlier ones still train, and still
    get the settings it gets when they are trained one at a time: settings given up front
    (the untuned ones, random, grid, promoted ones), or a TPE slot among TPE's first
    :data:`TPE_STARTUP` draws, which are random whatever has finished (drawn in trial order,
    they are the same draws). A later TPE slot learns from every earlier trial: it waits."""
    return config is not None or number < TPE_STARTUP


def run_waiting(study, context: TrialContext, at_once: int = 1) -> int:
    """Run the study's waiting trials in this process until none is left, ``at_once`` of them
    at a time (each on a thread of its own, as one at a time would train it: the same
    settings and the same scores); returns how many it took."""
    from optuna.trial import TrialState

    if at_once > 1:
        return _run_together(study, context, at_once)
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


def _run_together(study, context: TrialContext, at_once: int) -> int:
    """:func:`run_waiting` with ``at_once`` trials training at a time. This thread takes the
    trials in queue order and draws their settings (:func:`may_start_early` says when), and
    records every result; the threads only train."""
    from optuna.trial import TrialState

    parent = study.user_attrs.get("mlflow_parent")
    training: dict[Future, Any] = {}
    taken = 0
    with ThreadPoolExecutor(at_once, thread_name_prefix="trial") as pool:
        while True:
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if waiting and len(training) < at_once and (
                    not training or may_start_early(waiting[0].number,
                                                    waiting[0].user_attrs.get("config"))):
                trial = study.ask()
                if "config_id" not in trial.user_attrs:  # another worker took it meanwhile
                    study.tell(trial, state=TrialState.PRUNED)
                    continue
                try:
                    rung, cid, config = start_trial(trial, context)
                except Exception as error:  # failed, as Optuna's catch records it alone
                    print(f"tune: trial {trial.number} failed ({error})", file=sys.stderr)
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                training[pool.submit(train_trial, context, rung, cid, config,
                                     number=trial.number, parent=parent)] = trial
                taken += 1
                continue
            if not training:
                return taken
            done, _ = wait(training, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: training[f].number):
                trial = training.pop(future)
                if future.exception() is None:
                    study.tell(trial, future.result())
                else:  # reported by train_trial; the search goes on, as with one at a time
                    study.tell(trial, state=TrialState.FAIL)
