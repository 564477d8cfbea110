"""The hyperparameter search of the tune@<arch> stages: an Optuna study over the
architecture's search space (``tune.<arch>``), with the seeded sampler and pruner of the
``tune`` params, each trial a short tracked training (a nested MLflow run).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.models.fitting import (
    FIT_KEYS,
    FeatureCache,
    fit_model,
    frozen_feature_split,
    load_subset,
    make_reproducible,
    mlflow_epoch_logger,
)
from handwriting.models.training import arch_settings, variant_ranges
from handwriting.params import Params, ParamsError


class SearchError(RuntimeError):
    """The search found nothing: every trial failed or was pruned."""


SAMPLERS = ("random", "grid", "tpe")
PRUNERS = ("median", "hyperband", "none")
SEARCH_SETTINGS = ("sampler", "n_trials", "trial_epochs", "trial_fraction", "pruner",
                   "max_epochs", "patience", "start_from_untuned")


def tune_settings(params: Params, arch: str) -> tuple[dict[str, Any], dict[str, list]]:
    """(search settings, search space of ``arch``) from the ``tune`` params."""
    tune = params.tune or {}
    missing = [key for key in SEARCH_SETTINGS if key not in tune]
    if missing:
        raise ParamsError(f"missing key(s) {', '.join('tune.' + k for k in missing)} "
                          "in params.yaml")
    settings = {key: tune[key] for key in SEARCH_SETTINGS}
    if settings["sampler"] not in SAMPLERS:
        raise ParamsError(f"tune.sampler must be one of {', '.join(SAMPLERS)}, "
                          f"got {settings['sampler']!r}")
    if settings["pruner"] not in PRUNERS:
        raise ParamsError(f"tune.pruner must be one of {', '.join(PRUNERS)}, "
                          f"got {settings['pruner']!r}")
    space = tune.get(arch)
    if not isinstance(space, dict) or not space:
        raise ParamsError(f"params.yaml has no search space tune.{arch}; add one, e.g. "
                          "{learning_rate: [0.01, 0.001], batch_size: [32, 64]}")
    for key, choices in space.items():
        if not isinstance(choices, list) or not choices:
            raise ParamsError(f"tune.{arch}.{key} must be a non-empty list of choices")
    return settings, space


def make_sampler(name: str, space: dict[str, list], seed: int):
    """A seeded Optuna sampler: the same params give the same trials."""
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler(space, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(name: str, trial_epochs: int):
    """Median (stop a trial below the median of earlier ones), Hyperband, or none."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(trial_epochs, 1))
    return optuna.pruners.NopPruner()


