"""plots/allographs.png: every form of every letter the generator draws."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .allographs import allograph_table, style_skeleton
from .skeletons import LETTERS, hand_forms


def _skeleton_tile(strokes: Sequence[np.ndarray], tile: int) -> np.ndarray:
    """Draw a skeleton's strokes (unit box, y down) dark on white in a tile."""
    image = np.full((tile, tile), 255, dtype=np.uint8)
    inner = tile - 8
    for stroke in strokes:
        pts = np.round(np.asarray(stroke) * inner + 4).astype(np.int32)
        if len(pts) == 1:
            cv2.circle(image, (int(pts[0, 0]), int(pts[0, 1])), 2, 0, -1, cv2.LINE_AA)
        else:
            cv2.polylines(image, [pts], False, 0, 2, cv2.LINE_AA)
    return image


def allograph_sheet(path: str | Path, styles: Sequence[str], *, tile: int = 44) -> None:
    """Save a PNG of every form of every letter: a row per letter, the glyph of each style in
    ``styles`` (the allograph table's ``font`` form), then the hand-made forms with their
    weights in the table."""
    from matplotlib.figure import Figure

    table = allograph_table()
    hand_columns = max(len(forms) - 1 for forms in table.values())
    label_w, gap = tile // 2, tile // 3
    columns = len(styles) + hand_columns
    width = label_w + len(styles) * tile + gap + hand_columns * tile
    mosaic = np.full((len(LETTERS) * tile, width), 255, dtype=np.uint8)
    notes = []
    for row, char in enumerate(LETTERS):
        y = row * tile
        for k, style in enumerate(styles):
            x = label_w + k * tile
            strokes = style_skeleton(style, char).strokes
            mosaic[y:y + tile, x:x + tile] = _skeleton_tile(strokes, tile)
        forms = hand_forms(char)
        font_weight = table[char][0][1]
        notes.append((label_w / 2, y + tile / 2, char, f"{font_weight:.2f}"))
        for k, (name, weight) in enumerate(table[char][1:]):
            x = label_w + len(styles) * tile + gap + k * tile
            mosaic[y:y + tile, x:x + tile] = _skeleton_tile(forms[name].strokes, tile)
            notes.append((x + tile / 2, y + tile - 3, "", f"{weight:.2f}"))
    dpi = 100
    head = 1.3
    figure = Figure(figsize=(width / dpi, mosaic.shape[0] / dpi + head), dpi=dpi)
    axes = figure.add_axes((0, 0, 1, mosaic.shape[0] / (mosaic.shape[0] + head * dpi)))
    axes.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes.vlines([label_w + len(styles) * tile + gap / 2], 0, mosaic.shape[0], color="C0", lw=1)
    for note_x, note_y, char, weight_text in notes:
        if char:
            axes.text(note_x, note_y - 4, char, ha="center", va="center", fontsize=tile // 3,
                      fontweight="bold")
            axes.text(note_x, note_y + 10, weight_text, ha="center", va="center", fontsize=6,
                      color="C0")
        else:
            axes.text(note_x, note_y, weight_text, ha="center", va="bottom", fontsize=6,
                      color="C3")
    for k, style in enumerate(styles):
        axes.text(label_w + (k + 0.5) * tile, -4, style, rotation=60, ha="left", va="bottom",
                  fontsize=7)
    axes.text(label_w + len(styles) * tile + gap, -4, "hand-made forms (weight)", ha="left",
              va="bottom", fontsize=8, color="C3")
    axes.set_axis_off()
    figure.suptitle(f"Allographs: every form of every letter ({columns} columns)\nblue: weight "
                    "of the styles' glyphs; red: weight of each hand-made form",
                    fontsize=9, y=0.999, va="top")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, metadata={"Software": None})
