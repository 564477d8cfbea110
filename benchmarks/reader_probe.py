"""Reader probe: train one architecture with one training recipe on the pipeline's split and
print how well it reads real handwriting.

Trains on ``data/split/train`` (run ``dvc repro split`` first) with the fit settings of
``train.<arch>`` in params.yaml, overridden from the command line, validates on
``data/split/val``, and scores the EMNIST sample beside the repository (evaluation only:
never trained on): 52-class, case-insensitive and merged-37 accuracy. It also prints the
model's size, its cost in million multiply-adds per image and the training time, so design
choices (issue 13: the seventh architecture and the recipe options) are picked by measurement:

    python benchmarks/reader_probe.py --arch rescnn
    python benchmarks/reader_probe.py --arch rescnn --set width=32 --set label_smoothing=0.1 \\
        --set lr_schedule=cosine --set warmup_epochs=1 --set augment_on_the_fly=0.5
    python benchmarks/reader_probe.py --arch lenet5 --json probe.jsonl --label lenet5-seed

Every run is seeded and deterministic (``base.seed``, ``base.deterministic``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import yaml

from handwriting import labels
from handwriting.evaluation.crossdata import read_class_folder
from handwriting.evaluation.metrics import classification_metrics
from handwriting.keras_inference import keras_probabilities
from handwriting.models.fitting import fit_model, load_subset, make_reproducible
from handwriting.models.training import arch_settings, variant_ranges
from handwriting.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def _value(text: str):
    """A --set value as YAML reads it (numbers, booleans, words)."""
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="an architecture of the model zoo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of train.<arch> (fit setting or hyperparameter)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--split", type=Path, default=ROOT / "data/split")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/emnist-letters",
                        help="real handwriting in the upper/A ... lower/z layout")
    parser.add_argument("--json", type=Path, help="append the figures to this JSON-lines file")
    parser.add_argument("--label", default="", help="name of this run in the output")
    parser.add_argument("--save", type=Path, help="also save the trained model (.keras) here")
    args = parser.parse_args(argv)

    import keras

    from handwriting.models.cost import multiply_adds
    from handwriting.models.zoo import build

    params = load_params(args.params)
    overrides = dict(item.split("=", 1) for item in args.set)
    sections = {**params.train.sections, args.arch: {
        **params.train.sections.get(args.arch, {}), **{k: _value(v) for k, v in overrides.items()}}}
    params = dataclasses.replace(params, train=dataclasses.replace(params.train,
                                                                   sections=sections))
    fit, hparams = arch_settings(params.train, args.arch)
    if not args.real.is_dir():
        raise SystemExit(f"{args.real}: no real handwriting there; pass --real")
    real_images, real_ids, _ = read_class_folder(args.real, params.preprocessing)
    train, val = load_subset(args.split, "train"), load_subset(args.split, "val")

    make_reproducible(params.base.seed, params.base.deterministic)
    size = params.base.image_size
    model = build(args.arch, (size, size, 1), labels.NUM_CLASSES, **hparams)
    started = time.perf_counter()
    history = fit_model(model, fit, train=train, val=val, seed=params.base.seed,
                        augmentation=variant_ranges(params, fit), verbose=0,
                        callbacks=[keras.callbacks.LambdaCallback(
                            on_epoch_end=lambda e, logs: print(
                                f"  epoch {e + 1}: val_accuracy {logs['val_accuracy']:.3f}",
                                flush=True))])
    seconds = time.perf_counter() - started
    real = classification_metrics(
        real_ids, keras_probabilities(model, real_images / 255.0))
    result = {
        "label": args.label or args.arch, "arch": args.arch, "fit": vars(fit),
        "hparams": hparams, "params": int(model.count_params()),
        "mflops": round(multiply_adds(model) / 1e6, 2), "train_seconds": round(seconds, 1),
        "val_accuracy": round(float(history["val_accuracy"][-1]), 4),
        **{f"real_{key}": real[key] for key in
           ("accuracy", "case_insensitive_accuracy", "merged37_accuracy", "f1_macro")},
    }
    print(f"{result['label']}: val {result['val_accuracy']:.3f} | real 52-class "
          f"{result['real_accuracy']:.3f}, case-insensitive "
          f"{result['real_case_insensitive_accuracy']:.3f}, merged-37 "
          f"{result['real_merged37_accuracy']:.3f} | {result['params']} params, "
          f"{result['mflops']} M multiply-adds, trained in {seconds:.0f} s")
    if args.save:
        from handwriting.keras_files import save_keras

        save_keras(model, args.save)
    if args.json:
        with args.json.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
