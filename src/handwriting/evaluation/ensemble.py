"""The ensemble's definition, shared by the evaluate and export stages: which weights the
tuned models get in the soft vote."""

from __future__ import annotations

import json
from pathlib import Path

from handwriting.params import Params


def ensemble_weights(params: Params, train_metrics_dir: Path) -> list[float] | None:
    """The soft-vote weights of the tuned models, in ``train.architectures`` order: their
    validation accuracy (``evaluate.ensemble_weighting: val_accuracy``, the default), or None
    for equal weights. The export stage builds the same ensemble with them."""
    if (params.evaluate or {}).get("ensemble_weighting", "val_accuracy") != "val_accuracy":
        return None
    weights = []
    for arch in params.train["architectures"]:
        path = train_metrics_dir / f"{arch}-tuned.json"
        if not path.is_file():
            raise SystemExit(f"{path} is missing; run `dvc repro` to tune {arch}")
        weights.append(float(json.loads(path.read_text())["val_accuracy"]))
    return weights
