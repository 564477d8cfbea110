"""Picture grids of predictions: the most confident mistakes of a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from handwriting import labels


def most_confident_mistakes(y_true: np.ndarray, probabilities: np.ndarray,
                            count: int = 16) -> np.ndarray:
    """Row indices of the wrong predictions with the highest confidence, most confident first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def mistake_gallery(images: np.ndarray, y_true: np.ndarray, probabilities: np.ndarray,
                    path: str | Path, title: str, count: int = 16, columns: int = 8) -> int:
    """Save a PNG of the model's most confident mistakes (image, true -> predicted, p).

    ``images`` are the model inputs (N, H, W) in [0, 1] or uint8. Returns how many are shown.
    """
    from matplotlib.figure import Figure

    rows_shown = most_confident_mistakes(y_true, probabilities, count)
    predicted = probabilities.argmax(axis=1)
    grid_rows = max(1, -(-len(rows_shown) // columns))
    figure = Figure(figsize=(columns * 1.25, grid_rows * 1.45 + 0.5))
    axes = figure.subplots(grid_rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, row in zip(axes.flat, rows_shown):
        ax.imshow(images[row], cmap="gray", vmin=0, vmax=255 if images.dtype == np.uint8 else 1)
        ax.set_title(f"{labels.char_of(y_true[row])} → {labels.char_of(predicted[row])}\n"
                     f"p={probabilities[row, predicted[row]]:.2f}", fontsize=8, color="firebrick")
    if len(rows_shown) == 0:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    figure.suptitle(title, fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, metadata={"Software": None})
    return len(rows_shown)
