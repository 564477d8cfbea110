"""Per-epoch records of a training run: the MLflow callback, the history CSV files that
``dvc plots`` draws, and the summary written to the DVC metrics."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

HISTORY_COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")


def mlflow_epoch_logger():
    """A Keras callback that logs every epoch's metrics to the active MLflow run."""
    import keras
    import mlflow

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            finite = {k: float(v) for k, v in (logs or {}).items()
                      if isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))}
            mlflow.log_metrics(finite, step=epoch + 1)

    return MlflowEpochLogger()


def write_history(path: Path, history: dict[str, list[float]]) -> list[dict[str, float]]:
    """Write the per-epoch history as CSV (epoch from 1); returns the rows."""
    epochs = len(history.get("loss", []))
    rows = [{"epoch": epoch + 1, **{name: round(float(history[name][epoch]), 6)
                                    for name in HISTORY_COLUMNS[1:] if name in history}}
            for epoch in range(epochs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def read_history(path: Path) -> dict[str, list[float]]:
    """A history CSV written by :func:`write_history`, back in Keras's shape (no epoch
    column)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no epochs; run the stage that writes it again")
    try:
        return {key: [float(row[key]) for row in rows] for key in rows[0] if key != "epoch"}
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a history written by the train stage ({error}); run "
                         "the stage that writes it again") from None


def summarise(rows: list[dict[str, float]], reported: dict[str, float], *, model,
              pretrained: bool) -> dict[str, Any]:
    """The training summary written to the DVC metrics: the figures of the ``reported`` epoch
    (the last, or the best one when early stopping restored it), the epochs run and the model's
    size. No timings: they differ on every run, so they go to the MLflow run instead, and
    ``dvc metrics diff`` between two identical runs prints nothing."""
    return {
        "accuracy": reported["accuracy"], "loss": reported["loss"],
        "val_accuracy": reported["val_accuracy"], "val_loss": reported["val_loss"],
        "reported_epoch": int(reported["epoch"]), "epochs": len(rows),
        "params": int(model.count_params()), "pretrained": pretrained,
    }
