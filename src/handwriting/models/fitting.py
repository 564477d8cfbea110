"""Feeding the split arrays to Keras, and the one training routine.

The training recipe of an architecture is a :class:`FitSettings` (``train.defaults`` merged with
``train.<arch>`` in params.yaml): optimizer and learning rate, label smoothing, a cosine
learning-rate schedule with linear warm-up, and fresh random variants of the training images in
every epoch (``augment_on_the_fly``), drawn with the augment stage's ranges and seeded by the
batch's position in the run, so the same seed gives the same batches.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.augmentation import AugmentSettings, augment_uint8, one_opencv_thread
from handwriting.models.engine import ENGINES, Engine, use_engine
from handwriting.models.features import FeatureCache, frozen_feature_split
from handwriting.params import ParamsError, invalid

OPTIMIZERS = ("adam", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class FitSettings:
    """How one model is trained: ``train.defaults`` merged with ``train.<arch>``
    (:func:`handwriting.models.training.arch_settings` builds it).

    The learning rate warms up linearly from 0 over ``warmup_epochs``, then stays
    (``lr_schedule`` "constant") or decays along a cosine to 0 at the last epoch ("cosine").
    ``augment_on_the_fly`` is the share of training images replaced, in every epoch, by a
    fresh random variant (0: off). ``engine`` is what computes the steps
    (:mod:`handwriting.models.engine`): it changes the speed, and the last bits of the
    weights, not the recipe.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    label_smoothing: float
    lr_schedule: str
    warmup_epochs: int
    augment_on_the_fly: float
    fine_tune_blocks: int
    fine_tune_epochs: int
    engine: str

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "warmup_epochs", "fine_tune_blocks",
                    "fine_tune_epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise invalid(self, key, "a whole number, 0 or more")
        if self.epochs < 1 or self.batch_size < 1:
            raise invalid(self, "epochs" if self.epochs < 1 else "batch_size", "at least 1")
        if not _is_number(self.learning_rate) or not self.learning_rate > 0:
            raise invalid(self, "learning_rate", "a number above 0")
        if self.optimizer not in OPTIMIZERS:
            raise invalid(self, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise invalid(self, "lr_schedule", f"one of {', '.join(LR_SCHEDULES)}")
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise invalid(self, "label_smoothing", "a number from 0 up to (not including) 1")
        if not _is_number(self.augment_on_the_fly) or not 0 <= self.augment_on_the_fly <= 1:
            raise invalid(self, "augment_on_the_fly", "a number from 0 to 1")
        if self.engine not in ENGINES:
            raise invalid(self, "engine", f"one of {', '.join(ENGINES)}")

    def replace(self, **changes: Any) -> FitSettings:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


FIT_KEYS = tuple(f.name for f in dataclasses.fields(FitSettings))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def load_subset(split_dir: Path, subset: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W], labels int [N]) of one subset written by the split stage."""
    from handwriting.datasets import load_arrays

    data = load_arrays(Path(split_dir) / subset, "images", "labels")
    return data["images"], data["labels"]


def fresh_variants(images: np.ndarray, share: float, settings: AugmentSettings,
                   seed: int, batch_number: int) -> np.ndarray:
    """The on-the-fly augmentation of one batch (uint8 [B, H, W]): each image is replaced by
    a random variant with probability ``share``. Seeded by (``seed``, ``batch_number``), so a
    run's n-th batch is the same in every run and different from every other batch."""
    rng = np.random.default_rng([seed, batch_number])
    out = images.copy()
    for row in np.flatnonzero(rng.random(len(images)) < share):
        out[row] = augment_uint8(images[row].astype(np.float32) / 255.0, rng, settings)
    return out


