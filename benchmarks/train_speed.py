"""Training throughput (images/s) of every architecture on this machine's CPU.

Run: ``python benchmarks/train_speed.py [--size 32] [--images 2048] [--batch 32]
[--deterministic | --no-deterministic]``. For each architecture: one warm-up epoch (tracing),
then one timed epoch of ``model.fit`` on random images. For the VGG models it also times the
path the train stage uses: computing the frozen base's features once, then training the head
on them. ``--deterministic`` (the pipeline's default, ``base.deterministic``) switches on
TensorFlow's op determinism as the train stage does; run both to see its cost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import keras

    from handwriting import labels
    from handwriting.models.fitting import frozen_feature_split as _frozen_feature_split
    from handwriting.models.fitting import make_reproducible
    from handwriting.models.zoo import ARCHITECTURES, build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="image side (default 32)")
    parser.add_argument("--images", type=int, default=2048, help="images per epoch")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                        help="TensorFlow op determinism, as base.deterministic (default: on)")
    parser.add_argument("--arch", action="append", choices=ARCHITECTURES,
                        help="only this architecture (repeatable; default: all)")
    args = parser.parse_args()
    make_reproducible(0, args.deterministic)
    rng = np.random.default_rng(0)
    x = rng.random((args.images, args.size, args.size, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, labels.NUM_CLASSES, args.images),
                                   labels.NUM_CLASSES)
    print(f"{'architecture':<12} {'fit images/s':>13}   {args.size}x{args.size}, batch "
          f"{args.batch}, {args.images} images, deterministic: {args.deterministic}")
    for arch in args.arch or ARCHITECTURES:
        extra = {"weights": None} if arch.startswith("vgg") else {}
        model = build(arch, (args.size, args.size, 1), labels.NUM_CLASSES, **extra)
        model.compile("adam", "categorical_crossentropy")
        model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)
        started = time.perf_counter()
        model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)
        line = f"{arch:<12} {args.images / (time.perf_counter() - started):>13.0f}"
        split = _frozen_feature_split(model)
        if split is not None:
            features, head = split
            started = time.perf_counter()
            cached = features.predict(x, batch_size=128, verbose=0)
            extract = time.perf_counter() - started
            head.compile("adam", "categorical_crossentropy")
            head.fit(cached, y, batch_size=args.batch, epochs=1, verbose=0)
            started = time.perf_counter()
            head.fit(cached, y, batch_size=args.batch, epochs=1, verbose=0)
            line += (f"   cached features: extraction {args.images / extract:.0f} images/s "
                     f"(once), head {args.images / (time.perf_counter() - started):.0f} "
                     "images/s per epoch")
        print(line, flush=True)


if __name__ == "__main__":
    main()
