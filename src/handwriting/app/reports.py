"""The evaluation results the Models page shows, read from the pipeline's outputs.

* ``metrics/evaluate.json``: ``{arch: {"untuned": {...}, "tuned": {...}}, "ensemble": {...}}``;
* ``metrics/comparison.md``: the comparison table;
* ``plots/history/<arch>-<variant>.csv``: training curves (epoch, accuracy, val_accuracy,
  loss, val_loss);
* ``plots/evaluate/confusion/<model>.csv``: one ``actual,predicted`` row per test image;
* ``plots/evaluate/{explain,mistakes}/<model>.png``: explanation grids and mistake galleries.

Missing files are not errors here: readers return None and the page says to run ``dvc repro``.
A file that exists but cannot be understood raises :class:`ReportError` naming it.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import labels
from handwriting.models.reference import VARIANTS, ModelRef
from handwriting.models.registry import in_study_order
from handwriting.params import Evaluate


def describe(arch: str) -> str:
    """What an architecture is, for people: the first two paragraphs of its builder's docstring
    in the model zoo (one description, kept with the code that builds it), as Markdown."""
    import inspect

    from handwriting.models.zoo import ARCHITECTURES

    builder = ARCHITECTURES.get(arch)
    doc = inspect.getdoc(builder) if builder is not None else None
    if not doc:
        return f"{arch}: an architecture the model zoo does not describe."
    text = " ".join(" ".join(paragraph.split()) for paragraph in doc.split("\n\n")[:2])
    return re.sub(r":\w+:`~?([\w.]+)`", r"`\1`", text).replace("``", "`")


def ensemble_description(settings: Evaluate | None) -> str:
    """What the evaluated ensemble is, from params.yaml's ``evaluate`` section (None: it has
    none)."""
    if settings is None:
        return "The ensemble of the tuned models (params.yaml has no evaluate section)."
    vote = ("Soft vote (the average of their probabilities)" if settings.ensemble == "soft"
            else "Hard vote (the majority of their top letters)")
    weights = ("weighted by their validation accuracy"
               if settings.ensemble_weighting == "val_accuracy" else "with equal weights")
    return (f"{vote} of the tuned models, {weights} (`evaluate.ensemble` and "
            "`evaluate.ensemble_weighting` in params.yaml).")


# The figures shown first, in this order; any others follow.
MAIN_FIGURES = ("accuracy", "case_insensitive_accuracy", "merged37_accuracy", "f1_macro",
                "top5_accuracy", "mflops", "params", "size_mb", "pretrained")
HISTORY_COLUMNS = ("epoch", "accuracy", "val_accuracy", "loss", "val_loss")


class ReportError(ValueError):
    """A results file that exists but cannot be read; the message names it and the fix."""


def _broken(path: Path, problem: str) -> ReportError:
    return ReportError(f"{path}: {problem}; run `dvc repro` to write it again")


def load_evaluation(metrics_dir: Path) -> dict[str, Any] | None:
    """``metrics/evaluate.json``, or None when it is missing."""
    path = metrics_dir / "evaluate.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise _broken(path, f"not valid JSON ({error})") from None
    if not isinstance(results, dict):
        raise _broken(path, "expected a JSON object of architectures")
    return results


def model_figures(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"lenet5-untuned": figures, ..., "ensemble": figures}`` from evaluate.json's nesting."""
    rows: dict[str, dict[str, Any]] = {}
    for key, value in results.items():
        if not isinstance(value, dict):
            continue
        if key == "ensemble":
            rows[key] = value
            continue
        for variant in VARIANTS:
            if isinstance(value.get(variant), dict):
                rows[str(ModelRef(key, variant))] = value[variant]
    return rows


def ordered_figures(figures: dict[str, Any]) -> list[str]:
    """The figure names: the main ones first (those present), then the rest sorted."""
    main = [name for name in MAIN_FIGURES if name in figures]
    return main + sorted(set(figures) - set(main))


def evaluated_architectures(results: dict[str, Any]) -> list[str]:
    """The architectures in evaluate.json (README order first), without the ensemble."""
    return in_study_order(key for key, value in results.items()
                          if key != "ensemble" and isinstance(value, dict))


def read_comparison(metrics_dir: Path) -> str | None:
    """The Markdown of ``metrics/comparison.md`` with its headings two levels lower (it is a
    section of the page, not a page), or None when the file is missing."""
    path = metrics_dir / "comparison.md"
    if not path.is_file():
        return None
    return re.sub(r"^(#{1,4}) ", r"\1## ", path.read_text(encoding="utf-8"), flags=re.MULTILINE)


def read_history(plots_dir: Path, model: str) -> list[dict[str, float]] | None:
    """The per-epoch rows of ``plots/history/<model>.csv`` as floats, or None when missing."""
    path = plots_dir / "history" / f"{model}.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        missing = [c for c in HISTORY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise _broken(path, f"columns {missing} are missing (expected "
                                f"{', '.join(HISTORY_COLUMNS)})")
        try:
            return [{column: float(row[column]) for column in HISTORY_COLUMNS}
                    for row in reader]
        except (TypeError, ValueError) as error:
            raise _broken(path, f"a value is not a number ({error})") from None


def read_confusion(plots_dir: Path, model: str) -> np.ndarray | None:
    """The 52x52 confusion matrix of ``plots/evaluate/confusion/<model>.csv`` (rows: actual,
    columns: predicted, in class order), or None when the file is missing."""
    path = plots_dir / "evaluate" / "confusion" / f"{model}.csv"
    if not path.is_file():
        return None
    matrix = np.zeros((labels.NUM_CLASSES, labels.NUM_CLASSES), dtype=np.int64)
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        if not {"actual", "predicted"} <= set(reader.fieldnames or []):
            raise _broken(path, "expected the columns actual,predicted")
        for number, row in enumerate(reader, start=2):
            try:
                matrix[labels.index_of(row["actual"]), labels.index_of(row["predicted"])] += 1
            except labels.LabelError as error:
                raise _broken(path, f"line {number}: {error}") from None
    return matrix


def confusion_cells(matrix: np.ndarray) -> list[dict[str, Any]]:
    """The non-zero cells of a confusion matrix as records for a heat map (with the share of
    the actual letter's test images in each cell)."""
    totals = matrix.sum(axis=1)
    return [{"actual": labels.char_of(a), "predicted": labels.char_of(p),
             "count": int(matrix[a, p]), "share": float(matrix[a, p] / totals[a])}
            for a, p in zip(*np.nonzero(matrix))]


def plot_image(plots_dir: Path, kind: str, model: str) -> Path | None:
    """``plots/evaluate/<kind>/<model>.png`` (kind: explain or mistakes) when it exists."""
    path = plots_dir / "evaluate" / kind / f"{model}.png"
    return path if path.is_file() else None