def make_dataset(images: np.ndarray, class_ids: np.ndarray, batch_size: int, *,
                 shuffle: bool, seed: int, augment: tuple[float, AugmentSettings] | None = None,
                 first_batch: int = 0):
    """A tf.data pipeline of (inputs in [0, 1] with a channel axis, one-hot labels).

    With ``augment = (share, ranges)`` the pipeline repeats for ever (give Keras
    ``steps_per_epoch``) and each batch goes through :func:`fresh_variants`, numbered from
    ``first_batch`` across epochs."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, class_ids))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def scale(batch_images, batch_labels):
        inputs = tf.cast(batch_images, tf.float32)[..., None] / 255.0
        return inputs, tf.one_hot(batch_labels, labels.NUM_CLASSES)

    if augment is None:
        dataset = dataset.batch(batch_size)
    else:
        share, ranges = augment

        def vary(number, batch):
            batch_images, batch_labels = batch
            varied = tf.numpy_function(
                lambda n, x: fresh_variants(x, share, ranges, seed, int(n) + first_batch),
                [number, batch_images], tf.uint8, stateful=False)
            return tf.ensure_shape(varied, batch_images.shape), batch_labels

        dataset = dataset.repeat().batch(batch_size).enumerate() \
            .map(vary, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def model_arrays(images: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, H, W] images, class ids) -> (float32 [N, H, W, 1] in [0, 1], one-hot labels),
    as :func:`make_dataset` scales them."""
    inputs = (images.astype(np.float32) / np.float32(255.0))[..., None]
    return inputs, np.eye(labels.NUM_CLASSES, dtype=np.float32)[class_ids]


