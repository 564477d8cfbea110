"""Stroke weight: how thick a letter's strokes are relative to its size, as people write it.

People write small letters smaller with the same pen, so once a letter is cropped and scaled to
the model input, the strokes of a small letter are thicker relative to its size: a cue that tells
'o' from 'O' or 's' from 'S'. The measure: stroke width (ink area over half the ink boundary)
divided by the ink's longer side, median per class, over the letters whose cases look alike.
"""

from __future__ import annotations

import numpy as np

from handwriting import labels

# Letters whose two cases differ mainly in size, where the stroke weight is the case cue.
LOOKALIKE = "cklmopsuvwxyz"


def relative_stroke_width(image: np.ndarray) -> float:
    """Stroke width over the longer side of the ink, for one preprocessed image (ink high).

    Accepts uint8 (0-255) or float ([0, 1]) images; NaN for an image without ink.
    """
    import cv2

    image = np.asarray(image)
    ink = (image > (127 if image.dtype == np.uint8 else 0.5)).astype(np.uint8)
    area = float(ink.sum())
    if area == 0:
        return float("nan")
    contours, _ = cv2.findContours(ink, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    return area / max(perimeter / 2.0, 1.0) / side


def case_stroke_weights(images: np.ndarray, class_ids: np.ndarray,
                        letters: str = LOOKALIKE) -> dict[str, dict[str, float]]:
    """Per letter of ``letters``: the median relative stroke width of its capitals and small
    letters, e.g. ``{"o": {"upper": 0.14, "lower": 0.19}}`` (classes without images left out)."""
    class_ids = np.asarray(class_ids)
    out: dict[str, dict[str, float]] = {}
    for letter in letters:
        pair = {}
        for case, char in (("upper", letter.upper()), ("lower", letter.lower())):
            chosen = images[class_ids == labels.index_of(char)]
            if len(chosen):
                pair[case] = float(np.nanmedian([relative_stroke_width(i) for i in chosen]))
        if len(pair) == 2:
            out[letter] = pair
    return out


def summary(weights: dict[str, dict[str, float]]) -> dict[str, float]:
    """Median over letters of the capital and small-letter weights, and their ratio."""
    upper = float(np.median([w["upper"] for w in weights.values()]))
    lower = float(np.median([w["lower"] for w in weights.values()]))
    return {"upper": round(upper, 4), "lower": round(lower, 4), "ratio": round(lower / upper, 3)}
