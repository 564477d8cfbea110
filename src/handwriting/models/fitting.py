"""Feeding the split arrays to Keras, the one training routine, and per-epoch records."""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels

HISTORY_COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")
OPTIMIZERS = ("adam", "sgd", "rmsprop")


def load_subset(split_dir: Path, subset: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W], labels int [N]) of one subset written by the split stage."""
    from handwriting.datasets import load_arrays

    data = load_arrays(Path(split_dir) / subset, "images", "labels")
    return data["images"], data["labels"]


def make_dataset(images: np.ndarray, class_ids: np.ndarray, batch_size: int, *,
                 shuffle: bool, seed: int):
    """A tf.data pipeline of (inputs in [0, 1] with a channel axis, one-hot labels)."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, class_ids))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def scale(batch_images, batch_labels):
        inputs = tf.cast(batch_images, tf.float32)[..., None] / 255.0
        return inputs, tf.one_hot(batch_labels, labels.NUM_CLASSES)

    return dataset.batch(batch_size).map(scale, num_parallel_calls=tf.data.AUTOTUNE) \
        .prefetch(tf.data.AUTOTUNE)


def make_reproducible(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow with ``seed``; with ``deterministic``, also switch on
    TensorFlow's op determinism, so that the same data, settings and seed train bit-identical
    weights in every process (at some cost in speed: README, "Reproducibility"). Call it before
    building a model."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_optimizer(name: str, learning_rate: float):
    """Adam, SGD with momentum 0.9, or RMSprop."""
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def compile_model(model, optimizer: str = "adam", learning_rate: float = 1e-3) -> None:
    """Compile for 52-way classification: categorical cross-entropy, accuracy."""
    model.compile(optimizer=make_optimizer(optimizer, learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])


def frozen_feature_split(model):
    """(feature extractor, head) when the model starts with a frozen VGG-16 base, else None.

    The head shares its layers with ``model``: training the head trains the model.
    """
    import keras

    from handwriting.models.zoo import _find_vgg_base

    base = _find_vgg_base(model)
    if base is None or base.trainable:
        return None
    # Functional models list layers in graph order, and the VGG models are a chain after the
    # base: the next layer consumes the base's features.
    after_base = model.layers[model.layers.index(base) + 1]
    features = keras.Model(model.inputs, after_base.input, name=f"{model.name}_features")
    head = keras.Model(after_base.input, model.outputs, name=f"{model.name}_head")
    return features, head


@dataclass
class FeatureCache:
    """Frozen-base features computed once per image set and shared by every model fitted with
    this cache. The first model's base weights are copied into each later model, so the cached
    features are its own."""

    base_weights: list | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, features_model, images: np.ndarray, seed: int) -> np.ndarray:
        """The base's features of ``images``, computed on first request."""
        key = hashlib.blake2b(images.tobytes(), digest_size=16).hexdigest()
        if key not in self.features:
            print(f"computing frozen VGG-16 features once for {len(images)} images", flush=True)
            inputs = make_dataset(images, np.zeros(len(images), np.int64), 128, shuffle=False,
                                  seed=seed)
            self.features[key] = features_model.predict(inputs.map(lambda x, y: x), verbose=0)
        return self.features[key]


def fit_model(model, *, epochs: int, batch_size: int, optimizer: str, learning_rate: float,
              train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
              seed: int, callbacks: list | None = None, cache: FeatureCache | None = None,
              verbose: int = 2) -> dict[str, list[float]]:
    """Compile and train ``model``; returns the Keras history.

    A frozen VGG-16 base computes the same features in every epoch, so they are computed once
    (or taken from ``cache``) and only the head is trained on them: the same result, many
    times faster on a CPU.
    """
    import keras

    from handwriting.models.zoo import _find_vgg_base

    callbacks = list(callbacks or [])
    split = frozen_feature_split(model)
    if split is None:
        compile_model(model, optimizer, learning_rate)
        return model.fit(make_dataset(*train, batch_size, shuffle=True, seed=seed),
                         validation_data=make_dataset(*val, batch_size, shuffle=False, seed=seed),
                         epochs=epochs, verbose=verbose, callbacks=callbacks).history
    features, head = split
    cache = cache if cache is not None else FeatureCache()
    base = _find_vgg_base(model)
    if cache.base_weights is None:
        cache.base_weights = base.get_weights()
    else:
        base.set_weights(cache.base_weights)
    compile_model(head, optimizer, learning_rate)
    return head.fit(cache.get(features, train[0], seed),
                    keras.utils.to_categorical(train[1], labels.NUM_CLASSES),
                    batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose,
                    callbacks=callbacks,
                    validation_data=(cache.get(features, val[0], seed),
                                     keras.utils.to_categorical(val[1], labels.NUM_CLASSES))
                    ).history


def fine_tune(model, *, blocks: int, epochs: int, start_epoch: int, batch_size: int,
              optimizer: str, learning_rate: float, train, val, seed: int,
              callbacks: list | None = None) -> dict[str, list[float]]:
    """Unfreeze the top ``blocks`` VGG blocks and train the whole model ``epochs`` more epochs
    at a tenth of the learning rate (small steps keep what the head learnt)."""
    from handwriting.models.zoo import unfreeze_top_vgg_blocks

    unfreeze_top_vgg_blocks(model, blocks)
    compile_model(model, optimizer, learning_rate / 10)
    return model.fit(make_dataset(*train, batch_size, shuffle=True, seed=seed),
                     validation_data=make_dataset(*val, batch_size, shuffle=False, seed=seed),
                     initial_epoch=start_epoch, epochs=start_epoch + epochs, verbose=2,
                     callbacks=list(callbacks or [])).history


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


def summarise(rows: list[dict[str, float]], reported: dict[str, float], *, seconds: float,
              train_images: int, model, pretrained: bool) -> dict[str, Any]:
    """The training summary written to the DVC metrics: the figures of the ``reported`` epoch
    (the last, or the best one when early stopping restored it), the epochs run and costs."""
    return {
        "accuracy": reported["accuracy"], "loss": reported["loss"],
        "val_accuracy": reported["val_accuracy"], "val_loss": reported["val_loss"],
        "reported_epoch": int(reported["epoch"]), "epochs": len(rows),
        "wall_seconds": round(seconds, 1),
        "params": int(model.count_params()), "pretrained": pretrained,
        "images_per_second": round(train_images * len(rows) / max(seconds, 1e-9), 1),
    }
