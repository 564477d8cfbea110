"""Rendering a hand-drawn :class:`~handwriting.synth.hand.Trace` to a grayscale image.

Strokes are drawn with OpenCV on a supersampled canvas (thickness in whole supersampled pixels,
so widths vary in fine steps) and shrunk with ``INTER_AREA``, which anti-aliases the edges. Then
paper and ink tones, optional gradient, blur and noise are applied at the final size, where they
are cheapest.
"""

from __future__ import annotations

import cv2
import numpy as np

from .hand import Trace

# The supersampled canvas is kept near this many pixels on its long side: larger costs time,
# smaller gives visibly stepped stroke widths.
_SUPERSAMPLED_SIDE = 512
_MAX_FACTOR = 4
_SHIFT = 3  # fixed-point fractional bits for cv2 drawing (sub-pixel stroke positions)
_INK_LEVELS = 12  # ink amount is quantised so consecutive points can be drawn as one polyline
_MIN_PEN_PX = 1.5


def _draw_stroke(canvas: np.ndarray, pts: np.ndarray, thick: np.ndarray, ink: np.ndarray,
                 line_type: int) -> None:
    """Draw one stroke as runs of constant (thickness, ink), each run one cv2.polylines call."""
    n = len(pts)
    fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
    if n == 1:
        cv2.circle(canvas, tuple(int(v) for v in fixed[0]), int(max(1, thick[0]) << _SHIFT) // 2,
                   int(ink[0]), -1, line_type, _SHIFT)
        return
    key = thick.astype(np.int64) * 256 + ink
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [n]])
    for a, b in zip(bounds[:-1], bounds[1:]):
        # Overlap runs by one point so the stroke has no seams.
        lo, hi = max(0, a - 1), b
        if hi - lo < 2:
            hi = min(n, lo + 2)
        cv2.polylines(canvas, [fixed[lo:hi]], False, int(ink[a]), int(thick[a]), line_type, _SHIFT)


def _stray_marks(rng: np.random.Generator,
                 bbox: tuple[float, float, float, float]) -> list[np.ndarray]:
    """A dot or a short flick near the letter (a slip of the pen), small next to the letter."""
    x0, y0, x1, y1 = bbox
    size = max(x1 - x0, y1 - y0)
    marks = []
    for _ in range(int(rng.integers(1, 3))):
        cx = rng.uniform(x0 - 0.15 * size, x1 + 0.15 * size)
        cy = rng.uniform(y0 - 0.15 * size, y1 + 0.15 * size)
        if rng.random() < 0.35:
            marks.append(np.array([[cx, cy]]))
        else:
            length = rng.uniform(0.04, 0.14) * size
            ang = rng.uniform(0, 2 * np.pi)
            bend = rng.normal(0, 0.25)
            t = np.linspace(0, 1, 6)
            d = np.array([np.cos(ang), np.sin(ang)])
            nrm = np.array([-d[1], d[0]])
            marks.append(np.array([cx, cy]) + np.outer(t * length, d)
                         + np.outer(bend * length * t * (1 - t), nrm))
    return marks


def render_trace(
    trace: Trace,
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    stray_probability: float = 0.1,
) -> np.ndarray:
    """Render ``trace`` as dark ink on light paper into a ``height`` x ``width`` uint8 image.

    The letter's longer side is 40-85% of the canvas's shorter side, placed anywhere it fits.
    """
    pts_all = np.concatenate(trace.strokes)
    lo, hi = pts_all.min(0), pts_all.max(0)
    extent = float(max(hi - lo)) or 1.0
    widths = trace.widths
    pen = float(np.median(np.concatenate(widths)))

    short = min(height, width)
    frac = rng.uniform(0.4, 0.85)
    scale = frac * short / extent
    # The finest pen still leaves a line about a pixel and a half wide at the output size, so
    # a small canvas never turns a thin pen into a barely visible grey hairline.
    if pen * scale < _MIN_PEN_PX:
        widths = tuple(w * (_MIN_PEN_PX / (pen * scale)) for w in widths)
    max_w = float(max(w.max() for w in widths))
    # Shrink if the letter plus its pen would not fit (fat markers on wide letters).
    box = (hi - lo) * scale + max_w * scale
    fit = min((width - 6) / box[0], (height - 6) / box[1], 1.0)
    scale *= fit
    pen_px = float(np.median(np.concatenate(widths))) * scale
    # Ink bleeding / a soft scan; never so much that a thin line fades out.
    blur = min(rng.uniform(0.4, 1.2), 0.4 * pen_px + 0.2) if rng.random() < 0.15 else 0.0
    box = (hi - lo) * scale
    # Keep the ink (pen, blur halo, rasterisation) off the border: the crop downstream must see
    # the whole letter.
    pad = 0.5 * max_w * scale + 2 + 2 * blur
    free_x = max(0.0, width - box[0] - 2 * pad)
    free_y = max(0.0, height - box[1] - 2 * pad)
    # Mostly near the centre, sometimes pushed towards an edge.
    off = np.array([free_x, free_y]) * np.clip(rng.normal(0.5, 0.22, 2), 0.0, 1.0) + pad

    aliased = trace.aliased
    factor = 1 if aliased else int(np.clip(_SUPERSAMPLED_SIDE // max(height, width), 2,
                                           _MAX_FACTOR))
    line_type = cv2.LINE_8 if aliased else cv2.LINE_AA
    canvas = np.zeros((height * factor, width * factor), np.uint8)
    k = scale * factor
    origin = (off - lo * scale) * factor

    for pts, w, ink in zip(trace.strokes, widths, trace.inks):
        thick = np.maximum(1, np.round(w * k)).astype(np.int32)
        level = np.round(ink * _INK_LEVELS) * (255.0 / _INK_LEVELS)
        _draw_stroke(canvas, pts * k + origin, thick, level.astype(np.int32), line_type)

    if rng.random() < stray_probability:
        x0, y0 = origin
        bbox = (x0, y0, x0 + box[0] * factor, y0 + box[1] * factor)
        pen = pen_px * factor
        for mark in _stray_marks(rng, bbox):
            t = np.full(len(mark), max(1, int(round(pen * rng.uniform(0.35, 1.0)))), np.int32)
            # Inside the canvas and off its border, like the letter.
            margin = 0.5 * t[0] + 2 * factor
            mark = np.clip(mark, margin, np.array([width * factor, height * factor]) - margin)
            _draw_stroke(canvas, mark, t, np.full(len(mark), 255, np.int32), line_type)

    if factor > 1:
        alpha = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
    else:
        alpha = canvas
    alpha = alpha.astype(np.float32) * (1.0 / 255.0)

    # Paper and ink tones; keep at least ~100 grey levels between them so the letter stays clear.
    paper = rng.uniform(200, 255)
    ink_tone = rng.uniform(0, min(90, paper - 110))
    if blur > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    background = np.float32(paper)
    if rng.random() < 0.25:
        # Uneven lighting: a linear gradient across the sheet.
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = np.cos(ang) * xx / width + np.sin(ang) * yy / height
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        background = paper - np.float32(rng.uniform(0, 35)) * ramp
    img = background + (ink_tone - background) * alpha
    if rng.random() < 0.3:
        img = img + (rng.standard_normal((height, width), dtype=np.float32)
                     * np.float32(rng.uniform(2, 9)))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
