"""The pipeline's whole untuned fit of each architecture on each engine, on the real split.

``benchmarks/train_speed.py`` measures a training epoch's steady speed on random images; this
measures what the ``engine`` setting changes for a train stage: each architecture's fit as
``train@<arch>`` runs it (params.yaml's epochs and recipe, the split's training images, the
validation split after every epoch, tracing and compiling included), one fresh process per
fit, timed from the call of the pipeline's ``fit_model`` until it returns (Keras returns the
history when the last step is done, on every backend). The VGG models' base is built without
its download (``weights: null``: the same cost) and its features are computed afresh, as in a
stage's first run.

The engines run in the order given, then reversed (jax, tensorflow, tensorflow, jax with
``--rounds 2``, the default), so a drift of the machine's speed during an architecture falls
on both alike. JAX loads steps compiled by an earlier run from its cache
(``$HANDWRITING_JAX_CACHE``; ``off`` measures it cold). Needs the split stage's output
(``dvc repro split``). Run:

    python benchmarks/fit_engines.py                          # all but the VGG models
    python benchmarks/fit_engines.py --arch rescnn --engines jax,tensorflow --rounds 3

Prints, per architecture, the seconds of every fit and each engine's mean over the first
engine's (above 1: the first engine is faster). About 20 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ENGINES = ("jax", "tensorflow")


def child(arch: str, engine: str, split_dir: Path, params_path: Path) -> dict:
    """Fit ``arch``'s untuned recipe on ``engine`` in this process; the figures as a dict."""
    from handwriting.models.engine import use_engine

    use_engine(engine)
    from handwriting import labels
    from handwriting.models.features import FeatureCache
    from handwriting.models.fitting import fit_model, load_subset, make_reproducible
    from handwriting.models.training import arch_settings, variant_ranges
    from handwriting.models.zoo import build
    from handwriting.params import load_params

    params = load_params(params_path)
    fit, hparams = arch_settings(params.train, arch)
    fit = fit.replace(engine=engine)
    if "weights" in hparams:
        hparams["weights"] = None  # no download: the base's cost is the same
    make_reproducible(params.base.seed, params.base.deterministic)
    train, val = load_subset(split_dir, "train"), load_subset(split_dir, "val")
    size = params.base.image_size
    model = build(arch, (size, size, 1), labels.NUM_CLASSES, **hparams)
    started = time.perf_counter()
    history = fit_model(model, fit, train=train, val=val, seed=params.base.seed, verbose=0,
                        augmentation=variant_ranges(params, fit),
                        cache=FeatureCache(folder=None))
    return {"arch": arch, "engine": engine, "seconds": time.perf_counter() - started,
            "epochs": len(history["loss"]), "train_images": len(train[0]),
            "val_accuracy": float(history["val_accuracy"][-1])}


def run_child(arch: str, engine: str, args) -> dict | None:
    """:func:`child` in a fresh process (a process trains on one Keras backend)."""
    command = [sys.executable, __file__, "--child", "--arch", arch, "--engines", engine,
               "--split", str(args.split), "--params", str(args.params)]
    from children import json_from_child  # benchmarks/children.py, beside this script

    return json_from_child(command, f"{arch} on {engine}", REPO)


def run_order(engines: list[str], rounds: int) -> list[str]:
    """The engines in order, then reversed, and so on for ``rounds`` rounds."""
    return [e for r in range(rounds) for e in (engines if r % 2 == 0 else engines[::-1])]


def main(argv: list[str] | None = None) -> int:
    from handwriting.models.registry import architectures, has_frozen_base
    from handwriting.params import load_params

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append",
                        help="only this architecture (repeatable; default: train.architectures "
                             "but the frozen-base VGG models)")
    parser.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                        help="comma-separated engines, the first the reference "
                             "(default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="fits per engine, in alternating order (default 2)")
    parser.add_argument("--split", type=Path, default=REPO / "data" / "split",
                        help="the split stage's output (default: data/split)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--json", type=Path, help="also append every fit to this JSONL")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    if args.child:
        print(json.dumps(child(args.arch[0], engines[0], args.split, args.params)), flush=True)
        return 0
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if not (args.split / "train").is_dir():
        parser.error(f"no training split in {args.split}: run `dvc repro split` first, or "
                     "name the split stage's output with --split")
    # A frozen VGG-16 base's features take minutes on JAX (train_speed.py measures them):
    # named with --arch only.
    archs = args.arch or [arch for arch in architectures(load_params(args.params).train)
                          if not has_frozen_base(arch)]
    print(f"whole untuned fits on {args.split} ({os.cpu_count()} CPU cores), seconds; order "
          f"per architecture: {', '.join(run_order(engines, args.rounds))}\n")
    for arch in archs:
        seconds: dict[str, list[float]] = {engine: [] for engine in engines}
        for engine in run_order(engines, args.rounds):
            result = run_child(arch, engine, args)
            if result is None:
                continue
            seconds[engine].append(result["seconds"])
            if args.json:
                with args.json.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(result) + "\n")
        means = {e: sum(s) / len(s) for e, s in seconds.items() if s}
        cells = [f"{e} " + (", ".join(f"{s:.1f}" for s in seconds[e]) or "failed")
                 for e in engines]
        reference = means.get(engines[0])
        ratios = [f"{e} / {engines[0]} {means[e] / reference:.2f}x" for e in engines[1:]
                  if reference and e in means]
        print(f"{arch:<12} " + "   ".join(cells + ratios), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
