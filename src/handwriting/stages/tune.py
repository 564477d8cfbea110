"""Stage tune@<arch>: a successive-halving search whose winner is a fully trained model.

``tune.n_trials`` configurations of the architecture's search space (``tune.<arch>``; drawn by
the seeded ``tune.sampler``: tpe, random or grid) start on a small share of the training split
for a few epochs; each rung keeps the best ``1 / tune.reduction`` of its challengers (and any
within ``tune.tie_se`` standard errors of the last one kept) and trains them on
``tune.reduction`` times the data (and more epochs), up to the top rung: all the training data
for the untuned model's epochs, with early stopping on validation loss (best epoch restored)
and learning-rate reduction on plateaus.
Configuration 0, the untuned settings, takes part at every rung; at the top it is the untuned
model itself. The tuned model is the top rung's best, so it is never worse than the untuned
one on validation; when the untuned settings win, the tuned model is the untuned one and the
metrics say ``winner: untuned-settings``.

Every trial's score is drawn by ``dvc plots`` (``plots/tune/<arch>-rungs.csv``: one bar per
configuration and rung), and the metrics give the Spearman rank correlation of the scores of
the configurations two neighbouring rungs share: how well a cheap rung predicts the next.

On the JAX engine the stage trains several trials at once, each on a thread of its own: one
per core (at most 4), or ``$HANDWRITING_TRIALS_AT_ONCE`` (1: one at a time). A small model's
step leaves a core idle that a second trial fills; the trials, their scores and every output
are the same whatever the number, so it is an environment variable, not a param.

MLflow gets a parent run per search and a nested run per trial. With ``tune.workers`` > 1 the
lower rungs run in that many worker processes sharing one Optuna study (``tune.storage``, or a
temporary SQLite file); ``--worker`` runs one such worker, also on another machine against a
shared PostgreSQL storage (README, "Tuning on several machines"). Every output is written only
once the whole stage has succeeded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from handwriting.datasets import write_csv, write_json
from handwriting.models.engine import use_engine
from handwriting.models.history import read_history
from handwriting.models.search import (
    UNTUNED,
    SearchError,
    best_epoch,
    chosen_settings,
    search,
    tune_settings,
    work,
)
from handwriting.models.search.workers import AT_ONCE_ENV
from handwriting.models.training import arch_settings, tracked_training
from handwriting.params import ParamsError, load_params

RUNG_COLUMNS = ("trial", "rung", "configuration", "val_accuracy", "promoted", "share",
                "epochs")


def rung_rows(rungs: list[dict[str, Any]]) -> list[tuple]:
    """The rows of ``plots/tune/<arch>-rungs.csv``: per rung and configuration, its label for
    the bar chart, the rung, the configuration, its validation accuracy, whether it was
    promoted (1/0), and the rung's share of the data and epochs."""
    rows = []
    for rung in rungs:
        for cid, score in sorted(rung["scores"].items(), key=lambda item: int(item[0])):
            name = "untuned" if int(cid) == UNTUNED else f"config-{cid}"
            up = int(cid) in rung["promoted"]
            rows.append((f"rung {rung['index']} ({rung['share']:.0%} of the data for "
                         f"{rung['epochs']} epochs): {name}{' (promoted)' if up else ''}",
                         rung["index"], name, score, int(up), round(rung["share"], 6),
                         rung["epochs"]))
    return rows


