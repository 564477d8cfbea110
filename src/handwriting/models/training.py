"""Training one model as the pipeline does: its settings from ``train.<arch>``, the fit, and
the MLflow run with the history, summary and model it writes. Used by the ``train@`` and
``tune@`` stages (neither imports the other)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handwriting import labels
from handwriting.datasets import write_json
from handwriting.keras_files import save_keras
from handwriting.models.fitting import (
    fine_tune,
    fit_model,
    load_subset,
    make_reproducible,
    mlflow_epoch_logger,
    summarise,
    write_history,
)
from handwriting.models.reference import ModelRef
from handwriting.params import Params, ParamsError

# Settings of the fit itself; every other key of train.<arch> goes to the model builder.
FIT_KEYS = ("epochs", "batch_size", "learning_rate", "optimizer", "fine_tune_blocks",
            "fine_tune_epochs")


def arch_settings(params: Params, arch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fit settings, builder hyperparameters) of ``train.<arch>``."""
    train = params.train or {}
    if arch not in train:
        raise ParamsError(f"params.yaml has no train.{arch} section; add one (see the other "
                          f"architectures) or remove {arch} from train.architectures")
    settings = dict(train[arch])
    fit = {key: settings.pop(key) for key in FIT_KEYS if key in settings}
    for key in ("epochs", "batch_size", "learning_rate"):
        if key not in fit:
            raise ParamsError(f"params.yaml: missing key 'train.{arch}.{key}'")
    fit.setdefault("optimizer", "adam")
    fit.setdefault("fine_tune_blocks", 0)
    fit.setdefault("fine_tune_epochs", 0)
    return fit, settings


def tracked_training(*, arch: str, variant: str, params: Params, fit_settings: dict[str, Any],
                     hparams: dict[str, Any], split_dir: Path, model_path: Path,
                     history_path: Path, metrics_path: Path,
                     train_fn: Callable[..., tuple[dict, list[dict]]] | None = None,
                     extra_params: dict[str, Any] | None = None,
                     extra_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build, train and save one model inside an MLflow run; write history and summary.

    ``train_fn(model, train, val, callbacks) -> (history, rows_to_report)`` replaces the plain
    fixed-epoch fit (the tuned variant uses early stopping).
    """
    import mlflow

    from handwriting import tracking
    from handwriting.models.zoo import build_with_info

    make_reproducible(params.base.seed, params.base.deterministic)
    train, val = load_subset(split_dir, "train"), load_subset(split_dir, "val")
    size = params.base.image_size
    model, info = build_with_info(arch, (size, size, 1), labels.NUM_CLASSES, **hparams)
    tracking.configure()
    with mlflow.start_run(run_name=str(ModelRef(arch, variant))) as run:
        mlflow.set_tags(tracking.run_tags(stage=f"{'train' if variant == 'untuned' else 'tune'}"
                                                f"@{arch}", architecture=arch, variant=variant,
                                          pretrained=info["pretrained"]))
        mlflow.log_params({**{f"fit.{k}": v for k, v in fit_settings.items()},
                           **{f"model.{k}": v for k, v in hparams.items()},
                           **(extra_params or {}),
                           "base.seed": params.base.seed, "base.image_size": size,
                           "data.train_images": len(train[0]), "data.val_images": len(val[0])})
        started = time.perf_counter()
        if train_fn is None:
            history = _fixed_epochs(model, fit_settings, train, val, params.base.seed,
                                    [mlflow_epoch_logger()])
            rows = write_history(history_path, history)
            reported = rows[-1]
        else:
            history, reported = train_fn(model, train, val, [mlflow_epoch_logger()])
            rows = write_history(history_path, history)
        seconds = time.perf_counter() - started
        summary = summarise(rows, reported, seconds=seconds, train_images=len(train[0]),
                            model=model, pretrained=info["pretrained"])
        summary.update(extra_summary or {})
        save_keras(model, model_path)
        write_json(metrics_path, summary)
        mlflow.log_metrics({"wall_seconds": seconds, "params": summary["params"],
                            "final_val_accuracy": summary["val_accuracy"]})
        mlflow.log_artifact(str(model_path), "model")
        mlflow.log_artifact(str(history_path), "history")
        mlflow.log_figure(_curves_figure(rows, f"{arch} ({variant})"), "curves.png")
        lines: list[str] = []
        model.summary(print_fn=lambda line, *_, **__: lines.append(line))
        mlflow.log_text("\n".join(lines), "model_summary.txt")
        print(f"{arch} {variant}: val_accuracy {summary['val_accuracy']:.3f} after "
              f"{summary['epochs']} epochs in {seconds:.0f} s (MLflow run {run.info.run_id})")
    return summary


def _fixed_epochs(model, fit_settings, train, val, seed, callbacks):
    common = dict(batch_size=int(fit_settings["batch_size"]),
                  optimizer=fit_settings["optimizer"],
                  learning_rate=float(fit_settings["learning_rate"]),
                  train=train, val=val, seed=seed, callbacks=callbacks)
    epochs = int(fit_settings["epochs"])
    history = fit_model(model, epochs=epochs, **common)
    if fit_settings["fine_tune_blocks"] and fit_settings["fine_tune_epochs"]:
        more = fine_tune(model, blocks=int(fit_settings["fine_tune_blocks"]),
                         epochs=int(fit_settings["fine_tune_epochs"]), start_epoch=epochs,
                         **common)
        history = {key: history[key] + more.get(key, []) for key in history}
    return history


def _curves_figure(rows: list[dict[str, float]], title: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.2))
    for axes, metric in zip(figure.subplots(1, 2), ("accuracy", "loss")):
        epochs = [row["epoch"] for row in rows]
        axes.plot(epochs, [row[metric] for row in rows], label="train")
        axes.plot(epochs, [row[f"val_{metric}"] for row in rows], label="validation")
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure
