"""Stage evaluate: compare every model on the held-out test split, plus the ensemble.

For each architecture's untuned and tuned model, and for an ensemble of the tuned models
(soft voting, optionally weighted by validation accuracy, or hard voting): accuracy,
case-insensitive accuracy, macro and weighted precision/recall/F1, one-vs-rest ROC-AUC, log
loss, top-5 accuracy, calibration error, parameter count, multiply-adds per image and file
size. Writes the figures as DVC metrics, per-class reports, confusion records, ROC
curves, a comparison bar chart and table, explanation grids (Grad-CAM or saliency), galleries
of confident mistakes, the most confused pairs, and a cross-dataset evaluation on the external
datasets listed in ``evaluate.crossdata``. The MLflow run ``evaluate`` holds the files and
plots, and a child run per model (tagged ``variant`` untuned | tuned | ensemble) its figures
under the same names, so the UI compares them, with its single-image latency on the fast path
(a timing: it differs on every run, so it stays out of the DVC metrics, and ``dvc metrics
diff`` of two identical runs prints nothing).

Each architecture's tuning gain, tuned minus untuned, is computed from the two model files'
predictions: the accuracy gain on the validation split, the test split and every cross-dataset
set, each with a paired-bootstrap 95 % interval (the same resampled images for both models,
seeded by ``base.seed``), and the test macro-F1 gain as a point. It goes to evaluate.json
(``<arch>.tuning_gain``), a table in the report and a bar chart of the points.

It also names the champion, the model export serves, by the one rule of
:mod:`handwriting.evaluation.champion` (validation F1 within the compute budget), and writes
the choice with every candidate's figures to ``metrics/champion.json``. The work is done by
:mod:`handwriting.evaluation.comparison`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from handwriting.datasets import load_arrays, write_json
from handwriting.evaluation import champion as champion_policy
from handwriting.evaluation import comparison, report
from handwriting.evaluation import ensemble as ensembles
from handwriting.evaluation.ensemble import EnsembleError
from handwriting.models.reference import ModelRef
from handwriting.models.registry import architectures
from handwriting.params import Params, ParamsError, load_params

PLOT_FOLDERS = ("confusion", "roc", "explain", "mistakes", "crossdata")


def run(params: Params, split_dir: Path, models_dir: Path, train_metrics_dir: Path,
        metrics_path: Path, crossdata_path: Path, report_path: Path, per_class_dir: Path,
        confused_path: Path, plots_dir: Path, champion_path: Path) -> dict[str, Any]:
    """Evaluate every model and the ensemble; write every output; returns evaluate.json."""
    params.require("train", "evaluate", "export")
    settings = params.evaluate
    archs = architectures(params.train)
    calls = settings.latency_calls
    test = load_arrays(split_dir / "test", "images", "labels")
    images, y_true = test["images"], test["labels"]
    if plots_dir.exists():
        shutil.rmtree(plots_dir)  # nothing stale from models no longer listed
    for sub in PLOT_FOLDERS:
        (plots_dir / sub).mkdir(parents=True, exist_ok=True)
    per_class_dir.mkdir(parents=True, exist_ok=True)

    scores = comparison.score_models(params, models_dir, images, y_true, calls)
    kind = settings.ensemble
    weights = ensembles.ensemble_weights(settings.ensemble_weighting, archs, train_metrics_dir)
    comparison.score_ensemble(params, scores, images, y_true, calls, kind, weights)
    decision = comparison.choose_champion(params, split_dir, scores, weights, kind)
    champion = decision["champion"]
    decision["unsure"]["test"] = champion_policy.unsure_effect(
        y_true, scores.probabilities[champion], decision["unsure"]["threshold"])
    comparison.write_model_files(
        scores, images, y_true, seed=params.base.seed,
        explain_samples=settings.explain_samples, plots_dir=plots_dir,
        per_class_dir=per_class_dir, confused_path=confused_path)
    crossdata = comparison.score_crossdata(params, scores, settings, weights, decision,
                                           plots_dir)
    gains = comparison.tuning_gains(scores, archs, y_true, seed=params.base.seed)
    comparison.write_tuning_gain_plot(gains, plots_dir)
    for arch, gain in gains.items():
        scores.results[arch]["tuning_gain"] = gain
    write_json(metrics_path, scores.results)
    write_json(crossdata_path, {"datasets": len(crossdata), **crossdata})
    write_json(champion_path, decision)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(
        report.comparison_report(scores, archs, len(y_true), kind, champion)
        + report.tuning_gain_section(gains)
        + "".join(report.crossdata_section(name, figures, champion)
                  for name, figures in crossdata.items())
        + report.unsure_section(decision["unsure"]), encoding="utf-8")
    _log_run(scores, archs, crossdata, champion,
             [report_path, metrics_path, crossdata_path, champion_path], plots_dir)
    print(f"evaluate: champion {champion}; report in {report_path}")
    return scores.results


def _log_run(scores: comparison.Scores, archs: list[str], crossdata: dict[str, Any],
             champion: str, files: list[Path], plots_dir: Path) -> None:
    """One MLflow run ``evaluate`` with the files and plots, and a child run per model (every
    architecture's untuned and tuned model, and the ensemble), tagged with its architecture and
    ``variant`` (untuned | tuned | ensemble) and holding its figures under the same names, so
    the UI compares them side by side: the test figures, ``latency_ms``,
    ``<dataset>.<figure>`` on each cross-dataset set, and on a tuned model its tuning gain
    (``tuning_gain.<figure>``)."""
    import mlflow

    from handwriting import tracking

    tracking.configure()
    with mlflow.start_run(run_name="evaluate"):
        mlflow.set_tags({**tracking.run_tags(stage="evaluate", architecture="all",
                                             variant="evaluate",
                                             pretrained=all(scores.pretrained.values())),
                         "champion": champion})
        for path in files:
            mlflow.log_artifact(str(path))
        mlflow.log_artifacts(str(plots_dir), "plots")
        for key in [*comparison.model_names(archs), champion_policy.ENSEMBLE]:
            ensemble = key == champion_policy.ENSEMBLE
            ref = None if ensemble else ModelRef.parse(key)
            figures = {**scores.figures(key), "latency_ms": scores.latency_ms[key]}
            figures.update({f"{name}.{figure}": value for name, models in crossdata.items()
                            for figure, value in (models.get(key) or {}).items()})
            if ref is not None and ref.variant == "tuned":
                figures.update({f"tuning_gain.{name}": value for name, value in
                                scores.results[ref.arch]["tuning_gain"].items()})
            with mlflow.start_run(run_name=key, nested=True):
                mlflow.set_tags({
                    **tracking.run_tags(
                        stage="evaluate", architecture="ensemble" if ref is None else ref.arch,
                        variant="ensemble" if ref is None else ref.variant,
                        pretrained=bool(scores.figures(key)["pretrained"])),
                    "model": key, "champion": str(key == champion).lower()})
                mlflow.log_metrics(figures)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, required=True, help="split array folder")
    parser.add_argument("--models", type=Path, required=True, help="models/ folder")
    parser.add_argument("--train-metrics", type=Path, required=True,
                        help="folder of the training summaries (the ensemble's weights)")
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
    except (EnsembleError, ParamsError, FileNotFoundError) as error:
        raise SystemExit(f"evaluate: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
