"""The allograph table: for every letter, the forms people write, and how often.

A letter is drawn in one of its forms, picked by weight:

* ``font``: the letter as one of the allowed styles draws it, a Hershey stroke font or a
  handwriting font family (:mod:`~handwriting.synth.fonts`). The styles themselves carry many
  forms (single- and double-storey 'a' and 'g', looped and plain 'l', straight and curved tails,
  cursive shapes), so this is the commonest entry; which style is picked follows
  :data:`STYLE_WEIGHTS`.
* a named hand-made form (:func:`~handwriting.synth.skeletons.hand_forms`): the ones people
  write that no style has, or has too rarely (single-storey 'a' with a stem, 'I' with bars, 'J'
  with a top bar, crossed 'z', hooked 't' and 'l', epsilon 'E', ...).

The weights are our estimate of how often each form is written when a single letter stands
alone (print forms dominate; cursive forms are a minority, rarer for capitals). They sum to 1 per
letter; ``plots/allographs.png`` (the raw stage) shows every form of every letter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .fonts import FONT_FAMILIES
from .fonts import font_skeleton as ttf_skeleton
from .skeletons import HERSHEY_STYLES, LETTERS, Skeleton, check_char, hand_forms
from .skeletons import font_skeleton as hershey_skeleton

FONT_FORM = "font"

# Weight of each hand-made form; the rest of a letter's weight goes to its "font" form.
_HAND_WEIGHTS: dict[str, dict[str, float]] = {
    "A": {"two strokes": 0.10},
    "E": {"epsilon": 0.05},
    "G": {"no spur": 0.10},
    "I": {"with bars": 0.25},
    "J": {"with top bar": 0.25},
    "M": {"one stroke, deep middle": 0.10},
    "Q": {"crossing tail": 0.10},
    "W": {"one stroke, short middle": 0.10},
    "Y": {"straight stem": 0.10},
    "Z": {"crossed": 0.08},
    "a": {"single-storey": 0.25, "single-storey, one stroke": 0.15},
    "b": {"stem and bowl": 0.10},
    "e": {"bar first": 0.10},
    "f": {"hooked top": 0.10},
    "g": {"single-storey, hooked tail": 0.20, "single-storey, straight tail": 0.10},
    "h": {"stem and arch": 0.10},
    "i": {"hooked foot": 0.10},
    "k": {"one-stroke arm": 0.15},
    "l": {"hooked foot": 0.15, "loop": 0.10},
    "n": {"stem and arch": 0.10},
    "p": {"stem and bowl": 0.10},
    "q": {"straight tail": 0.15, "flicked tail": 0.10},
    "t": {"cross": 0.15, "hooked foot": 0.10},
    "y": {"u with curved tail": 0.15, "v with straight tail": 0.10},
    "z": {"crossed": 0.08},
}


def allograph_table() -> dict[str, tuple[tuple[str, float], ...]]:
    """Letter -> ((form, weight), ...), the ``font`` form first; weights sum to 1."""
    table = {}
    for char in LETTERS:
        hand = _HAND_WEIGHTS.get(char, {})
        table[char] = ((FONT_FORM, round(1.0 - sum(hand.values()), 6)),) + tuple(hand.items())
    return table


# How often each style is picked for the "font" form, for capitals and small letters. Print
# dominates; the two cursive Hershey styles and the two script font families are a minority.
# Unlisted accepted styles weigh 0.1.
STYLE_WEIGHTS: dict[str, tuple[float, float]] = {
    "futural": (0.40, 0.35),
    "rowmans": (0.40, 0.35),
    "timesr": (0.20, 0.15),
    "timesi": (0.25, 0.25),
    "scripts": (0.075, 0.125),
    "cursive": (0.075, 0.125),
    "scriptc": (0.075, 0.125),
    "caveat": (0.15, 0.15),
    "comfortaa": (0.12, 0.12),
    "delius": (0.15, 0.15),
    "indie-flower": (0.15, 0.15),
    "kalam": (0.15, 0.15),
    "permanent-marker": (0.12, 0.12),
    "quicksand": (0.12, 0.12),
    "shadows-into-light": (0.15, 0.15),
    "zeyada": (0.10, 0.10),
    "dancing-script": (0.05, 0.08),
    "satisfy": (0.05, 0.08),
}

# Glyphs that read as another symbol when written alone (script 'Q' is a '2', 'I' and 'J' are
# loops, 'Z' and 'z' a '3' with a tail, 's' a hook), or as the wrong case (Permanent Marker
# draws its small letters as capitals). When other styles are allowed, these letters are drawn
# in one of those instead.
_CURSIVE_ODD = set("FIJQTZsz")
UNUSUAL_GLYPHS: dict[str, set[str]] = {
    "scripts": _CURSIVE_ODD,
    "cursive": _CURSIVE_ODD,
    "scriptc": _CURSIVE_ODD,
    "dancing-script": set("FIJQTZ"),
    "satisfy": set("FIJQTZ"),
    "permanent-marker": set(LETTERS[26:]),
}

ALL_STYLES: tuple[str, ...] = tuple(HERSHEY_STYLES) + tuple(FONT_FAMILIES)

# Hershey styles (see skeletons.HERSHEY_STYLES for all that are accepted):
# futural - plain sans print (roman simplex), the commonest way people write single letters;
# timesr  - roman print with the serifs stripped: other proportions, double-storey 'g', tailed 'a';
# timesi  - italic print (serifs stripped): single-storey 'a'/'g', hooked 'l'/'t'/'u',
#           round 'v'/'w';
# scripts - cursive (script simplex), looped and joined forms;
# scriptc - a second cursive (script complex reduced to single lines), other cursive capitals.
# Left out: rowmans/cursive (glyph for glyph the same as futural/scripts), the duplex/triplex
# variants (same shapes, doubled lines), gothic (nobody writes it), Greek, Cyrillic and symbols.
HERSHEY_DEFAULT: tuple[str, ...] = ("futural", "timesr", "timesi", "scripts", "scriptc")
# Every style drawn by default: the Hershey ones and every handwriting font family
# (fonts.FONT_FAMILIES; their centre lines are traced, see fonts.py).
FONT_STYLES: tuple[str, ...] = HERSHEY_DEFAULT + tuple(FONT_FAMILIES)


def check_style(style: object) -> str:
    """Return ``style`` if it is a Hershey style or a font family, else raise ValueError."""
    if not isinstance(style, str) or style not in ALL_STYLES:
        valid = ", ".join(sorted(ALL_STYLES))
        raise ValueError(f"unknown handwriting style {style!r}; valid styles: {valid}")
    return style


def check_styles(styles: Sequence[str] | str) -> tuple[str, ...]:
    """``styles`` as a non-empty tuple of valid style names."""
    if isinstance(styles, str):
        styles = (styles,)
    styles = tuple(styles)
    if not styles:
        raise ValueError(f"styles must not be empty; valid styles: {', '.join(sorted(ALL_STYLES))}")
    for style in styles:
        check_style(style)
    return styles


def style_skeleton(style: str, char: str) -> Skeleton:
    """The glyph of ``char`` in ``style`` (a Hershey style or a font family)."""
    check_style(style)
    return ttf_skeleton(style, char) if style in FONT_FAMILIES else hershey_skeleton(style, char)


def choose_style(char: str, rng: np.random.Generator, styles: Sequence[str]) -> str:
    """Pick the style for the ``font`` form of ``char`` among ``styles``, by weight."""
    usable = tuple(s for s in styles if char not in UNUSUAL_GLYPHS.get(s, ())) or tuple(styles)
    case = 0 if char.isupper() else 1
    weights = np.array([STYLE_WEIGHTS.get(s, (0.1, 0.1))[case] for s in usable])
    return usable[int(rng.choice(len(usable), p=weights / weights.sum()))]


def choose_form(char: str, rng: np.random.Generator, hand_share: float = 1.0) -> str:
    """Pick a form of ``char`` from the allograph table; ``hand_share`` scales the weights of
    the hand-made forms (0: always the ``font`` form)."""
    forms = allograph_table()[char]
    weights = np.array([w if name == FONT_FORM else w * hand_share for name, w in forms])
    if len(forms) == 1 or weights[1:].sum() <= 0:
        return FONT_FORM
    # Keep the font form's own weight so a share above 1 cannot make it negative.
    return forms[int(rng.choice(len(forms), p=weights / weights.sum()))][0]


def choose_skeleton(char: str, rng: np.random.Generator, styles: Sequence[str] = FONT_STYLES,
                    hand_share: float = 1.0) -> Skeleton:
    """Pick the form of ``char`` to draw: a style's glyph or a hand-made form."""
    check_char(char)
    styles = check_styles(styles)
    form = choose_form(char, rng, hand_share)
    if form != FONT_FORM:
        return hand_forms(char)[form]
    return style_skeleton(choose_style(char, rng, styles), char)
