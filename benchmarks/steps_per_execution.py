"""TensorFlow's train steps per call, side by side: one step per call (Keras's default) against
the TensorFlow engines' setting (``steps_per_execution`` in handwriting.models.engine).

TensorFlow pays a fixed cost for every call into the compiled train function (Python, the
call, the callbacks); with several steps per call it loops over them inside the graph. This
matters most where a step computes little: the VGG models' heads, which every VGG training
and tuning trial trains on cached frozen-base features, and small models trained on
TensorFlow. Each model below trains the way the pipeline trains it on TensorFlow (the
project's builder and ``compile_model``; a VGG model's head on features of its base's shape,
a whole model on ``make_dataset``'s tf.data batches), with op determinism on, once per
setting, the settings alternated for ``--rounds`` rounds in one process, so that the
machine's drift falls on both alike. Printed per model and setting: images/s of the epochs
after the first (validation included, as a fit runs it), and whether the trained weights are
bit-identical to one step per call (they must be: the same steps on the same batches).

    python benchmarks/steps_per_execution.py
    python benchmarks/steps_per_execution.py --arch vgg16_gru --images 22048 --rounds 3

Takes about 4 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time

import numpy as np

DEFAULT_ARCHS = ("vgg16", "vgg16_gru", "lenet5")


def train_once(arch: str, steps: int, images: int, epochs: int) -> tuple[float, str]:
    """(images/s of the epochs after the first, a digest of the trained weights)."""
    import keras

    from handwriting import labels
    from handwriting.models.engine import ENGINES
    from handwriting.models.features import frozen_feature_split
    from handwriting.models.fitting import compile_model, make_dataset, make_reproducible
    from handwriting.models.registry import has_frozen_base
    from handwriting.models.zoo import build

    engine = ENGINES["tensorflow"].at_steps_per_call(steps)
    make_reproducible(7, True)
    model = build(arch, (32, 32, 1), labels.NUM_CLASSES,  # a frozen base: no download
                  **({"weights": None} if has_frozen_base(arch) else {}))
    rng = np.random.default_rng(0)
    class_ids = np.arange(images) % labels.NUM_CLASSES
    split = frozen_feature_split(model)
    times: list[float] = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    if split is not None:  # the head, on features of the frozen base's shape
        _, trained = split
        features = rng.standard_normal((images, *trained.input.shape[1:])).astype(np.float32)
        targets = keras.utils.to_categorical(class_ids, labels.NUM_CLASSES)
        compile_model(trained, "adam", 1e-3, 0.0, engine.jit_compile, engine.steps_per_execution)
        trained.fit(features, targets, batch_size=32, epochs=epochs, shuffle=True, verbose=0,
                    validation_data=(features[:1024], targets[:1024]),
                    callbacks=[EpochClock()])
    else:
        trained = model
        pixels = rng.integers(0, 256, (images, 32, 32), dtype=np.uint8)
        compile_model(trained, "adam", 1e-3, 0.0, engine.jit_compile, engine.steps_per_execution)
        trained.fit(make_dataset(pixels, class_ids, 32, shuffle=True, seed=7), epochs=epochs,
                    validation_data=make_dataset(pixels[:1024], class_ids[:1024], 32,
                                                 shuffle=False, seed=7),
                    verbose=0, callbacks=[EpochClock()])
    # the comparison is what it says: TensorFlow's own kernels, at `steps` steps per call
    assert trained.steps_per_execution == steps and not trained.jit_compile
    digest = hashlib.sha256()
    for weights in trained.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return images / statistics.mean(times[1:]), digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    from handwriting.models.engine import TENSORFLOW_STEPS_PER_EXECUTION
    from handwriting.models.registry import has_frozen_base

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help=f"default: {', '.join(DEFAULT_ARCHS)}")
    parser.add_argument("--steps", type=int, action="append",
                        help="steps per call to compare with 1 (repeatable; default: the "
                             f"engines' {TENSORFLOW_STEPS_PER_EXECUTION})")
    parser.add_argument("--images", type=int, default=11_024, help="training images")
    parser.add_argument("--epochs", type=int, default=3, help="per fit (the first not timed)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the settings")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not timed")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = (1, *(args.steps or [TENSORFLOW_STEPS_PER_EXECUTION]))
    print(f"{args.images} images, batch 32, {args.epochs} epochs a fit (the first not timed), "
          f"{args.rounds} rounds alternated; images/s (median of the rounds), ratio to 1 step "
          "per call, weights against 1 step per call")
    for arch in args.arch or DEFAULT_ARCHS:
        speeds: dict[int, list[float]] = {steps: [] for steps in settings}
        digests: dict[int, set[str]] = {steps: set() for steps in settings}
        for _ in range(args.rounds):
            for steps in settings:
                speed, digest = train_once(arch, steps, args.images, args.epochs)
                speeds[steps].append(speed)
                digests[steps].add(digest)
        name = f"{arch} head" if has_frozen_base(arch) else arch
        one = statistics.median(speeds[1])
        for steps in settings:
            speed = statistics.median(speeds[steps])
            same = "bit-identical" if digests[steps] == digests[1] and len(digests[1]) == 1 \
                else f"DIFFERENT {sorted(digests[steps])} vs {sorted(digests[1])}"
            print(f"{name:<16} {steps:>4} steps/call {speed:>8,.0f} img/s {speed / one:>5.2f}x  "
                  f"{same}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
