"""The Markdown report of the evaluate stage (``metrics/comparison.md``), written from what
:mod:`.comparison` returns: the comparison table of every model and the ensemble, the tuning
gains, each cross-dataset set and the champion's "not sure" answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from handwriting.evaluation import champion as champion_policy
from handwriting.models.reference import VARIANTS, ModelRef
from handwriting.models.registry import SEED_ARCHITECTURES, has_frozen_base

if TYPE_CHECKING:
    from handwriting.evaluation.comparison import Scores


def _report_table(rows: list[tuple[str, str, dict[str, Any]]], champion: str) -> str:
    """The seed's comparison table (model, variant, precision, recall, F1, ROC-AUC), extended."""
    lines = ["| model | variant | precision | recall | F1 (95 % CI) | ROC-AUC | "
             "accuracy (95 % CI) | case-insensitive accuracy | merged-37 accuracy | top-5 | "
             "M multiply-adds | size (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, variant, m in rows:
        name = ModelRef.parse(key).arch if key != champion_policy.ENSEMBLE else key
        flags = " (pretrained: false)" if has_frozen_base(name) and not m["pretrained"] else ""
        beyond = name not in (*SEED_ARCHITECTURES, champion_policy.ENSEMBLE)
        flags += " (beyond the seed)" if beyond else ""
        flags += " **champion**" if key == champion else ""
        lines.append(
            f"| {name}{flags} | {variant} | {m['precision_macro']:.3f} | "
            f"{m['recall_macro']:.3f} | {m['f1_macro']:.3f} "
            f"({m['f1_macro_ci95_low']:.3f}-{m['f1_macro_ci95_high']:.3f}) | "
            f"{m.get('roc_auc_ovr_macro', float('nan')):.3f} | {m['accuracy']:.3f} "
            f"({m['accuracy_ci95_low']:.3f}-{m['accuracy_ci95_high']:.3f}) | "
            f"{m['case_insensitive_accuracy']:.3f} | {m['merged37_accuracy']:.3f} | "
            f"{m['top5_accuracy']:.3f} | {m['mflops']:.2f} | {m['size_mb']:.2f} |")
    return "\n".join(lines) + "\n"


def comparison_report(scores: Scores, architectures: list[str], test_images: int, kind: str,
                      champion: str) -> str:
    """The report's first part: the comparison table of every model and the ensemble."""
    table_rows = [(str(ModelRef(a, v)), v, scores.results[a][v])
                  for a in architectures for v in VARIANTS]
    table_rows.append((champion_policy.ENSEMBLE, f"{kind} vote of the tuned",
                       scores.results[champion_policy.ENSEMBLE]))
    report = ("# Model comparison on the held-out test split\n\n"
              f"{test_images} test images (originals only, never augmented); F1 and accuracy "
              "with their 95 % bootstrap interval (1,000 resamples of the test images): "
              "differences inside the intervals are not differences. "
              f"The champion, served by `export`: **{champion}** (the best validation macro F1 "
              "within `export.compute_budget_mflops`; `metrics/champion.json`).\n\n" +
              _report_table(table_rows, champion))
    if not all(scores.pretrained.values()):
        report += ("\nVGG rows marked `pretrained: false` started from random weights (the "
                   "ImageNet weights could not be loaded): they are not transfer-learning "
                   "results.\n")
    return report


def crossdata_section(name: str, figures: dict[str, Any], champion: str) -> str:
    """The report's table of every model and the ensemble on one cross-dataset set
    (``figures``: its entry of crossdata.json)."""
    return (f"\n## Cross-dataset: {name} ({figures['images']} images)\n\n"
            "| model | accuracy | case-insensitive accuracy | merged-37 accuracy | "
            "macro F1 | top-5 |\n|---|---|---|---|---|---|\n" +
            "".join(f"| {k}{' **champion**' if k == champion else ''} | "
                    f"{v['accuracy']:.3f} | {v['case_insensitive_accuracy']:.3f} | "
                    f"{v['merged37_accuracy']:.3f} | "
                    f"{v['f1_macro']:.3f} | {v['top5_accuracy']:.3f} |\n"
                    for k, v in figures.items() if isinstance(v, dict)))


def unsure_section(unsure: dict[str, Any]) -> str:
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


def _gain_cell(gain: dict[str, float], measure: str) -> str:
    """``+0.031 (+0.018 to +0.044)``, in bold when the whole interval is above 0."""
    low, high = gain[f"{measure}_ci95_low"], gain[f"{measure}_ci95_high"]
    cell = f"{gain[measure]:+.3f} ({low:+.3f} to {high:+.3f})"
    return f"**{cell}**" if low > 0 else cell


def tuning_gain_section(gains: dict[str, dict[str, float]]) -> str:
    """The report's tuning-gain table (each accuracy gain with its paired 95 % interval, the
    test macro-F1 gain, the mean over the seed's six as points) and the count of architectures
    whose tuned model wins."""
    first = next(iter(gains.values()), {})
    accuracies = [m for m in first if m.endswith("_accuracy")]  # val, test, the crossdata sets
    measures = [*accuracies, "test_f1_macro"]
    sets = [m.removesuffix("_accuracy") for m in accuracies]
    seed = [arch for arch in gains if arch in SEED_ARCHITECTURES]
    titles = {"val": "validation", "test": "test"}
    header = "".join(f" {titles.get(s, s)} gain (95 % CI) |" for s in sets)
    lines = [f"| architecture |{header} test macro-F1 gain |",
             f"|---|{'---|' * len(measures)}"]
    lines += [f"| {arch} | " + " | ".join(_gain_cell(gain, m) for m in accuracies)
              + f" | {gain['test_f1_macro']:+.3f} |" for arch, gain in gains.items()]
    if seed:
        lines.append(f"| mean of the seed's {len(seed)} | " + " | ".join(
            f"{np.mean([gains[a][m] for a in seed]):+.3f}" for m in measures) + " |")
    count = len(gains)
    beyond = sum(gain["val_accuracy_ci95_low"] > 0 for gain in gains.values())
    summary = (f"Tuned beats untuned beyond the interval on validation for {beyond} of {count} "
               "architectures" + "".join(
                   f"; on {s} (52-class accuracy) tuned ≥ untuned for "
                   f"{sum(gain[f'{s}_accuracy'] >= 0 for gain in gains.values())} of {count}"
                   for s in sets if s not in titles) + ".")
    return ("\n## Tuning gain (tuned minus untuned)\n\n"
            "Accuracy gains of each architecture's tuned model over its untuned one on the "
            "validation split, the test split and the cross-dataset sets, from the models' own "
            "predictions, with their 95 % interval: a paired bootstrap, 1,000 resamples of the "
            "images with the same resampled images for both models, so it is the interval of "
            "the difference itself. **Bold**: the whole interval is above 0, tuning helped "
            "beyond the interval. The search chose the tuned model on this validation split, "
            "so its validation gain is optimistic; the test and cross-dataset gains are not. "
            "The macro-F1 gain and the mean row are points. `dvc plots` "
            "charts the points (`tuning_gain.csv`).\n\n" + "\n".join(lines) + "\n\n"
            + summary + "\n")
