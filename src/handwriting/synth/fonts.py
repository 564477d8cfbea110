"""Stroke skeletons from handwriting-style TrueType fonts, so the simulated hand can draw them.

People draw a letter with a pen of one width; a font glyph is an outline whose strokes swell and
thin. So a glyph is rendered large, thinned to its one-pixel centre line (scikit-image's
``skeletonize``), cleaned of the short spurs that thinning leaves at corners and rough edges, and
traced into pen strokes with the same chaining rule as the Hershey fonts
(:func:`~handwriting.synth.skeletons.join_segments`). The result is a
:class:`~handwriting.synth.skeletons.Skeleton` like any other, drawn by the writer's own pen.

The fonts come from ``fontpkg-*`` packages on PyPI, which ship the font files unmodified with
their licence; :data:`FONT_FAMILIES` lists the families we use, each with the licence we checked.
Nothing is loaded at import time: a family's file is opened on first use, skeletons are cached.
"""

from __future__ import annotations

import functools

import numpy as np

from .skeletons import Skeleton, check_char, join_segments, normalise, simplify

# Handwriting-style families (the fontpkg slug, which is also the style name used in params.yaml)
# and the licence of their files, as recorded by the package (a test checks that they agree).
# Each is on PyPI as ``fontpkg-<slug>``.
FONT_FAMILIES: dict[str, str] = {
    "caveat": "OFL-1.1",
    "comfortaa": "OFL-1.1",
    "delius": "OFL-1.1",
    "indie-flower": "OFL-1.1",
    "kalam": "OFL-1.1",
    "permanent-marker": "Apache-2.0",
    "quicksand": "OFL-1.1",
    "shadows-into-light": "OFL-1.1",
    "zeyada": "OFL-1.1",
    "dancing-script": "OFL-1.1",
    "satisfy": "Apache-2.0",
}

# Pixel size the glyphs are rendered at before thinning: large enough that the centre line is
# smooth and thin strokes stay connected, small enough to stay fast (all 52 letters of a family
# in well under a second).
_RENDER_PX = 160


class FontError(RuntimeError):
    """A font family is not installed or cannot draw a letter."""


@functools.cache
def font_file(family: str) -> str:
    """Path of the regular-weight file of ``family`` (a fontpkg slug)."""
    if family not in FONT_FAMILIES:
        valid = ", ".join(sorted(FONT_FAMILIES))
        raise FontError(f"unknown font family {family!r}; valid families: {valid}")
    import fontpkg  # imported here: nothing is loaded until a letter is drawn

    try:
        fam = fontpkg.family(family)
    except fontpkg.FamilyNotInstalled:
        raise FontError(
            f"font family {family!r} is not installed; reinstall the project "
            f"(pip install -e .) or `pip install fontpkg-{family}`") from None
    return str(fontpkg.select_file(fam, 400, "normal", True).path)


def font_licence(family: str) -> str:
    """The licence recorded by the installed ``fontpkg-<family>`` package."""
    import fontpkg

    font_file(family)  # the clear error if it is missing
    return fontpkg.family(family).license


@functools.cache
def _font(family: str):
    from PIL import ImageFont

    return ImageFont.truetype(font_file(family), _RENDER_PX)


def _glyph_mask(family: str, char: str) -> np.ndarray:
    """The glyph of ``char`` as a boolean ink mask, cropped to its ink (1-pixel blank border)."""
    from PIL import Image, ImageDraw

    font = _font(family)
    left, top, right, bottom = font.getbbox(char)
    pad = 8
    image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(image).text((pad - left, pad - top), char, font=font, fill=255)
    mask = np.asarray(image) > 127
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        raise FontError(f"font family {family!r} has no glyph for {char!r}")
    return np.pad(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 1)


@functools.cache
def _cap_height(family: str) -> float:
    return float(_glyph_mask(family, "H").shape[0] - 2)


_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _pixel_graph(skel: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Adjacency of skeleton pixels: 4-neighbours always, diagonal ones only where no 4-path
    joins them (otherwise every corner of the thin line would be a tiny triangle)."""
    pixels = list(zip(*np.nonzero(skel)))
    graph: dict[tuple[int, int], list[tuple[int, int]]] = {(int(r), int(c)): [] for r, c in pixels}
    for r, c in graph:
        for dr, dc in _NEIGHBOURS:
            q = (r + dr, c + dc)
            if q not in graph:
                continue
            if dr and dc and ((r + dr, c) in graph or (r, c + dc) in graph):
                continue
            graph[(r, c)].append(q)
    return graph


def _prune_spurs(graph: dict, max_len: float) -> None:
    """Remove branches that run from a free end to a junction in fewer than ``max_len`` pixels
    (thinning artefacts at corners and rough outlines), in place. One pass, so a real short
    stroke that ends in a junction after pruning is kept."""
    ends = [p for p, n in graph.items() if len(n) == 1]
    for end in ends:
        if end not in graph or len(graph[end]) != 1:
            continue
        path, prev, cur = [end], None, end
        while len(graph[cur]) == 2 or cur == end:
            nxt = [q for q in graph[cur] if q != prev]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            path.append(cur)
            if len(path) > max_len:
                break
        if len(graph[cur]) >= 3 and len(path) - 1 < max_len:
            for p in path[:-1]:
                for q in graph.pop(p):
                    if q in graph:
                        graph[q].remove(p)


def glyph_strokes(mask: np.ndarray) -> list[np.ndarray]:
    """Pen strokes (x, y polylines in pixels) along the centre line of a glyph's ink ``mask``."""
    import cv2
    from skimage.morphology import skeletonize

    # Close pinholes and hairline gaps of rough fonts before thinning.
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0
    skel = skeletonize(closed)
    dist = cv2.distanceTransform(closed.astype(np.uint8), cv2.DIST_L2, 3)
    half_width = float(np.median(dist[skel])) if skel.any() else 1.0
    graph = _pixel_graph(skel)
    _prune_spurs(graph, max_len=2.5 * half_width + 2)
    segments = []
    dots = []
    seen = set()
    for p, neighbours in graph.items():
        if not neighbours:
            dots.append(np.array([[p[1], p[0]]], float))
        for q in neighbours:
            if (q, p) not in seen:
                seen.add((p, q))
                segments.append(((p[1], p[0]), (q[1], q[0])))
    polylines = join_segments(segments, tol=0.5)
    strokes = []
    for poly in polylines:
        if len(poly) >= 5:
            # Smooth the pixel staircase before simplifying, keeping the true end points.
            inner = poly.copy()
            inner[1:-1] = (poly[:-2] + 2 * poly[1:-1] + poly[2:]) / 4
            poly = inner
        strokes.append(simplify(poly, 0.6))
    return strokes + dots


@functools.cache
def font_skeleton(family: str, char: str) -> Skeleton:
    """The skeleton of ``char`` in font ``family`` (a fontpkg slug), cached."""
    check_char(char)
    strokes = glyph_strokes(_glyph_mask(family, char))
    if not strokes:
        raise FontError(f"font family {family!r}: no strokes traced for {char!r}")
    return normalise(strokes, _cap_height(family), family)

