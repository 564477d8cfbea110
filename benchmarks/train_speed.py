"""Training throughput of every architecture under every engine, side by side in one run.

For each architecture and each engine (``tensorflow-before``: Keras 3 on TensorFlow as the
pipeline trained until December 2026, its own kernels at one step per call; the pipeline's
engines ``tensorflow`` (32 steps per call where the data ends with each epoch),
``tensorflow-xla`` (named with ``--engines``) and ``jax``; PyTorch too when it is installed
and named with ``--engines``), a fresh process trains the model the way the
train stage does: the project's builder with its ``train.<arch>`` hyperparameters from
params.yaml, its fit recipe (batch size, optimizer, schedule, on-the-fly variants), the
pipeline's own ``fit_model`` and tf.data input, ``base.deterministic``'s determinism. The
images are seeded random letters (the cost of a step does not depend on what is drawn).

Printed per architecture and engine:

* images/s of a training epoch after the first (validation excluded; timed until its last
  step is done: JAX returns from a step before computing it), and the achieved
  GFLOP/s: images/s x 6 x the model's multiply-adds per image (forward 2 FLOPs per
  multiply-add, backward twice the forward), beside the machine's float32 matrix-product
  roofline measured in the same run (NumPy, 2048 x 2048);
* warm-up: the first epoch's extra time over a later one (tracing and compiling the step,
  which every pipeline fit and every tuning trial pays again);
* for the frozen-base VGG models, the one-off extraction of the base's features (images/s);
  the epochs then train the head on them, as the pipeline does.

The engines of one architecture run one after another, so drift of the machine's speed
(a fifth from hour to hour here) falls between architectures, not between the engines
compared. Run:

    python benchmarks/train_speed.py                      # all architectures, 3 engines
    python benchmarks/train_speed.py --arch lenet5 --arch gru --images 8192
    python benchmarks/train_speed.py --engines tensorflow-before,jax,torch --json speed.jsonl

The ratio printed is the best engine's over the first one named (by default
``tensorflow-before``: the issue's "today's TensorFlow figure"). Takes about 10 minutes on 2
cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The pipeline's TensorFlow until December 2026: its own kernels, one train step per call.
BEFORE = "tensorflow-before"
DEFAULT_ENGINES = (BEFORE, "tensorflow", "jax")
# Training FLOPs per multiply-add of the forward pass: 2 forward, 4 backward.
TRAIN_FLOPS_PER_MULTIPLY_ADD = 6


def roofline_gflops(side: int = 2048, repeats: int = 5) -> float:
    """The float32 matrix-product speed of this machine (NumPy's BLAS), GFLOP/s."""
    a = np.random.default_rng(0).random((side, side), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return repeats * 2 * side**3 / (time.perf_counter() - started) / 1e9


def before_engine():
    """The engine :data:`BEFORE`: the ``tensorflow`` engine at one step per call."""
    from handwriting.models.engine import ENGINES

    return ENGINES["tensorflow"].at_steps_per_call(1, name=BEFORE)


def child(arch: str, engine: str, images: int, epochs: int, params_path: Path) -> dict:
    """Train ``arch`` on ``engine`` in this process; the figures as a dict."""
    from handwriting.models.engine import ENGINES, use_engine

    if engine == BEFORE:  # known to this process only, for the fit settings and fit_model
        ENGINES.setdefault(BEFORE, before_engine())
    if engine in ENGINES:
        use_engine(engine)
    else:  # a Keras backend the pipeline does not train on (torch): measured as it comes
        os.environ["KERAS_BACKEND"] = engine
    import keras

    from handwriting import labels
    from handwriting.models.cost import multiply_adds
    from handwriting.models.features import FeatureCache, frozen_feature_split
    from handwriting.models.fitting import fit_model, make_reproducible
    from handwriting.models.training import arch_settings, variant_ranges
    from handwriting.models.zoo import build
    from handwriting.params import load_params

    params = load_params(params_path)
    fit, hparams = arch_settings(params.train, arch)
    fit = fit.replace(epochs=epochs, engine=engine if engine in ENGINES else fit.engine)
    if "weights" in hparams:
        hparams["weights"] = None  # no download: the base's speed is the same
    make_reproducible(0, params.base.deterministic)
    size = params.base.image_size
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (images, size, size), dtype=np.uint8),
             rng.integers(0, labels.NUM_CLASSES, images))
    val = (train[0][:256], train[1][:256])
    model = build(arch, (size, size, 1), labels.NUM_CLASSES, **hparams)
    result = {"arch": arch, "engine": engine, "backend": keras.backend.backend(),
              "multiply_adds": multiply_adds(model), "batch_size": fit.batch_size}
    cache = FeatureCache(folder=None)
    split = frozen_feature_split(model)
    # What an epoch trains: the head alone on a frozen base's cached features.
    trained = split[1] if split else model
    result["trained_multiply_adds"] = multiply_adds(trained)
    if split is not None:
        FeatureCache(folder=None).get(split[0], val[0][:32], 0)  # traces the extractor
        started = time.perf_counter()
        cache.get(split[0], train[0], 0)
        result["features_images_per_second"] = images / (time.perf_counter() - started)
        cache.get(split[0], val[0], 0)

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_test_begin(self, logs=None):  # validation is not training
            # JAX dispatches steps ahead of the computation: wait for the epoch's last step
            # (its weights), or a short epoch times the dispatch, not the training.
            keras.ops.convert_to_numpy(self.model.trainable_variables[0])
            self.seconds.append(time.perf_counter() - self.started)

    clock = EpochClock()
    fit_model(model, fit, train=train, val=val, seed=0, cache=cache, verbose=0,
              augmentation=variant_ranges(params, fit), callbacks=[clock])
    steady = float(np.median(clock.seconds[1:]))
    result["steps_per_execution"] = trained.steps_per_execution
    result["images_per_second"] = images / steady
    result["warmup_seconds"] = max(0.0, clock.seconds[0] - steady)
    return result


