"""Synthetic handwriting: single letters drawn the way people draw them with a pen or a mouse.

Each sample starts from a stroke skeleton: a form of the letter picked from the allograph table
(allographs.py), drawn in a Hershey vector font, in a handwriting font family whose centre lines
are traced from its glyphs (fonts.py), or as a hand-made form such as the single-storey print
'a'. It is then distorted by a freshly drawn random writer (slant,
proportions, wobble, tremor, imperfect joins, pen width and pressure) and rendered anti-aliased
onto a canvas with paper tone, occasional gradient, noise and stray marks, in either polarity.

Nothing is loaded at import time; fonts are read on first use and skeletons are cached.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from handwriting import labels

from .allographs import (
    ALL_STYLES,
    FONT_FORM,
    FONT_STYLES,
    HERSHEY_DEFAULT,
    allograph_table,
    check_styles,
    choose_skeleton,
    style_skeleton,
)
from .fonts import FONT_FAMILIES
from .hand import Trace, Writer
from .render import render_trace
from .skeletons import LETTERS, Skeleton, alternate_skeletons, check_char, font_skeleton, hand_forms

__all__ = [
    "ALL_STYLES",
    "FONT_FAMILIES",
    "FONT_FORM",
    "FONT_STYLES",
    "HERSHEY_DEFAULT",
    "LETTERS",
    "Skeleton",
    "Trace",
    "Writer",
    "allograph_table",
    "alternate_skeletons",
    "choose_skeleton",
    "draw_letter",
    "font_skeleton",
    "hand_forms",
    "render_trace",
    "sample_rng",
    "style_skeleton",
]

# Chance of a non-square canvas (both sides still taken from ``canvas_sizes``).
_NON_SQUARE_PROBABILITY = 0.2


def sample_rng(seed: int, char: str, number: int) -> np.random.Generator:
    """The generator of sample ``number`` of ``char``: keyed by (seed, class, number), so a
    sample is the same whatever the order, the worker count or the other classes' counts."""
    return np.random.default_rng([seed, labels.index_of(char), number])


def _canvas_shape(rng: np.random.Generator, canvas_sizes: Sequence[int]) -> tuple[int, int]:
    sizes = sorted({int(s) for s in canvas_sizes})
    i = int(rng.integers(len(sizes)))
    h = w = sizes[i]
    if len(sizes) > 1 and rng.random() < _NON_SQUARE_PROBABILITY:
        # A neighbouring size, so the canvas is oblong but not a thin strip.
        j = i + (1 if i == 0 else -1 if i == len(sizes) - 1 else int(rng.choice((-1, 1))))
        if rng.random() < 0.5:
            w = sizes[j]
        else:
            h = sizes[j]
    return h, w


def draw_letter(
    char: str,
    rng: np.random.Generator,
    *,
    styles: Sequence[str] = FONT_STYLES,
    invert_probability: float = 0.2,
    canvas_sizes: Sequence[int] = (64, 96, 128, 200, 256),
    pen_scale: float = 1.0,
    hand_share: float = 1.0,
) -> np.ndarray:
    """One hand-drawn sample of ``char`` (one of A-Z, a-z) as a 2-D uint8 grayscale image.

    Dark ink on a light background, or light on dark with probability ``invert_probability``.
    The canvas's height and width are each one of ``canvas_sizes`` (usually square).
    ``pen_scale`` multiplies every writer's pen width; ``hand_share`` scales how often the
    hand-made forms of the allograph table are drawn (0: only the styles' glyphs).
    Deterministic given the rng state.

    Raises:
        ValueError: ``char`` is not one of the 52 letters (the message names it), a style name is
            unknown (the message lists the valid styles), ``styles`` or ``canvas_sizes`` is empty,
            a canvas size is below 16 pixels, ``invert_probability`` is outside [0, 1], or
            ``pen_scale`` is not positive or ``hand_share`` negative.
    """
    check_char(char)
    styles = check_styles(styles)
    if not 0.0 < float(pen_scale) < float("inf"):
        raise ValueError(f"pen_scale must be above 0, got {pen_scale!r}")
    if not 0.0 <= float(hand_share) < float("inf"):
        raise ValueError(f"hand_share must be 0 or more, got {hand_share!r}")
    if not 0.0 <= float(invert_probability) <= 1.0:
        raise ValueError(f"invert_probability must be in [0, 1], got {invert_probability!r}")
    sizes = tuple(canvas_sizes)
    if not sizes:
        raise ValueError("canvas_sizes must not be empty")
    if any(int(s) != s or int(s) < 16 for s in sizes):
        raise ValueError(f"canvas sizes must be whole numbers of pixels >= 16, got {sizes!r}")

    height, width = _canvas_shape(rng, sizes)
    skeleton = choose_skeleton(char, rng, styles, hand_share)
    writer = Writer.sample(rng, pen_scale=pen_scale)
    trace = writer.write(skeleton, rng, small=char.islower())
    img = render_trace(trace, rng, height, width)
    if rng.random() < invert_probability:
        img = 255 - img
    return img
