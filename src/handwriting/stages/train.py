"""Stage train@<arch>: train one architecture with its untuned (seed-default) settings.

Reads the split arrays, builds the model from the zoo with the ``train.<arch>`` params (over
``train.defaults``), trains it with that recipe (the seed's six: Adam, categorical
cross-entropy, constant learning rate) for a fixed number of epochs (no early stopping), and
writes the model, its per-epoch history (a DVC plot) and a summary (DVC metrics). Every run is
tracked in MLflow: params, per-epoch metrics, tags and artifacts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from handwriting.models.training import arch_settings, tracked_training
from handwriting.params import ParamsError, load_params


def run(arch: str, params_path: Path, split_dir: Path, model_path: Path, history_path: Path,
        metrics_path: Path) -> dict[str, Any]:
    """Train ``arch`` untuned and write its model, history and summary; returns the summary."""
    params = load_params(params_path)
    fit_settings, hparams = arch_settings(params.train, arch)
    return tracked_training(arch=arch, variant="untuned", params=params,
                            fit_settings=fit_settings, hparams=hparams, split_dir=split_dir,
                            model_path=model_path, history_path=history_path,
                            metrics_path=metrics_path)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="architecture (a train.<arch> section)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, required=True, help="split array folder")
    parser.add_argument("--model", type=Path, required=True, help=".keras model to write")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV to write")
    parser.add_argument("--metrics", type=Path, required=True, help="summary JSON to write")
    args = parser.parse_args(argv)
    try:
        run(args.arch, args.params, args.split, args.model, args.history, args.metrics)
    except ParamsError as error:
        raise SystemExit(f"train: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