def run_child(arch: str, engine: str, args) -> dict | None:
    command = [sys.executable, __file__, "--child", "--arch", arch, "--engines", engine,
               "--images", str(args.images), "--epochs", str(args.epochs),
               "--params", str(args.params)]
    from children import json_from_child  # benchmarks/children.py, beside this script

    return json_from_child(command, f"{arch} on {engine}", REPO)


def main(argv: list[str] | None = None) -> int:
    from handwriting.models.registry import architectures
    from handwriting.params import load_params

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append",
                        help="only this architecture (repeatable; default: train.architectures)")
    parser.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                        help="comma-separated engines (default: %(default)s; torch is "
                             "measured too when installed)")
    parser.add_argument("--images", type=int, default=4096, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per run: the first is the warm-up (default 3)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--json", type=Path, help="also append every result to this JSONL")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    if args.epochs < 2:
        parser.error("--epochs must be 2 or more (the first is the warm-up)")
    if args.child:
        print(json.dumps(child(args.arch[0], engines[0], args.images, args.epochs,
                               args.params)), flush=True)
        return 0
    archs = args.arch or architectures(load_params(args.params).train)
    roofline = roofline_gflops()
    print(f"float32 matrix-product roofline (NumPy, 2048 x 2048): {roofline:.0f} GFLOP/s; "
          f"{os.cpu_count()} CPU cores; {args.images} random {args.params.name} letters per "
          "epoch\n")
    header = f"{'architecture':<12} {'MMAC':>7} " + " ".join(
        f"{engine:>24}" for engine in engines) + "   best (x first engine)"
    print(header)
    print(" " * 21 + " ".join(f"{'img/s  GFLOP/s  warm-up':>24}" for _ in engines))
    for arch in archs:
        results = {engine: run_child(arch, engine, args) for engine in engines}
        done = {e: r for e, r in results.items() if r}
        if args.json:
            with args.json.open("a", encoding="utf-8") as handle:
                for result in done.values():
                    handle.write(json.dumps({**result, "roofline_gflops": roofline}) + "\n")
        if not done:
            continue
        first = next(iter(done.values()))
        mmac = first["multiply_adds"] / 1e6
        trained_mmac = first.get("trained_multiply_adds", first["multiply_adds"]) / 1e6
        cells = []
        for engine in engines:
            r = results[engine]
            if r is None:
                cells.append(f"{'failed':>24}")
                continue
            gflops = r["images_per_second"] * TRAIN_FLOPS_PER_MULTIPLY_ADD * trained_mmac / 1e3
            cells.append(f"{r['images_per_second']:>7.0f} {gflops:>7.1f} "
                         f"{r['warmup_seconds']:>7.1f} s")
        # A frozen base's features cost the stage more than all its head's epochs together.
        speed = ("features_images_per_second" if "features_images_per_second" in first
                 else "images_per_second")
        best = max(done, key=lambda e: done[e][speed])
        line = f"{arch:<12} {mmac:>7.2f} " + " ".join(cells)
        if results[engines[0]]:
            ratio = done[best][speed] / results[engines[0]][speed]
            line += f"   {best} ({ratio:.2f}x)"
        print(line, flush=True)
        extraction = {e: r["features_images_per_second"] for e, r in done.items()
                      if "features_images_per_second" in r}
        if extraction:
            print(" " * 13 + "frozen-base features, once: " + ", ".join(
                f"{e} {v:.0f} img/s" for e, v in extraction.items()), flush=True)
    print("\nGFLOP/s = images/s x 6 x multiply-adds per image (training: forward 2 FLOPs per "
          "multiply-add, backward 4). The VGG rows train the head on cached features (GFLOP/s "
          "of the head) and are ranked by the one-off feature extraction, their larger cost.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
