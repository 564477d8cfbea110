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
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from handwriting.datasets import write_json
from handwriting.models.fitting import FIT_KEYS, FeatureCache, fit_model
from handwriting.models.search import SearchError, search, tune_settings
from handwriting.models.training import arch_settings, tracked_training, variant_ranges
from handwriting.params import ParamsError, load_params


def run(arch: str, params_path: Path, split_dir: Path, best_params_path: Path,
        model_path: Path, history_path: Path, metrics_path: Path) -> dict[str, Any]:
    """Search, then train and write the tuned model; returns its summary."""
    import keras

    params = load_params(params_path)
    settings, _ = tune_settings(params, arch)
    cache = FeatureCache()  # a frozen VGG base's features: computed once for search and model
    best, study = search(arch, params, split_dir, cache)
    fit_defaults, hparam_defaults = arch_settings(params, arch)
    fit = fit_defaults.replace(epochs=int(settings["max_epochs"]),
                               **{k: v for k, v in best.items() if k in FIT_KEYS})
    hparams = {**hparam_defaults, **{k: v for k, v in best.items() if k not in FIT_KEYS}}
    patience = int(settings["patience"])

    def early_stopped(model, train, val, callbacks):
        with tempfile.TemporaryDirectory() as scratch:
            checkpoint = Path(scratch) / "best.weights.h5"
            # A learning-rate schedule already lowers the rate: no reduction on plateaus.
            plateau = [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                         patience=max(1, patience // 2))
                       ] if fit.lr_schedule == "constant" else []
            history = fit_model(
                model, fit, train=train, val=val, seed=params.base.seed, cache=cache,
                augmentation=variant_ranges(params, fit),
                callbacks=[*callbacks, *plateau,
                           keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                         restore_best_weights=True),
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
    except (ParamsError, SearchError) as error:
        raise SystemExit(f"tune: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