def rank_correlations(rungs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Spearman's rank correlation between the scores of each pair of neighbouring rungs
    (``"0-1"``, ``"1-2"``, ...), over the configurations both scored; None where they share
    fewer than three (too few to rank)."""
    from scipy.stats import spearmanr

    found: dict[str, float | None] = {}
    for low, high in zip(rungs, rungs[1:]):
        both = sorted(set(low["scores"]) & set(high["scores"]), key=int)
        value = None
        if len(both) >= 3:
            rho = spearmanr([low["scores"][c] for c in both],
                            [high["scores"][c] for c in both]).statistic
            value = None if rho != rho else round(float(rho), 6)  # NaN: all scores tied
        found[f"{low['index']}-{high['index']}"] = value
    return found


def run(arch: str, params_path: Path, split_dir: Path, untuned_model: Path,
        untuned_history: Path, untuned_metrics: Path, best_params_path: Path,
        model_path: Path, history_path: Path, metrics_path: Path,
        rungs_path: Path) -> dict[str, Any]:
    """Search, then write the winner as the tuned model; returns its summary."""
    params = load_params(params_path)
    tune_settings(params.tune, arch)  # bad settings are named before anything runs
    use_engine(arch_settings(params.train, arch)[0].engine)  # before Keras is first imported
    import keras

    for path in (untuned_model, untuned_history, untuned_metrics):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the search starts from the untuned "
                                    f"model; run `dvc repro train@{arch}` first")
    untuned = json.loads(untuned_metrics.read_text(encoding="utf-8"))
    try:  # read before the search: a bad file fails now, not after it
        untuned_epochs = read_history(untuned_history)
    except ValueError as error:
        raise SearchError(f"{error} (`dvc repro -f train@{arch}`)") from None
    with tempfile.TemporaryDirectory(prefix=f"tune-{arch}-") as scratch:
        result = search(arch, params, split_dir, untuned_val_accuracy=untuned["val_accuracy"],
                        scratch=Path(scratch), params_path=params_path)
        fit, hparams = chosen_settings(params, arch, result.config)
        weights = Path(scratch) / f"config-{result.winner}.weights.h5"
        if result.winner == UNTUNED:  # the untuned model of train@<arch> itself
            keras.models.load_model(untuned_model).save_weights(str(weights))
            history = untuned_epochs
            reported = {"epoch": len(history["loss"]), **{k: v[-1] for k, v in history.items()}}
        else:  # a top-rung trial left its best epoch's weights and its history
            history = json.loads(weights.with_name(f"config-{result.winner}.history.json")
                                 .read_text(encoding="utf-8"))
            reported = best_epoch(history)

        def adopt(model, train, val, callbacks):
            model.load_weights(str(weights))
            return history, reported

        summary = tracked_training(
            arch=arch, variant="tuned", params=params, fit_settings=fit, hparams=hparams,
            split_dir=split_dir, model_path=model_path, history_path=history_path,
            metrics_path=metrics_path, train_fn=adopt,
            extra_params={f"best.{k}": v for k, v in result.config.items()},
            extra_summary={"winner": result.winner_name, "chosen": result.config,
                           "untuned_val_accuracy": untuned["val_accuracy"],
                           "tuning_gain_val_accuracy": round(
                               result.val_accuracy - untuned["val_accuracy"], 6),
                           "configurations": len(result.rungs[0]["scores"]),
                           "top_rung_configurations": len(result.rungs[-1]["scores"]),
                           "rung_rank_correlation": rank_correlations(result.rungs),
                           "trials": sum(result.trials.values()),
                           **{f"trials_{k}": v for k, v in result.trials.items()}})
    write_json(best_params_path, {"winner": result.winner_name, "settings": result.config})
    write_csv(rungs_path, RUNG_COLUMNS, rung_rows(result.rungs))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(
        prog="python -m handwriting.stages.tune", description=__doc__.split("\n\n")[0],
        epilog=f"environment: {AT_ONCE_ENV}=N trains N trials at a time on the JAX engine "
               "(default: one per core, at most 4; the outputs are the same for every N)")
    parser.add_argument("--arch", required=True, help="architecture (a tune.<arch> space)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, required=True, help="split array folder")
    parser.add_argument("--untuned-model", type=Path, help="train@<arch>'s .keras (read)")
    parser.add_argument("--untuned-history", type=Path, help="its per-epoch CSV (read)")
    parser.add_argument("--untuned-metrics", type=Path, help="its summary JSON (read)")
    parser.add_argument("--best-params", type=Path, help="JSON to write: the winner")
    parser.add_argument("--model", type=Path, help="tuned .keras to write")
    parser.add_argument("--history", type=Path, help="per-epoch CSV to write")
    parser.add_argument("--metrics", type=Path, help="summary JSON to write")
    parser.add_argument("--rungs", type=Path,
                        help="CSV to write: every configuration's score at every rung")
    worker = parser.add_argument_group(
        "worker mode", "join a running search instead: run its queued trials")
    worker.add_argument("--worker", action="store_true",
                        help="run queued trials of --arch's search in --storage, then exit")
    worker.add_argument("--storage", help="the search's Optuna RDB URL (tune.storage)")
    worker.add_argument("--follow", action="store_true",
                        help="keep waiting for queued trials until the search is finished")
    worker.add_argument("--threads", type=int, default=0,
                        help="CPU threads for this worker on a TensorFlow engine (0: "
                             "TensorFlow's default)")
    args = parser.parse_args(argv)
    try:
        if args.worker:
            if not args.storage:
                parser.error("--worker needs --storage (the URL in tune.storage)")
            params = load_params(args.params)
            use_engine(arch_settings(params.train, args.arch)[0].engine)  # before TensorFlow: it
            if args.threads:                                        # imports Keras
                import tensorflow as tf

                tf.config.threading.set_intra_op_parallelism_threads(args.threads)
                tf.config.threading.set_inter_op_parallelism_threads(args.threads)
            ran = work(args.arch, params, args.split, args.storage, follow=args.follow)
            print(f"tune worker: {ran} trial(s) of {args.arch} run", flush=True)
            return 0
        paths = [args.untuned_model, args.untuned_history, args.untuned_metrics,
                 args.best_params, args.model, args.history, args.metrics, args.rungs]
        if any(path is None for path in paths):
            parser.error("the stage needs --untuned-model, --untuned-history, "
                         "--untuned-metrics, --best-params, --model, --history, --metrics "
                         "and --rungs")
        run(args.arch, args.params, args.split, *paths)
    except (ParamsError, SearchError, FileNotFoundError) as error:
        raise SystemExit(f"tune: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