def _trial_callbacks(trial):
    """Report validation accuracy per epoch (pruning) and fail on a NaN loss."""
    import keras
    import optuna

    class ReportAndPrune(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise FloatingPointError(f"trial {trial.number}: the loss became {loss}")

        def on_epoch_end(self, epoch, logs=None):
            trial.report(float((logs or {}).get("val_accuracy", 0.0)), step=epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {epoch + 1}")

    return [ReportAndPrune()]


def subsample(images: np.ndarray, class_ids: np.ndarray, fraction: float,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded share of the rows, at least one per class present."""
    if not 0 < fraction <= 1:
        raise ParamsError(f"tune.trial_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return images, class_ids
    rng = np.random.default_rng(seed)
    keep = [rows[: max(1, round(len(rows) * fraction))]
            for rows in (rng.permutation(np.flatnonzero(class_ids == c))
                         for c in range(labels.NUM_CLASSES)) if len(rows)]
    chosen = np.sort(np.concatenate(keep))
    return images[chosen], class_ids[chosen]


def search(arch: str, params: Params, split_dir: Path,
           cache: FeatureCache | None = None) -> tuple[dict[str, Any], Any]:
    """Run the study inside an MLflow parent run; returns (best params, the study).

    ``cache`` keeps a frozen VGG base's features for the trials (and for the caller)."""
    import mlflow
    import optuna

    from handwriting import tracking
    from handwriting.models.zoo import build

    settings, space = tune_settings(params, arch)
    fit_defaults, hparam_defaults = arch_settings(params, arch)
    seed, deterministic = params.base.seed, params.base.deterministic
    size = params.base.image_size
    full_train = load_subset(split_dir, "train")
    train = subsample(*full_train, settings["trial_fraction"], seed)
    val = load_subset(split_dir, "val")
    cache = cache if cache is not None else FeatureCache()
    n_trials = int(settings["n_trials"])
    if settings["sampler"] == "grid":
        n_trials = min(n_trials, math.prod(len(v) for v in space.values()))

    def objective(trial) -> float:
        chosen = {key: trial.suggest_categorical(key, choices) for key, choices in space.items()}
        fit = fit_defaults.replace(epochs=int(settings["trial_epochs"]),
                                   **{k: v for k, v in chosen.items() if k in FIT_KEYS})
        hparams = {**hparam_defaults, **{k: v for k, v in chosen.items() if k not in FIT_KEYS}}
        with mlflow.start_run(run_name=f"{arch}-trial-{trial.number}", nested=True):
            mlflow.set_tags({"architecture": arch, "variant": "trial",
                             "trial_number": str(trial.number), "state": "running",
                             **tracking.experiment_tags()})
            mlflow.log_params(chosen)
            try:
                make_reproducible(seed + trial.number, deterministic)
                model = build(arch, (size, size, 1), labels.NUM_CLASSES, **hparams)
                # A frozen base's features of the whole split are computed once anyway (the
                # tuned model needs them), and its head trains fast: no need to subsample.
                data = full_train if frozen_feature_split(model) is not None else train
                history = fit_model(model, fit, train=data, val=val, seed=seed, cache=cache,
                                    augmentation=variant_ranges(params, fit), verbose=0,
                                    callbacks=[mlflow_epoch_logger(), *_trial_callbacks(trial)])
            except optuna.TrialPruned:
                mlflow.set_tag("state", "pruned")
                print(f"tune: {arch} trial {trial.number} {chosen}: pruned", flush=True)
                raise
            except Exception as error:  # recorded as failed; Optuna's catch goes on
                mlflow.set_tags({"state": "failed", "error": f"{type(error).__name__}: "
                                                             f"{error}"[:500]})
                print(f"tune: {arch} trial {trial.number} {chosen}: failed ({error})",
                      file=sys.stderr, flush=True)
                raise
            score = max(history["val_accuracy"])
            mlflow.set_tag("state", "complete")
            mlflow.log_metric("best_val_accuracy", score)
            print(f"tune: {arch} trial {trial.number} {chosen}: val_accuracy {score:.3f}",
                  flush=True)
            return score

    tracking.configure()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=make_sampler(settings["sampler"], space, seed),
                                pruner=make_pruner(settings["pruner"],
                                                   int(settings["trial_epochs"])))
    if settings["start_from_untuned"] and settings["sampler"] != "grid":
        # Trial 0 tries the untuned settings, so the search can only improve on them.
        untuned = {**vars(fit_defaults), **hparam_defaults}
        baseline = {key: untuned[key] for key in space if untuned.get(key) in space[key]}
        if baseline:
            study.enqueue_trial(baseline, skip_if_exists=True)
    with mlflow.start_run(run_name=f"{arch}-search"):
        mlflow.set_tags({**tracking.run_tags(stage=f"tune@{arch}", architecture=arch,
                                             variant="search", pretrained=False),
                         "sampler": settings["sampler"]})
        mlflow.log_params({**{f"tune.{k}": v for k, v in settings.items()},
                           "tune.space": json.dumps(space, sort_keys=True),
                           "data.trial_train_images": len(train[0])})
        study.optimize(objective, n_trials=n_trials, catch=(Exception,))
        states = [t.state.name.lower() for t in study.trials]
        counts = {state: states.count(state) for state in ("complete", "pruned", "fail")}
        mlflow.log_metrics({f"trials_{k}": v for k, v in counts.items()})
        if counts["complete"] == 0:
            raise SearchError(f"all {len(states)} trials of {arch} failed or were pruned "
                              "(see the MLflow child runs); widen tune." + arch + " or raise "
                              "tune.trial_epochs")
        mlflow.log_metric("best_val_accuracy", study.best_value)
        mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
    return dict(study.best_params), study
