"""Pictures of datasets: contact sheets of a few images per class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np


def _thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """Letterbox a 2-D uint8 image into a size x size tile, keeping its aspect ratio."""
    height, width = image.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    tile = np.full((size, size), 128, dtype=np.uint8)  # grey shows where the image ends
    y0, x0 = (size - new_h) // 2, (size - new_w) // 2
    tile[y0:y0 + new_h, x0:x0 + new_w] = resized
    return tile


def contact_sheet(images_by_class: Mapping[str, Sequence[np.ndarray]], path: str | Path, *,
                  title: str, tile: int = 48, classes_per_row: int = 4) -> None:
    """Save a PNG grid: for every class, its letter and its images side by side.

    Images are 2-D uint8 of any size; each is letterboxed into a ``tile``-pixel square.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    chars = list(images_by_class)
    per_class = max((len(v) for v in images_by_class.values()), default=1)
    gap, label_width = tile // 4, tile // 2
    block_w = label_width + per_class * tile + gap
    rows = -(-len(chars) // classes_per_row)
    mosaic = np.full((rows * (tile + gap), classes_per_row * block_w), 255, dtype=np.uint8)
    anchors = []
    for position, char in enumerate(chars):
        row, col = divmod(position, classes_per_row)
        y, x = row * (tile + gap), col * block_w
        anchors.append((x + label_width / 2, y + tile / 2, char))
        for k, image in enumerate(images_by_class[char]):
            left = x + label_width + k * tile
            mosaic[y:y + tile, left:left + tile] = _thumbnail(image, tile)
    dpi = 100
    figure = Figure(figsize=(mosaic.shape[1] / dpi, mosaic.shape[0] / dpi + 0.4), dpi=dpi)
    axes = figure.add_axes((0, 0, 1, mosaic.shape[0] / (mosaic.shape[0] + 0.4 * dpi)))
    axes.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    for anchor_x, anchor_y, char in anchors:
        axes.text(anchor_x, anchor_y, char, ha="center", va="center", fontsize=tile // 3,
                  fontweight="bold")
    axes.set_axis_off()
    figure.suptitle(title, fontsize=11, y=0.995, va="top")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, metadata={"Software": None})
