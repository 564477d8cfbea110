"""Synthetic handwriting: single letters drawn the way people draw them with a pen or a mouse.

Each sample starts from the stroke skeleton of a Hershey vector font (or a hand-made alternative
form such as the single-storey print 'a'), is distorted by a freshly drawn random writer (slant,
proportions, wobble, tremor, imperfect joins, pen width and pressure) and rendered anti-aliased
onto a canvas with paper tone, occasional gradient, noise and stray marks, in either polarity.

Nothing is loaded at import time; fonts are read on first use and skeletons are cached.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .hand import Trace, Writer
from .render import render_trace
from .skeletons import (
    HERSHEY_STYLES,
    LETTERS,
    Skeleton,
    alternate_skeletons,
    check_char,
    check_style,
    font_skeleton,
)

__all__ = [
    "FONT_STYLES",
    "LETTERS",
    "Skeleton",
    "Trace",
    "Writer",
    "alternate_skeletons",
    "choose_skeleton",
    "draw_letter",
    "font_skeleton",
    "render_trace",
]

# Hershey styles drawn by default (see skeletons.HERSHEY_STYLES for all that are accepted):
# futural - plain sans print (roman simplex), the commonest way people write single letters;
# timesr  - roman print with the serifs stripped: other proportions, double-storey 'g', tailed 'a';
# timesi  - italic print (serifs stripped): single-storey 'a'/'g', hooked 'l'/'t'/'u', round 'v'/'w';
# scripts - cursive (script simplex), looped and joined forms;
# scriptc - a second cursive (script complex reduced to single lines), other cursive capitals.
# Left out: rowmans/cursive (glyph for glyph the same as futural/scripts), the duplex/triplex
# variants (same shapes, doubled lines), gothic (nobody writes it), Greek, Cyrillic and symbols.
FONT_STYLES: tuple[str, ...] = ("futural", "timesr", "timesi", "scripts", "scriptc")

# Relative frequency of each style when several are allowed, for capitals and small letters:
# people mostly print single letters, so print forms dominate and cursive ones are a minority,
# rarer still for capitals (cursive capitals are ornate). Unlisted accepted styles weigh 0.1.
_STYLE_WEIGHTS = {
    "futural": (0.40, 0.35),
    "rowmans": (0.40, 0.35),
    "timesr": (0.20, 0.15),
    "timesi": (0.25, 0.25),
    "scripts": (0.075, 0.125),
    "cursive": (0.075, 0.125),
    "scriptc": (0.075, 0.125),
}

# Cursive glyphs so ornate that they read as another symbol when written alone (script 'Q' is a
# '2', 'I' and 'J' are loops, 'Z' and 'z' are a '3' with a tail, 's' is a hook). When other styles
# are allowed, these letters are drawn in one of those instead.
_UNUSUAL_GLYPHS = {"scripts": set("FIJQTZsz"), "cursive": set("FIJQTZsz"), "scriptc": set("FIJQTZsz")}

# Chance of using a hand-made alternative form when the letter has some.
_ALTERNATE_PROBABILITY = 0.3

# Chance of a non-square canvas (both sides still taken from ``canvas_sizes``).
_NON_SQUARE_PROBABILITY = 0.2


def _check_styles(styles: Sequence[str]) -> tuple[str, ...]:
    if isinstance(styles, str):
        styles = (styles,)
    styles = tuple(styles)
    if not styles:
        valid = ", ".join(sorted(HERSHEY_STYLES))
        raise ValueError(f"styles must not be empty; valid styles: {valid}")
    for s in styles:
        check_style(s)
    return styles


def choose_skeleton(
    char: str,
    rng: np.random.Generator,
    styles: Sequence[str] = FONT_STYLES,
    alternate_probability: float = _ALTERNATE_PROBABILITY,
) -> Skeleton:
    """Pick the form of ``char`` to draw: a font skeleton of one of ``styles`` or an alternative."""
    check_char(char)
    styles = _check_styles(styles)
    usable = tuple(s for s in styles if char not in _UNUSUAL_GLYPHS.get(s, ())) or styles
    case = 0 if char.isupper() else 1
    weights = np.array([_STYLE_WEIGHTS.get(s, (0.1, 0.1))[case] for s in usable])
    style = usable[int(rng.choice(len(usable), p=weights / weights.sum()))]
    alternates = alternate_skeletons(char)
    if alternates and rng.random() < alternate_probability:
        return alternates[int(rng.integers(len(alternates)))]
    return font_skeleton(style, char)


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
) -> np.ndarray:
    """One hand-drawn sample of ``char`` (one of A-Z, a-z) as a 2-D uint8 grayscale image.

    Dark ink on a light background, or light on dark with probability ``invert_probability``.
    The canvas's height and width are each one of ``canvas_sizes`` (usually square).
    Deterministic given the rng state.

    Raises:
        ValueError: ``char`` is not one of the 52 letters (the message names it), a style name is
            unknown (the message lists the valid styles), ``styles`` or ``canvas_sizes`` is empty,
            a canvas size is below 16 pixels, or ``invert_probability`` is outside [0, 1].
    """
    check_char(char)
    styles = _check_styles(styles)
    if not 0.0 <= float(invert_probability) <= 1.0:
        raise ValueError(f"invert_probability must be in [0, 1], got {invert_probability!r}")
    sizes = tuple(canvas_sizes)
    if not sizes:
        raise ValueError("canvas_sizes must not be empty")
    if any(int(s) != s or int(s) < 16 for s in sizes):
        raise ValueError(f"canvas sizes must be whole numbers of pixels >= 16, got {sizes!r}")

    height, width = _canvas_shape(rng, sizes)
    skeleton = choose_skeleton(char, rng, styles)
    writer = Writer.sample(rng)
    trace = writer.write(skeleton, rng)
    img = render_trace(trace, rng, height, width)
    if rng.random() < invert_probability:
        img = 255 - img
    return img
