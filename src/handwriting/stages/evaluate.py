"""Stage evaluate: compare every model on the held-out test split, plus the ensemble.

For each architecture's untuned and tuned model, and for an ensemble of the tuned models
(soft voting, optionally weighted by validation accuracy, or hard voting): accuracy,
case-insensitive accuracy, macro and weighted precision/recall/F1, one-vs-rest ROC-AUC, log
loss, top-5 accuracy, calibration error, parameter count, file size and single-image latency of
the fast path. Writes the figures as DVC metrics, per-class reports, confusion records, ROC
curves, a comparison bar chart and table, explanation grids (Grad-CAM or saliency), galleries
of confident mistakes, the most confused pairs, and a cross-dataset evaluation on the external
datasets listed in ``evaluate.crossdata``; everything is also logged to an MLflow run.

It also names the champion, the model export serves, by the one rule of
:mod:`handwriting.evaluation.champion` (validation F1 within the compute budget), and writes
the choice with every candidate's figures to ``metrics/champion.json``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.datasets import load_arrays, write_csv, write_json
from handwriting.evaluation import champion as champion_policy
from handwriting.evaluation import ensemble as ensembles
from handwriting.evaluation.ensemble import EnsembleError
from handwriting.evaluation.metrics import (
    bootstrap_intervals,
    classification_metrics,
    confused_pairs,
    per_class_report,
)
from handwriting.models.reference import VARIANTS, ModelRef, tuned_names
from handwriting.params import Params, load_params

ROC_GRID = np.linspace(0.0, 1.0, 101)


def fast_predictor(model, image_size: int):
    """The model called as a compiled function: ~ms per image where ``model.predict`` costs
    ~100 ms of set-up on every call."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, image_size, image_size, 1), tf.float32)],
                 reduce_retracing=True)
    def predict(batch):
        return model(batch, training=False)

    return lambda batch: predict(tf.constant(batch, tf.float32)).numpy()


def median_latency_ms(predict_fns: list, image: np.ndarray, calls: int) -> float:
    """Median wall time (ms) of one single-image call through every function in turn."""
    batch = image[None, ..., None].astype(np.float32)
    for _ in range(5):  # warm-up: tracing and first-call allocations
        for fn in predict_fns:
            fn(batch)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        for fn in predict_fns:
            fn(batch)
        times.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(times), 4)


