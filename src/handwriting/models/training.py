"""Training one model as the pipeline does: its settings from ``train.<arch>``, the fit, and
the MLflow run with the history, summary and model it writes. Used by the ``train@`` and
``tune@`` stages (neither imports the other)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.augmentation import AugmentSettings
from handwriting.datasets import write_json
from handwriting.keras_files import save_keras
from handwriting.models.engine import use_engine
from handwriting.models.fitting import (
    FIT_KEYS,
    FitSettings,
    fine_tune,
    fit_model,
    load_subset,
    make_reproducible,
)
from handwriting.models.history import mlflow_epoch_logger, summarise, write_history
from handwriting.models.reference import ModelRef
from handwriting.params import Params, ParamsError, Train, build_section


def arch_settings(train: Train | None, arch: str) -> tuple[FitSettings, dict[str, Any]]:
    """(fit settings, builder hyperparameters) of ``arch``: the fit keys (:data:`FIT_KEYS`)
    of ``train.defaults`` overridden by ``train.<arch>``; every other key of ``train.<arch>``
    goes to the model builder."""
    section = None if train is None else train.sections.get(arch)
    if train is None or not isinstance(section, dict):
        raise ParamsError(f"params.yaml has no train.{arch} section; add one (see the other "
                          f"architectures) or remove {arch} from train.architectures")
    if set(train.defaults) - set(FIT_KEYS):
        raise ParamsError("params.yaml: train.defaults may only hold fit settings "
                          f"({', '.join(FIT_KEYS)}); got {train.defaults!r}")
    settings = dict(section)
    fit = {**train.defaults, **{key: settings.pop(key) for key in FIT_KEYS if key in settings}}
    return build_section(FitSettings, fit, f"train.{arch}", missing_hint=(
        "; set it in train.defaults or in the architecture's section")), settings


def variant_ranges(params: Params, fit: FitSettings) -> AugmentSettings | None:
    """The ranges of ``fit``'s on-the-fly variants (the ``augment`` params), if it has any."""
    return AugmentSettings.from_params(params) if fit.augment_on_the_fly else None


def tracked_training(*, arch: str, variant: str, params: Params, fit_settings: FitSettings,
                     hparams: dict[str, Any], split_dir: Path, model_path: Path,
                     history_path: Path, metrics_path: Path,
                     train_fn: Callable[..., tuple[dict, dict]] | None = None,
                     extra_params: dict[str, Any] | None = None,
                     extra_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build, train and save one model inside an MLflow run; write history and summary.

    ``train_fn(model, train, val, callbacks) -> (history, row_to_report)`` replaces the plain
    fixed-epoch fit (the tuned variant adopts its search's winner). ``extra_summary`` adds to
    or replaces the summary's figures. The run logs the model as an MLflow model
    (:func:`log_keras_model`), the history, the curves and the timings.
    """
    use_engine(fit_settings.engine)  # before Keras is first imported
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
        mlflow.log_params({**{f"fit.{k}": v for k, v in vars(fit_settings).items()},
                           **{f"model.{k}": v for k, v in hparams.items()},
                           **(extra_params or {}),
                           "base.seed": params.base.seed, "base.image_size": size,
                           **{f"preprocess.{k}": v for k, v in vars(params.preprocess).items()},
                           **{f"augment.{k}": v for k, v in vars(params.augment).items()},
                           "keras.backend": keras_backend(),
                           "data.train_images": len(train[0]), "data.val_images": len(val[0])})
        started = time.perf_counter()
        if train_fn is None:
            history = _fixed_epochs(model, fit_settings, train, val, params,
                                    [mlflow_epoch_logger()])
            rows = write_history(history_path, history)
            reported: dict[str, float] = rows[-1]
        else:
            history, reported = train_fn(model, train, val, [mlflow_epoch_logger()])
            rows = write_history(history_path, history)
        seconds = time.perf_counter() - started
        summary = summarise(rows, reported, model=model, pretrained=info["pretrained"])
        summary.update(extra_summary or {})
        save_keras(model, model_path)
        write_json(metrics_path, summary)
        # Timings go to the run, not to the DVC metrics: they differ on every run.
        timings = {"wall_seconds": seconds}
        if train_fn is None:  # a fit here (a tuned model adopts weights the search trained)
            timings["images_per_second"] = len(train[0]) * len(rows) / max(seconds, 1e-9)
        mlflow.log_metrics({**timings, "params": summary["params"],
                            "final_val_accuracy": summary["val_accuracy"]})
        log_keras_model(model, val[0][:1])
        mlflow.log_artifact(str(history_path), "history")
        mlflow.log_figure(_curves_figure(rows, f"{arch} ({variant})"), "curves.png")
        lines: list[str] = []
        model.summary(print_fn=lambda line, *_, **__: lines.append(line))
        mlflow.log_text("\n".join(lines), "model_summary.txt")
        print(f"{arch} {variant}: val_accuracy {summary['val_accuracy']:.3f} after "
              f"{summary['epochs']} epochs in {seconds:.0f} s (MLflow run {run.info.run_id})")
    return summary


def log_keras_model(model, example: np.ndarray) -> None:
    """Log ``model`` in the active MLflow run as the MLflow model ``model`` (Keras flavour), so
    the UI's Models view lists it beside its run: its signature (``image``: float32
    [N, S, S, 1] in [0, 1], ink bright, as the shared preprocessing gives; ``probabilities``:
    float32 [N, 52] in :data:`handwriting.labels.CLASSES` order), ``example`` (uint8 images
    [N, S, S] of the validation split) as its input example, and the library versions it
    needs, pinned to this environment."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    size = int(model.inputs[0].shape[1])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, size, size, 1), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, labels.NUM_CLASSES),
                                   "probabilities")]))
    mlflow.models.Model.log(artifact_path=None, name="model", flavor=_KerasFlavor,
                            keras_model=model, signature=signature,
                            input_example=example[..., None].astype(np.float32) / 255.0,
                            pip_requirements=_keras_requirements())


class _KerasFlavor:
    """``mlflow.keras`` as :meth:`mlflow.models.Model.log` calls it, with the model folder made
    first: ``mlflow.keras.save_model`` writes the input example before it creates the folder
    and fails (mlflow/mlflow#16183, still open in MLflow 3.17)."""

    @staticmethod
    def save_model(path: str, keras_model, **kwargs: Any) -> None:
        import mlflow

        Path(path).mkdir(parents=True, exist_ok=True)
        mlflow.keras.save_model(keras_model, path, **kwargs)


def _keras_requirements() -> list[str]:
    """Keras and its backend at this environment's versions (what loading the model needs)."""
    from handwriting import tracking

    backend = keras_backend()
    return tracking.pinned(["keras", "numpy",
                            {"jax": "jax", "torch": "torch"}.get(backend, "tensorflow")])


def keras_backend() -> str:
    """The Keras backend of this process (logged with every training run)."""
    import keras

    return keras.backend.backend()


def _fixed_epochs(model, fit: FitSettings, train, val, params: Params, callbacks):
    common = dict(train=train, val=val, seed=params.base.seed, callbacks=callbacks,
                  augmentation=variant_ranges(params, fit))
    history = fit_model(model, fit, **common)
    if fit.fine_tune_blocks and fit.fine_tune_epochs:
        more = fine_tune(model, fit, start_epoch=fit.epochs, **common)
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
