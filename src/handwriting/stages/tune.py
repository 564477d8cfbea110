"""Stage tune@<arch>: search hyperparameters, then train the tuned model.

An Optuna study samples ``tune.n_trials`` settings from the architecture's search space
(``tune.<arch>``) with the ``tune.sampler`` (random, grid or tpe, seeded). Each trial trains
``tune.trial_epochs`` epochs on a seeded share (``tune.trial_fraction``) of the training split
and reports validation accuracy per epoch, so the pruner can stop unpromising trials early; a
trial whose loss turns NaN or that raises is recorded as failed and the search goes on. MLflow
gets a parent run per search and a nested child run per trial.

The best settings go to ``best_params.json``; the tuned model is then trained with them for up
to ``tune.max_epochs`` epochs with early stopping on validation loss (best weights restored),
learning-rate reduction on plateaus and a checkpoint of the best epoch, and tracked in MLflow as
variant ``tuned``. Every output is written only once the whole stage has succeeded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.datasets import write_json
from handwriting.models.fitting import (
    FeatureCache,
    fit_model,
    frozen_feature_split,
    load_subset,
    make_reproducible,
    mlflow_epoch_logger,
)
from handwriting.models.training import FIT_KEYS, arch_settings, tracked_training
from handwriting.params import Params, ParamsError, load_params

SAMPLERS = ("random", "grid", "tpe")
PRUNERS = ("median", "hyperband", "none")
SEARCH_SETTINGS = ("sampler", "n_trials", "trial_epochs", "trial_fraction", "pruner",
                   "max_epochs", "patience", "start_from_untuned")


def tune_settings(params: Params, arch: str) -> tuple[dict[str, Any], dict[str, list]]:
    """(search settings, search space of ``arch``) from the ``tune`` params."""
    tune = params.tune or {}
    missing = [key for key in SEARCH_SETTINGS if key not in tune]
    if missing:
        raise SystemExit(f"tune: missing key(s) {', '.join('tune.' + k for k in missing)} "
                         "in params.yaml")
    settings = {key: tune[key] for key in SEARCH_SETTINGS}
    if settings["sampler"] not in SAMPLERS:
        raise SystemExit(f"tune: tune.sampler must be one of {', '.join(SAMPLERS)}, "
                         f"got {settings['sampler']!r}")
    if settings["pruner"] not in PRUNERS:
        raise SystemExit(f"tune: tune.pruner must be one of {', '.join(PRUNERS)}, "
                         f"got {settings['pruner']!r}")
    space = tune.get(arch)
    if not isinstance(space, dict) or not space:
        raise SystemExit(f"tune: params.yaml has no search space tune.{arch}; add one, e.g. "
                         "{learning_rate: [0.01, 0.001], batch_size: [32, 64]}")
    for key, choices in space.items():
        if not isinstance(choices, list) or not choices:
            raise SystemExit(f"tune: tune.{arch}.{key} must be a non-empty list of choices")
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
        raise SystemExit(f"tune: tune.trial_fraction must be in (0, 1], got {fraction}")
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
        fit = {**fit_defaults, **{k: v for k, v in chosen.items() if k in FIT_KEYS}}
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
                history = fit_model(model, epochs=int(settings["trial_epochs"]),
                                    batch_size=int(fit["batch_size"]),
                                    optimizer=fit["optimizer"],
                                    learning_rate=float(fit["learning_rate"]), train=data,
                                    val=val, seed=seed, cache=cache, verbose=0,
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
        untuned = {**fit_defaults, **hparam_defaults}
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
            raise SystemExit(f"tune: all {len(states)} trials of {arch} failed or were pruned "
                             "(see the MLflow child runs); widen tune." + arch + " or raise "
                             "tune.trial_epochs")
        mlflow.log_metric("best_val_accuracy", study.best_value)
        mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
    return dict(study.best_params), study


def run(arch: str, params_path: Path, split_dir: Path, best_params_path: Path,
        model_path: Path, history_path: Path, metrics_path: Path) -> dict[str, Any]:
    """Search, then train and write the tuned model; returns its summary."""
    import keras

    params = load_params(params_path)
    settings, _ = tune_settings(params, arch)
    cache = FeatureCache()  # a frozen VGG base's features: computed once for search and model
    best, study = search(arch, params, split_dir, cache)
    fit_defaults, hparam_defaults = arch_settings(params, arch)
    fit = {**fit_defaults, **{k: v for k, v in best.items() if k in FIT_KEYS},
           "epochs": int(settings["max_epochs"])}
    hparams = {**hparam_defaults, **{k: v for k, v in best.items() if k not in FIT_KEYS}}
    patience = int(settings["patience"])

    def early_stopped(model, train, val, callbacks):
        with tempfile.TemporaryDirectory() as scratch:
            checkpoint = Path(scratch) / "best.weights.h5"
            history = fit_model(
                model, epochs=fit["epochs"], batch_size=int(fit["batch_size"]),
                optimizer=fit["optimizer"], learning_rate=float(fit["learning_rate"]),
                train=train, val=val, seed=params.base.seed, cache=cache,
                callbacks=[*callbacks,
                           keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                         restore_best_weights=True),
                           keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                             patience=max(1, patience // 2)),
                           keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss",
                                                           save_best_only=True,
                                                           save_weights_only=True)])
        history = {k: v for k, v in history.items() if k != "learning_rate"}
        best_epoch = int(np.argmin(history["val_loss"]))
        reported = {"epoch": best_epoch + 1, **{k: float(v[best_epoch])
                                                  for k, v in history.items()}}
        return history, reported

    states = [t.state.name.lower() for t in study.trials]
    summary = tracked_training(
        arch=arch, variant="tuned", params=params, fit_settings=fit, hparams=hparams,
        split_dir=split_dir, model_path=model_path, history_path=history_path,
        metrics_path=metrics_path, train_fn=early_stopped,
        extra_params={f"best.{k}": v for k, v in best.items()},
        extra_summary={"chosen": best, "trials": len(states),
                       "trials_complete": states.count("complete"),
                       "trials_pruned": states.count("pruned"),
                       "trials_failed": states.count("fail"),
                       "best_trial_val_accuracy": round(float(study.best_value), 6)})
    write_json(best_params_path, best)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.tune",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="architecture (a tune.<arch> space)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, required=True, help="split array folder")
    parser.add_argument("--best-params", type=Path, required=True, help="JSON to write")
    parser.add_argument("--model", type=Path, required=True, help="tuned .keras to write")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV to write")
    parser.add_argument("--metrics", type=Path, required=True, help="summary JSON to write")
    args = parser.parse_args(argv)
    try:
        run(args.arch, args.params, args.split, args.best_params, args.model, args.history,
            args.metrics)
    except ParamsError as error:
        raise SystemExit(f"tune: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
