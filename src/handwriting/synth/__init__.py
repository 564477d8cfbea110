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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from handwriting import labels

from .allographs import (
    ALL_STYLES,
    FONT_FORM,
    FONT_STYLES,
    HERSHEY_DEFAULT,
    allograph_table,
    choose_skeleton,
    style_skeleton,
)
from .fonts import FONT_FAMILIES
from .hand import Trace, Writer
from .render import render_trace
from .skeletons import LETTERS, Skeleton, alternate_skeletons, check_char, font_skeleton, hand_forms

__all__ = [
    "ALL_STYLES",
    "DrawSettings",
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


@dataclass(frozen=True)
class DrawSettings:
    """How the generator draws: every ``raw.synthetic`` key of params.yaml besides the sample
    counts. A new generator setting is a field here (with its default) and its key in
    params.yaml; the raw stage, the benchmarks and :func:`draw_letter` pass the record on.

    ``styles``: the Hershey styles and font families drawn (see :data:`ALL_STYLES`);
    ``invert_probability``: the chance of light ink on a dark background; ``canvas_sizes``: the
    canvas sides (usually square); ``pen_scale`` multiplies every writer's pen width;
    ``hand_share`` scales how often the hand-made forms of the allograph table are drawn (0:
    only the styles' glyphs). A ValueError names the setting that is out of range.
    """

    styles: tuple[str, ...] = FONT_STYLES
    invert_probability: float = 0.2
    canvas_sizes: tuple[int, ...] = (64, 96, 128, 200, 256)
    pen_scale: float = 1.0
    hand_share: float = 1.0

    def __post_init__(self) -> None:
        styles = (self.styles,) if isinstance(self.styles, str) else tuple(self.styles)
        if not styles:
            raise ValueError(f"styles must list at least one style; valid styles: "
                             f"{', '.join(ALL_STYLES)}")
        unknown = [style for style in styles if style not in ALL_STYLES]
        if unknown:
            raise ValueError(f"styles names unknown styles {unknown}; valid styles: "
                             f"{', '.join(ALL_STYLES)}")
        object.__setattr__(self, "styles", styles)
        object.__setattr__(self, "canvas_sizes", tuple(self.canvas_sizes))
        for name in ("invert_probability", "pen_scale", "hand_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not 0.0 < float(self.pen_scale) < float("inf"):
            raise ValueError(f"pen_scale must be above 0 (1: the writer's own pen), got "
                             f"{self.pen_scale!r}")
        if not 0.0 <= float(self.hand_share) < float("inf"):
            raise ValueError(f"hand_share must be 0 (no hand-made forms) or more, got "
                             f"{self.hand_share!r}")
        if not 0.0 <= float(self.invert_probability) <= 1.0:
            raise ValueError(f"invert_probability must be in [0, 1], got "
                             f"{self.invert_probability!r}")
        if not self.canvas_sizes:
            raise ValueError("canvas_sizes must not be empty")
        if any(isinstance(s, bool) or int(s) != s or int(s) < 16 for s in self.canvas_sizes):
            raise ValueError(f"canvas sizes must be whole numbers of pixels >= 16, got "
                             f"{self.canvas_sizes!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DrawSettings:
        """The settings of a mapping such as params.yaml's ``raw.synthetic`` less its counts;
        a ValueError names an unknown key with the known ones."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; the generator's settings "
                             f"are {', '.join(known)}")
        return cls(**values)


def draw_letter(char: str, rng: np.random.Generator,
                settings: DrawSettings | None = None) -> np.ndarray:
    """One hand-drawn sample of ``char`` (one of A-Z, a-z) as a 2-D uint8 grayscale image,
    drawn as ``settings`` say (None: the defaults of :class:`DrawSettings`): dark ink on a
    light background, or light on dark with probability ``settings.invert_probability``, on a
    canvas whose height and width are each one of ``settings.canvas_sizes``. Deterministic
    given the rng state.

    Raises:
        ValueError: ``char`` is not one of the 52 letters (the message names it).
    """
    check_char(char)
    settings = settings or DrawSettings()
    height, width = _canvas_shape(rng, settings.canvas_sizes)
    skeleton = choose_skeleton(char, rng, settings.styles, settings.hand_share)
    writer = Writer.sample(rng, pen_scale=settings.pen_scale)
    trace = writer.write(skeleton, rng, small=char.islower())
    img = render_trace(trace, rng, height, width)
    if rng.random() < settings.invert_probability:
        img = 255 - img
    return img