def array_batches(images: np.ndarray, class_ids: np.ndarray, batch_size: int, *, seed: int,
                  augment: tuple[float, AugmentSettings] | None = None,
                  first_epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless NumPy batches of (inputs in [0, 1] with a channel axis, one-hot labels), epoch
    after epoch from ``first_epoch``: :func:`make_dataset`'s batches for engines that do not
    run on TensorFlow. Each epoch's order is a permutation seeded by (``seed``, epoch); with
    ``augment = (share, ranges)`` each batch goes through :func:`fresh_variants`, numbered
    across epochs as make_dataset numbers them. The next batch is made in a thread while the
    engine trains on this one (OpenCV releases Python's lock)."""
    count = len(images)
    steps = steps_per_epoch(count, batch_size)

    def make(rows: np.ndarray, number: int) -> tuple[np.ndarray, np.ndarray]:
        batch = images[rows]
        if augment is not None:
            batch = fresh_variants(batch, augment[0], augment[1], seed, number)
        return model_arrays(batch, class_ids[rows])

    def numbered_rows() -> Iterator[tuple[np.ndarray, int]]:
        for epoch in itertools.count(first_epoch):
            order = np.random.default_rng([seed, epoch]).permutation(count)
            for step in range(steps):
                yield order[step * batch_size:(step + 1) * batch_size], epoch * steps + step

    with ThreadPoolExecutor(max_workers=1) as pool:
        rows = numbered_rows()
        ahead = pool.submit(make, *next(rows))
        for following in rows:
            current, ahead = ahead, pool.submit(make, *following)
            yield current.result()


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


def make_optimizer(name: str, learning_rate):
    """Adam, SGD with momentum 0.9, or RMSprop; ``learning_rate`` may be a schedule."""
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def learning_rate_schedule(fit: FitSettings, steps_per_epoch: int):
    """The learning rate of ``fit`` over ``fit.epochs`` epochs of ``steps_per_epoch`` steps: a
    number (constant, no warm-up), else Keras's cosine schedule, whose linear warm-up leads
    to a cosine decay to 0, or to a constant rate (``alpha=1``: the decay ends where it
    starts)."""
    import keras

    if settable_learning_rate(fit):
        return fit.learning_rate
    warmup = _warmup_epochs(fit) * steps_per_epoch
    total = fit.epochs * steps_per_epoch
    alpha = 1.0 if fit.lr_schedule == "constant" else 0.0
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(fit.learning_rate, total)
    return keras.optimizers.schedules.CosineDecay(0.0, total - warmup, alpha=alpha,
                                                  warmup_target=fit.learning_rate,
                                                  warmup_steps=warmup)


def settable_learning_rate(fit: FitSettings) -> bool:
    """Whether ``fit`` trains at a plain number that a callback may change (a constant rate
    without warm-up); a schedule computes the rate from the step, and Keras refuses to set it
    (ReduceLROnPlateau then fails)."""
    return fit.lr_schedule == "constant" and _warmup_epochs(fit) == 0


def _warmup_epochs(fit: FitSettings) -> int:
    """The warm-up epochs ``fit`` gets: at most all but the last epoch."""
    return min(fit.warmup_epochs, fit.epochs - 1)


def compile_model(model, optimizer: str = "adam", learning_rate=1e-3,
                  label_smoothing: float = 0.0, jit_compile: bool = False,
                  steps_per_execution: int = 1) -> None:
    """Compile for 52-way classification: categorical cross-entropy (with optional label
    smoothing), accuracy; ``jit_compile``: the train step compiled with XLA, and
    ``steps_per_execution``: train steps per call (the engine's; see :func:`steps_per_call`)."""
    import keras

    model.compile(optimizer=make_optimizer(optimizer, learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)


def steps_per_call(engine: Engine, steps: int | None) -> int:
    """The train steps one call into the compiled function runs: the engine's, where the
    training data ends with each epoch (``steps`` None); else 1. On a repeated stream (the
    on-the-fly variants, with ``steps`` steps an epoch) Keras 3.15's TensorFlow trainer runs
    whole calls of steps, past the end of the epoch: 64 steps instead of 6 in a test."""
    return engine.steps_per_execution if steps is None else 1


def fit_model(model, fit: FitSettings, *, train: tuple[np.ndarray, np.ndarray],
              val: tuple[np.ndarray, np.ndarray], seed: int,
              augmentation: AugmentSettings | None = None, callbacks: list | None = None,
              cache: FeatureCache | None = None, verbose: int = 2,
              validation_freq: int = 1) -> dict[str, list[float]]:
    """Compile and train ``model`` for ``fit.epochs`` epochs; returns the Keras history
    (validated every ``validation_freq`` epochs).

    ``augmentation`` holds the ranges of the on-the-fly variants (needed when
    ``fit.augment_on_the_fly`` is above 0). A frozen VGG-16 base computes the same features in
    every epoch, so they are computed once (or taken from ``cache``) and only the head is
    trained on them: the same result, many times faster on a CPU (and no on-the-fly variants,
    whose features would differ in every epoch). Keras must run on ``fit.engine``'s backend
    (:func:`handwriting.models.engine.use_engine`).
    """
    engine = use_engine(fit.engine)
    import keras

    from handwriting.models.zoo import find_vgg_base

    callbacks = list(callbacks or [])
    learning_rate = learning_rate_schedule(fit, steps_per_epoch(len(train[0]), fit.batch_size))
    split = frozen_feature_split(model)
    if split is None:
        data, steps = _training_data(fit, train, seed, augmentation)
        compile_model(model, fit.optimizer, learning_rate, fit.label_smoothing,
                      engine.jit_compile, steps_per_call(engine, steps))
        # shuffle=False: the batches come shuffled (Keras cannot shuffle a generator).
        return model.fit(data, epochs=fit.epochs, steps_per_epoch=steps, shuffle=False,
                         validation_data=_validation_data(fit, val, seed),
                         validation_freq=validation_freq, verbose=verbose,
                         callbacks=callbacks).history
    if fit.augment_on_the_fly:
        raise ParamsError(f"augment_on_the_fly must be 0 for {model.name}: its frozen VGG-16 "
                          "base sees each image once (cached features); set "
                          f"train.{model.name}.augment_on_the_fly: 0")
    features, head = split
    cache = cache if cache is not None else FeatureCache()
    base = find_vgg_base(model)
    assert base is not None  # frozen_feature_split found it
    if cache.base_weights is None:
        cache.base_weights = base.get_weights()
    else:
        base.set_weights(cache.base_weights)
    compile_model(head, fit.optimizer, learning_rate, fit.label_smoothing, engine.jit_compile,
                  steps_per_call(engine, None))  # arrays: every epoch ends with the data
    return head.fit(cache.get(features, train[0], seed),
                    keras.utils.to_categorical(train[1], labels.NUM_CLASSES),
                    batch_size=fit.batch_size, epochs=fit.epochs, shuffle=True,
                    verbose=verbose, callbacks=callbacks, validation_freq=validation_freq,
                    validation_data=(cache.get(features, val[0], seed),
                                     keras.utils.to_categorical(val[1], labels.NUM_CLASSES))
                    ).history


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Batches in one epoch over ``images`` (the last one may be short)."""
    return math.ceil(images / batch_size)


def _training_data(fit: FitSettings, train: tuple[np.ndarray, np.ndarray], seed: int,
                   augmentation: AugmentSettings | None, first_epoch: int = 0):
    """(the training batches, the steps per epoch Keras must be told: None when the dataset
    ends with each epoch; on-the-fly variants repeat it, continuing at ``first_epoch``).

    TensorFlow engines read a tf.data pipeline (:func:`make_dataset`); JAX reads NumPy
    batches (:func:`array_batches`): through tf.data its steps ran at half the speed (each
    batch converted, and tf.data's threads competing with XLA's for the cores)."""
    images, class_ids = train
    augment: tuple[float, AugmentSettings] | None = None
    if fit.augment_on_the_fly:
        if augmentation is None:
            raise ValueError("augment_on_the_fly needs the augmentation ranges (params.augment)")
        augment = (fit.augment_on_the_fly, augmentation)
        one_opencv_thread()  # the variants are made beside the training steps
    if ENGINES[fit.engine].backend == "jax":
        return (array_batches(images, class_ids, fit.batch_size, seed=seed, augment=augment,
                              first_epoch=first_epoch),
                steps_per_epoch(len(images), fit.batch_size))
    if not fit.augment_on_the_fly:
        return make_dataset(images, class_ids, fit.batch_size, shuffle=True, seed=seed), None
    steps = steps_per_epoch(len(images), fit.batch_size)
    return make_dataset(images, class_ids, fit.batch_size, shuffle=True, seed=seed,
                        augment=augment, first_batch=first_epoch * steps), steps


def _validation_data(fit: FitSettings, val: tuple[np.ndarray, np.ndarray], seed: int):
    """The validation split as the engine reads it (see :func:`_training_data`)."""
    if ENGINES[fit.engine].backend == "jax":
        return model_arrays(*val)
    return make_dataset(val[0], val[1], fit.batch_size, shuffle=False, seed=seed)


def fine_tune(model, fit: FitSettings, *, start_epoch: int, train, val, seed: int,
              augmentation: AugmentSettings | None = None,
              callbacks: list | None = None) -> dict[str, list[float]]:
    """Unfreeze the top ``fit.fine_tune_blocks`` VGG blocks and train the whole model
    ``fit.fine_tune_epochs`` more epochs at a tenth of the learning rate, constant (small steps
    keep what the head learnt)."""
    from handwriting.models.zoo import unfreeze_top_vgg_blocks

    unfreeze_top_vgg_blocks(model, fit.fine_tune_blocks)
    engine = use_engine(fit.engine)
    data, steps = _training_data(fit, train, seed, augmentation, start_epoch)
    compile_model(model, fit.optimizer, fit.learning_rate / 10, fit.label_smoothing,
                  engine.jit_compile, steps_per_call(engine, steps))
    return model.fit(data, steps_per_epoch=steps, shuffle=False,
                     validation_data=_validation_data(fit, val, seed),
                     initial_epoch=start_epoch, epochs=start_epoch + fit.fine_tune_epochs,
                     verbose=2, callbacks=list(callbacks or [])).history
