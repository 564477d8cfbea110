"""Stage export: the champion's serving folder, ONNX exports of every tuned model, serving
figures, and the champion in the MLflow model registry.

* The champion is the one evaluate named in ``metrics/champion.json`` by the rule of
  :mod:`handwriting.evaluation.champion` (the best validation macro F1 within
  ``export.compute_budget_mflops``, counted from the model graph, so the choice never depends
  on the machine's load), with its "not sure" threshold.
* ``models/onnx/<arch>-tuned.onnx`` and ``.int8.onnx`` for every tuned model, and
  ``ensemble.onnx``, each checked against its Keras model on the test split (top-1
  agreement, largest probability gap) and timed end to end (the timings: below).
* ``models/serving/``: the champion's ONNX, int8 ONNX and Keras files with its preprocessing
  settings, labels and "not sure" threshold
  (:func:`handwriting.serving.predictor.write_serving_dir`).
* ``metrics/serving.json``: agreement, test accuracy of each variant and file sizes.
* Timings, in the MLflow run ``export`` and on the console, never in a DVC output (they differ
  on every run): single-image latency end to end (PNG bytes -> top-5, one thread; p50 and p99)
  of every export and batched throughput of the champion. Reported, never used to choose.
* The MLflow registry: a new version of ``export.registered_model`` (a pyfunc model carrying
  the serving folder); the ``champion`` alias moves to it only when its validation F1 is at
  least the current champion's (:func:`handwriting.evaluation.champion.should_move_alias`).
  Inside a ``dvc exp run`` the version gets the ``challenger`` alias instead, and
  ``handwriting promote`` makes it the champion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from handwriting.datasets import load_arrays, write_json
from handwriting.evaluation.champion import ENSEMBLE
from handwriting.evaluation.ensemble import EnsembleError
from handwriting.models.reference import ModelRef, tuned_names
from handwriting.models.registry import architectures
from handwriting.params import Params, ParamsError, load_params

CALIBRATION_IMAGES = 512


class DecisionError(ValueError):
    """The champion decision (metrics/champion.json) is missing, malformed, or names models
    that this params.yaml does not train."""


class MissingModelError(FileNotFoundError):
    """A tuned model that the export needs is not on disk."""


def read_decision(path: Path, params: Params) -> dict[str, Any]:
    """The champion decision evaluate wrote (metrics/champion.json), checked against the
    models this pipeline exports."""
    if not path.is_file():
        raise DecisionError(f"{path} is missing; run `dvc repro evaluate` (it names the "
                            "champion)")
    try:
        decision = json.loads(path.read_text(encoding="utf-8"))
        candidates, champion = decision["candidates"], decision["champion"]
        threshold = float(decision["unsure"]["threshold"])
    except (ValueError, KeyError, TypeError) as error:
        raise DecisionError(f"{path} is not a champion decision ({error}); run `dvc repro "
                            "-f evaluate` to write it again") from None
    expected = set(tuned_names(architectures(params.train)))
    if champion not in candidates or not set(candidates) - {ENSEMBLE} <= expected \
            or not 0.0 <= threshold <= 1.0:
        raise DecisionError(f"{path} names models ({', '.join(sorted(candidates))}) "
                            "that this params.yaml does not train, or a bad threshold; run `dvc "
                            "repro evaluate`")
    return decision


def run(params: Params, split_dir: Path, models_dir: Path, train_metrics_dir: Path,
        champion_path: Path, serving_dir: Path, onnx_dir: Path, metrics_path: Path, *,
        register: bool = True) -> dict[str, Any]:
    """Export and measure the champion evaluate named, export every tuned model, register the
    champion; returns what metrics/serving.json holds."""
    import keras

    from handwriting.evaluation.ensemble import build_soft_vote_ensemble, ensemble_weights
    from handwriting.serving import figures as measure
    from handwriting.serving.predictor import KERAS_FILE, write_serving_dir

    params.require("train", "evaluate", "export")
    decision = read_decision(champion_path, params)
    archs = architectures(params.train)
    val = load_arrays(split_dir / "val", "images", "labels")
    test = load_arrays(split_dir / "test", "images", "labels")
    test_inputs = test["images"].astype(np.float32) / 255.0
    files = measure.latency_pngs(test["images"], params.export.latency_calls)
    models: dict[str, Any] = {}
    exports: dict[str, Any] = {}
    latencies: dict[str, float] = {}  # end-to-end p50 (ms) of every export: a timing
    for reference in map(ModelRef.tuned, archs):
        key, path = str(reference), reference.path(models_dir)
        if not path.is_file():
            raise MissingModelError(f"{path} is missing; run `dvc repro` to tune "
                                    f"{reference.arch}")
        models[key] = keras.saving.load_model(path, compile=False)
        exports[key] = measure.export_and_check(models[key], key, onnx_dir, test_inputs)
        latencies[key] = measure.export_latency_ms(onnx_dir / f"{key}.onnx",
                                                   params.preprocessing, files)
    weights = None
    if ENSEMBLE in decision["candidates"]:
        weighting = params.evaluate.ensemble_weighting
        weights = ensemble_weights(weighting, archs, train_metrics_dir)
        models[ENSEMBLE] = build_soft_vote_ensemble([models[k] for k in tuned_names(archs)],
                                                    weights)
        exports[ENSEMBLE] = measure.export_and_check(models[ENSEMBLE], ENSEMBLE, onnx_dir,
                                                     test_inputs, int8=False)
        latencies[ENSEMBLE] = measure.export_latency_ms(onnx_dir / f"{ENSEMBLE}.onnx",
                                                        params.preprocessing, files)

    champion, threshold = decision["champion"], float(decision["unsure"]["threshold"])
    chosen = decision["candidates"][champion]
    _say_champion(decision, latencies[champion])
    description: dict[str, Any] = {"name": champion, "val_f1_macro": chosen["val_f1_macro"],
                                   "mflops": chosen["mflops"]}
    if champion == ENSEMBLE:
        description.update(members=tuned_names(archs),
                           weights=[round(w, 6) for w in (weights or [1.0] * len(archs))])
    calibration = val["images"][:CALIBRATION_IMAGES].astype(np.float32) / 255.0
    write_serving_dir(serving_dir, models[champion], params.preprocessing,
                      calibration_images=calibration, description=description,
                      unsure_threshold=threshold)
    figures: dict[str, Any] = {
        "champion": champion, "val_f1_macro": chosen["val_f1_macro"],
        "compute_budget_mflops": decision["compute_budget_mflops"],
        "unsure_threshold": threshold,
        "candidates": dict(sorted(decision["candidates"].items())),
        **measure.served_figures(serving_dir, models[champion], test_inputs, test["labels"]),
        "keras_mb": measure.size_mb(serving_dir / KERAS_FILE), "exports": exports,
    }
    write_json(metrics_path, figures)
    timings = {**measure.served_timings(serving_dir, test_inputs, files,
                                        params.export.throughput_batch),
               "exports": latencies}
    if register:
        _register(params, serving_dir, champion, chosen, files[0], figures, timings)
    return figures


def _say_champion(decision: dict[str, Any], latency_ms: float) -> None:
    champion = decision["champion"]
    chosen = decision["candidates"][champion]
    print(f"export: champion (named by evaluate): {champion} (validation F1 "
          f"{chosen['val_f1_macro']:.4f}, {chosen['mflops']:.2f} M multiply-adds, end to end "
          f"p50 {latency_ms:.3f} ms; not sure below {decision['unsure']['threshold']:.3f})",
          flush=True)
    if decision.get("fallback_to_cheapest"):
        print("export: WARNING: no candidate fits export.compute_budget_mflops = "
              f"{decision['compute_budget_mflops']}; serving the cheapest one", flush=True)


def _register(params: Params, serving_dir: Path, champion: str, chosen: dict[str, Any],
              example_png: bytes, figures: dict[str, Any], timings: dict[str, Any]) -> None:
    import mlflow

    from handwriting import tracking
    from handwriting.serving.pyfunc import ALIAS, CHALLENGER, register_champion

    tracking.configure()
    name = params.export.registered_model
    # The commit, the data and the DVC experiment (if any): on the run and on the registered
    # version.
    origin = {"git_commit": tracking.git_commit(), "data_version": tracking.data_version(),
              **tracking.experiment_tags()}
    experiment = origin.get("dvc_exp_name")
    with mlflow.start_run(run_name="export"):
        mlflow.set_tags({"stage": "export", "champion": champion, **origin})
        mlflow.log_params({"champion": champion, "registered_model": name})
        for variant in ("onnx", "int8"):
            part, timed = figures[variant], timings[variant]
            mlflow.log_metrics({
                f"{variant}_top1_agreement": part["top1_agreement"],
                f"{variant}_test_accuracy": part["test_accuracy"],
                f"{variant}_size_mb": part["size_mb"],
                f"{variant}_latency_p50_ms": timed["latency_end_to_end"]["p50_ms"],
                f"{variant}_latency_p99_ms": timed["latency_end_to_end"]["p99_ms"],
                f"{variant}_throughput_images_per_s": timed["throughput_images_per_s"],
            })
        mlflow.log_metrics({f"{key}.latency_p50_ms": value
                            for key, value in timings["exports"].items()})
        score = chosen["val_f1_macro"]
        mlflow.log_metrics({"val_f1_macro": score, "mflops": chosen["mflops"]})
        result = register_champion(
            serving_dir, name=name, champion=champion, score=score, example_image=example_png,
            mflops=chosen["mflops"], budget_mflops=figures["compute_budget_mflops"],
            latency_ms=timings["onnx"]["latency_end_to_end"]["p50_ms"],
            tags=origin, experiment=experiment)
    if experiment:
        print(f"export: registered {name} version {result.version} as '{CHALLENGER}' "
              f"(experiment {experiment}); '{ALIAS}' stays on version "
              f"{result.previous_version or 'none'}; `handwriting promote` serves this one",
              flush=True)
    elif result.alias_moved:
        print(f"export: registered {name} version {result.version}; alias '{ALIAS}' now "
              f"points to it (previous: {result.previous_version or 'none'})", flush=True)
    else:
        print(f"export: registered {name} version {result.version}; alias '{ALIAS}' stays on "
              f"version {result.previous_version} (validation F1 {result.previous_score:.4f} "
              f"> {score:.4f}); `handwriting promote --version {result.version}` serves "
              "this one instead",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, required=True, help="split array folder")
    parser.add_argument("--models", type=Path, required=True,
                        help="models/ folder (reads <arch>/tuned.keras)")
    parser.add_argument("--train-metrics", type=Path, required=True,
                        help="folder of the training summaries (ensemble weights)")
    parser.add_argument("--champion", type=Path, required=True,
                        help="champion.json written by evaluate (the champion to serve)")
    parser.add_argument("--serving", type=Path, required=True,
                        help="serving folder to write (the champion)")
    parser.add_argument("--onnx", type=Path, required=True,
                        help="folder for the ONNX exports of every tuned model")
    parser.add_argument("--metrics", type=Path, required=True, help="serving.json to write")
    parser.add_argument("--no-register", action="store_true",
                        help="skip the MLflow registry (the files are still written)")
    args = parser.parse_args(argv)
    try:
        run(load_params(args.params), args.split, args.models, args.train_metrics, args.champion,
            args.serving, args.onnx, args.metrics, register=not args.no_register)
    except (EnsembleError, ParamsError, DecisionError, MissingModelError) as error:
        raise SystemExit(f"export: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