def predict_all(predict_fn, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities of uint8 images [N, S, S], batched."""
    outputs = [predict_fn(images[i:i + batch_size].astype(np.float32)[..., None] / 255.0)
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, labels.NUM_CLASSES))


def roc_curve_points(y_true: np.ndarray, probabilities: np.ndarray) -> list[tuple[float, float]]:
    """Micro-averaged one-vs-rest ROC curve, resampled on 101 false-positive rates."""
    from sklearn.metrics import roc_curve

    truth = np.zeros_like(probabilities, dtype=bool)
    truth[np.arange(len(y_true)), y_true] = True
    fpr, tpr, _ = roc_curve(truth.ravel(), probabilities.ravel())
    return [(round(float(x), 4), round(float(y), 6)) for x, y in
            zip(ROC_GRID, np.interp(ROC_GRID, fpr, tpr))]


def explanation_rows(y_true: np.ndarray, predicted: np.ndarray, seed: int,
                     count: int) -> np.ndarray:
    """A fixed sample of test rows, half of them misclassified when there are enough."""
    order = np.random.default_rng(seed).permutation(len(y_true))
    wrong = [i for i in order if predicted[i] != y_true[i]][: count // 2]
    right = [i for i in order if predicted[i] == y_true[i]][: count - len(wrong)]
    return np.array(sorted(right + wrong), dtype=np.int64)


def _report_table(rows: list[tuple[str, str, dict[str, Any]]], champion: str) -> str:
    """The seed's comparison table (model, variant, precision, recall, F1, ROC-AUC), extended."""
    lines = ["| model | variant | precision | recall | F1 (95 % CI) | ROC-AUC | "
             "accuracy (95 % CI) | case-insensitive accuracy | merged-37 accuracy | top-5 | "
             "latency (ms) | size (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, variant, m in rows:
        name = ModelRef.parse(key).arch if key != champion_policy.ENSEMBLE else key
        flags = " (pretrained: false)" if "vgg" in name and not m["pretrained"] else ""
        flags += " **champion**" if key == champion else ""
        lines.append(
            f"| {name}{flags} | {variant} | {m['precision_macro']:.3f} | "
            f"{m['recall_macro']:.3f} | {m['f1_macro']:.3f} "
            f"({m['f1_macro_ci95_low']:.3f}-{m['f1_macro_ci95_high']:.3f}) | "
            f"{m.get('roc_auc_ovr_macro', float('nan')):.3f} | {m['accuracy']:.3f} "
            f"({m['accuracy_ci95_low']:.3f}-{m['accuracy_ci95_high']:.3f}) | "
            f"{m['case_insensitive_accuracy']:.3f} | {m['merged37_accuracy']:.3f} | "
            f"{m['top5_accuracy']:.3f} | {m['latency_ms']:.2f} | {m['size_mb']:.2f} |")
    return "\n".join(lines) + "\n"


def _unsure_section(unsure: dict[str, Any]) -> str:
    """The report's lines on the champion's "not sure" threshold and what it does."""
    rows = "".join(f"| {name} | {e['unsure_share']:.3f} | {e['accuracy_answered']:.3f} | "
                   f"{e['accuracy_all']:.3f} |\n"
                   for name, e in unsure.items() if isinstance(e, dict))
    return (f"\n## The champion's \"not sure\" answers\n\nBelow a top-1 probability of "
            f"{unsure['threshold']:.3f} (it keeps {unsure['keep_correct']:.0%} of the correct "
            "validation answers, `export.unsure_keep_correct`) the served champion answers "
            "\"not sure this is a single letter\".\n\n"
            "| images | share unsure | accuracy of the answers given | accuracy without the "
            "threshold |\n|---|---|---|---|\n" + rows)


def choose_champion(params: Params, split_dir: Path, models: dict[str, Any],
                    predictors: dict[str, Any], weights: list[float] | None) -> dict[str, Any]:
    """Score the champion candidates (the tuned models and, with a soft vote, their ensemble)
    on the validation split, choose by :func:`handwriting.evaluation.champion.choose` and set
    its "not sure" threshold; returns what metrics/champion.json holds."""
    from handwriting.models.cost import mega_multiply_adds

    val = load_arrays(split_dir / "val", "images", "labels")
    tuned = tuned_names(params.train["architectures"])
    probabilities = {key: predict_all(predictors[key], val["images"]) for key in tuned}
    mflops = {key: mega_multiply_adds(models[key]) for key in tuned}
    if ensembles.settings(params.evaluate)[0] == "soft":
        probabilities[champion_policy.ENSEMBLE] = ensembles.soft_vote(
            [probabilities[key] for key in tuned], weights)
        mflops[champion_policy.ENSEMBLE] = round(sum(mflops[key] for key in tuned), 3)
    candidates = {key: champion_policy.Candidate(
        val_f1_macro=classification_metrics(val["labels"], probs)["f1_macro"],
        mflops=mflops[key]) for key, probs in probabilities.items()}
    choice = champion_policy.choose(candidates, params.export.compute_budget_mflops)
    print(f"evaluate: champion: {choice.describe(candidates)}", flush=True)
    keep = params.export.unsure_keep_correct
    threshold = champion_policy.unsure_threshold(val["labels"], probabilities[choice.champion],
                                                 keep)
    unsure = {"threshold": threshold, "keep_correct": keep,
              "val": champion_policy.unsure_effect(val["labels"],
                                                   probabilities[choice.champion], threshold)}
    return {**choice.as_dict(candidates), "unsure": unsure}


def run(params: Params, split_dir: Path, models_dir: Path, train_metrics_dir: Path,
        metrics_path: Path, crossdata_path: Path, report_path: Path, per_class_dir: Path,
        confused_path: Path, plots_dir: Path, champion_path: Path) -> dict[str, Any]:
    """Evaluate every model and the ensemble; write every output; returns evaluate.json."""
    import keras
    import mlflow

    from handwriting import tracking
    from handwriting.evaluation.crossdata import read_class_folder
    from handwriting.evaluation.explain import explanation_grid
    from handwriting.evaluation.galleries import mistake_gallery
    from handwriting.models.zoo import is_pretrained

    settings = params.evaluate or {}
    archs = params.train["architectures"]
    size = params.base.image_size
    calls = int(settings.get("latency_calls", 200))
    test = load_arrays(split_dir / "test", "images", "labels")
    images, y_true = test["images"], test["labels"]
    inputs01 = images.astype(np.float32) / 255.0
    if plots_dir.exists():
        shutil.rmtree(plots_dir)  # nothing stale from models no longer listed
    for sub in ("confusion", "roc", "explain", "mistakes", "crossdata"):
        (plots_dir / sub).mkdir(parents=True, exist_ok=True)
    per_class_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {}
    probabilities: dict[str, np.ndarray] = {}
    predictors: dict[str, Any] = {}
    pretrained: dict[str, bool] = {}
    models: dict[str, Any] = {}
    for arch in archs:
        results[arch] = {}
        for variant in VARIANTS:
            reference = ModelRef(arch, variant)
            key, path = str(reference), reference.path(models_dir)
            if not path.is_file():
                raise SystemExit(f"evaluate: {path} is missing; run `dvc repro` to train it")
            model = keras.models.load_model(path)
            models[key] = model
            predictors[key] = fast_predictor(model, size)
            probabilities[key] = predict_all(predictors[key], images)
            figures = classification_metrics(y_true, probabilities[key])
            figures.update(bootstrap_intervals(y_true, probabilities[key],
                                               seed=params.base.seed))
            figures.update(params=int(model.count_params()),
                           size_mb=round(path.stat().st_size / 2**20, 3),
                           latency_ms=median_latency_ms([predictors[key]], inputs01[0], calls),
                           pretrained=int(is_pretrained(model)))
            pretrained[arch] = bool(figures["pretrained"]) or "vgg" not in arch
            results[arch][variant] = figures
            print(f"evaluate: {key}: accuracy {figures['accuracy']:.3f}, case-insensitive "
                  f"{figures['case_insensitive_accuracy']:.3f}, merged-37 "
                  f"{figures['merged37_accuracy']:.3f}, {figures['latency_ms']:.2f} ms/image",
                  flush=True)

    tuned = tuned_names(archs)
    kind, _ = ensembles.settings(settings)
    weights = ensembles.ensemble_weights(params, train_metrics_dir)

    def vote(probs: list[np.ndarray]) -> np.ndarray:
        return ensembles.vote(kind, probs, weights)

    probabilities["ensemble"] = vote([probabilities[k] for k in tuned])
    ensemble = classification_metrics(y_true, probabilities["ensemble"])
    ensemble.update(bootstrap_intervals(y_true, probabilities["ensemble"],
                                        seed=params.base.seed))
    ensemble.update(params=sum(results[a]["tuned"]["params"] for a in archs),
                    size_mb=round(sum(results[a]["tuned"]["size_mb"] for a in archs), 3),
                    latency_ms=median_latency_ms([predictors[k] for k in tuned], inputs01[0],
                                                 max(20, calls // 4)),
                    pretrained=int(all(pretrained.values())), members=len(tuned))
    results["ensemble"] = ensemble
    print(f"evaluate: ensemble: accuracy {ensemble['accuracy']:.3f}", flush=True)

    decision = choose_champion(params, split_dir, models, predictors, weights)
    champion, threshold = decision["champion"], decision["unsure"]["threshold"]
    decision["unsure"]["test"] = champion_policy.unsure_effect(y_true, probabilities[champion],
                                                               threshold)
    write_json(metrics_path, results)

    pairs_rows = []
    comparison_rows = []
    for key, probs in probabilities.items():
        predicted = probs.argmax(axis=1)
        write_csv(per_class_dir / f"{key}.csv", ["class", "precision", "recall", "f1", "support"],
                  [list(row.values()) for row in per_class_report(y_true, predicted)])
        write_csv(plots_dir / "confusion" / f"{key}.csv", ["actual", "predicted"],
                  [(labels.char_of(a), labels.char_of(p)) for a, p in zip(y_true, predicted)])
        pairs_rows += [(key, p["actual"], p["predicted"], p["count"],
                        int(p["same_letter_other_case"]))
                       for p in confused_pairs(y_true, predicted, top=10)]
        mistake_gallery(images, y_true, probs, plots_dir / "mistakes" / f"{key}.png",
                        title=f"{key}: most confident mistakes (true → predicted)")
        if key.endswith("-tuned") or key == "ensemble":
            write_csv(plots_dir / "roc" / f"{key}.csv", ["fpr", "tpr"],
                      roc_curve_points(y_true, probs))
        ref = None if key == champion_policy.ENSEMBLE else ModelRef.parse(key)
        figures = ensemble if ref is None else results[ref.arch][ref.variant]
        comparison_rows.append((key, round(figures["accuracy"], 4),
                                round(figures["case_insensitive_accuracy"], 4),
                                round(figures["merged37_accuracy"], 4),
                                round(figures["f1_macro"], 4)))
        if key in models:
            rows = explanation_rows(y_true, predicted, params.base.seed,
                                    int(settings.get("explain_samples", 12)))
            explanation_grid(models[key], inputs01[rows], y_true[rows],
                             plots_dir / "explain" / f"{key}.png",
                             title=f"{key}: what the model looks at")
    write_csv(confused_path, ["model", "actual", "predicted", "count", "same_letter_other_case"],
              pairs_rows)
    write_csv(plots_dir / "comparison.csv",
              ["model", "accuracy", "case_insensitive_accuracy", "merged37_accuracy", "f1_macro"],
              comparison_rows)
    table_rows = [(str(ModelRef(a, v)), v, results[a][v]) for a in archs for v in VARIANTS]
    table_rows.append(("ensemble", f"{kind} vote of the tuned",
                       ensemble))
    report = ("# Model comparison on the held-out test split\n\n"
              f"{len(y_true)} test images (originals only, never augmented); F1 and accuracy "
              "with their 95 % bootstrap interval (1,000 resamples of the test images): "
              "differences inside the intervals are not differences. "
              f"The champion, served by `export`: **{champion}** (the best validation macro F1 "
              "within `export.compute_budget_mflops`; `metrics/champion.json`).\n\n" +
              _report_table(table_rows, champion))
    if not all(pretrained.values()):
        report += ("\nVGG rows marked `pretrained: false` started from random weights (the "
                   "ImageNet weights could not be loaded): they are not transfer-learning "
                   "results.\n")

    crossdata = {}
    for folder in settings.get("crossdata", []) or []:
        root = tracking.resolve(folder)
        if not root.is_dir():
            print(f"evaluate: cross-dataset {folder} not found, skipped", file=sys.stderr)
            continue
        name = root.name
        x, y, skipped = read_class_folder(root, params.preprocessing)
        print(f"evaluate: cross-dataset {name}: {len(x)} images ({len(skipped)} skipped)",
              flush=True)
        member_probs = {key: predict_all(predictors[key], x) for key in tuned}
        member_probs["ensemble"] = vote(list(member_probs.values()))
        crossdata[name] = {"images": len(x), "skipped": len(skipped)}
        decision["unsure"][name] = champion_policy.unsure_effect(y, member_probs[champion],
                                                                 threshold)
        for key, probs in member_probs.items():
            m = classification_metrics(y, probs)
            crossdata[name][key] = {k: m[k] for k in ("accuracy", "case_insensitive_accuracy",
                                                      "merged37_accuracy", "f1_macro",
                                                      "top5_accuracy")}
        write_csv(plots_dir / "crossdata" / f"{name}.csv", ["actual", "predicted"],
                  [(labels.char_of(a), labels.char_of(p))
                   for a, p in zip(y, member_probs["ensemble"].argmax(axis=1))])
        report += (f"\n## Cross-dataset: {name} ({len(x)} images)\n\n"
                   "| model | accuracy | case-insensitive accuracy | merged-37 accuracy | "
                   "macro F1 | top-5 |\n|---|---|---|---|---|---|\n" +
                   "".join(f"| {k}{' **champion**' if k == champion else ''} | "
                           f"{v['accuracy']:.3f} | {v['case_insensitive_accuracy']:.3f} | "
                           f"{v['merged37_accuracy']:.3f} | "
                           f"{v['f1_macro']:.3f} | {v['top5_accuracy']:.3f} |\n"
                           for k, v in crossdata[name].items() if isinstance(v, dict)))
    if not crossdata:
        print("evaluate: no external dataset found in evaluate.crossdata; cross-dataset "
              "evaluation skipped", flush=True)
    write_json(crossdata_path, {"datasets": len(crossdata), **crossdata})
    write_json(champion_path, decision)
    report += _unsure_section(decision["unsure"])
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report, encoding="utf-8")

    tracking.configure()
    with mlflow.start_run(run_name="evaluate"):
        mlflow.set_tags({**tracking.run_tags(stage="evaluate", architecture="all",
                                             variant="evaluate",
                                             pretrained=all(pretrained.values())),
                         "champion": champion})
        flat = {f"{key}.{name}": value for key, figures in
                [(str(ModelRef(a, v)), results[a][v]) for a in archs for v in VARIANTS] +
                [("ensemble", ensemble)] for name, value in figures.items()}
        flat.update({f"crossdata.{d}.{k}.{n}": v for d, models_ in crossdata.items()
                     for k, m in models_.items() if isinstance(m, dict) for n, v in m.items()})
        mlflow.log_metrics(flat)
        mlflow.log_artifact(str(report_path))
        mlflow.log_artifact(str(metrics_path))
        mlflow.log_artifact(str(crossdata_path))
        mlflow.log_artifact(str(champion_path))
        mlflow.log_artifacts(str(plots_dir), "plots")
    print(f"evaluate: champion {champion}; report in {report_path}")
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, required=True, help="split array folder")
    parser.add_argument("--models", type=Path, required=True, help="models/ folder")
    parser.add_argument("--train-metrics", type=Path, required=True,
                        help="folder of the training summaries (validation accuracy)")
    parser.add_argument("--metrics", type=Path, required=True, help="evaluate.json to write")
    parser.add_argument("--crossdata", type=Path, required=True, help="crossdata.json")
    parser.add_argument("--report", type=Path, required=True, help="comparison report (.md)")
    parser.add_argument("--per-class", type=Path, required=True, help="per-class CSV folder")
    parser.add_argument("--confused", type=Path, required=True, help="confused pairs CSV")
    parser.add_argument("--plots", type=Path, required=True, help="plots folder to write")
    parser.add_argument("--champion", type=Path, required=True,
                        help="champion.json to write (the choice and every candidate)")
    args = parser.parse_args(argv)
    try:
        run(load_params(args.params), args.split, args.models, args.train_metrics, args.metrics,
            args.crossdata, args.report, args.per_class, args.confused, args.plots, args.champion)
    except EnsembleError as error:
        raise SystemExit(f"evaluate: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
