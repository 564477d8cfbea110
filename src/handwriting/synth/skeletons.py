"""Stroke skeletons of letters: centre lines a pen would follow, one polyline per stroke.

Two sources:

* Hershey vector fonts (via the ``HersheyFonts`` package). The library hands out line segments;
  they are chained back into pen strokes. The "complex"/"duplex"/"triplex" Hershey fonts draw a
  thick stroke as two or three parallel lines, which would render as outlines, so for those fonts
  parallel duplicates are removed and only one centre-ish line per stroke is kept.
* A few hand-made skeletons of common handwritten forms that no suitable Hershey style has
  (single-storey print 'a', crossed 'z', 'I' with bars, epsilon-shaped 'E', ...).

Every skeleton is normalised to the unit box (its longer side is 1, its top-left corner at the
origin, y pointing down like image rows) and records its size in cap heights, so the renderer can
pick a pen width relative to the writing size rather than to the glyph's bounding box (a pen is as
wide on an 'o' as on an 'l').

Everything is computed lazily on first use and cached per (style, char).
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass

import numpy as np

LETTERS = string.ascii_uppercase + string.ascii_lowercase

# Hershey fonts usable as handwriting skeletons, mapped to the number of parallel lines they draw a
# stroke with (1 = single-line "simplex" font). Gothic, Greek, Cyrillic, symbol and Japanese fonts
# are deliberately absent: their letters are either not Latin or look nothing like handwriting.
# futural == rowmans and scripts == cursive glyph for glyph in Hershey-Fonts 2.1; the aliases are
# accepted so callers can name either.
HERSHEY_STYLES: dict[str, int] = {
    "futural": 1,
    "rowmans": 1,
    "scripts": 1,
    "cursive": 1,
    "timesi": 2,
    "timesr": 2,
    "scriptc": 2,
    "futuram": 2,
    "rowmand": 2,
    "timesib": 3,
    "timesrb": 3,
    "rowmant": 3,
}

# Resampling step along strokes, in unit-box lengths: fine enough that the smooth distortions of
# the simulated hand bend straight font segments into curves, coarse enough to stay fast.
RESAMPLE_STEP = 0.025


@dataclass(frozen=True, eq=False)  # arrays inside: compare by identity
class Skeleton:
    """A letter as pen strokes.

    Attributes:
        strokes: polylines, each an (N, 2) float array of (x, y) in the unit box, y down.
        extent: the longer side of the glyph's bounding box, in cap heights of its style.
        source: where it came from (a Hershey style name or ``"hand:<n>"``), for debugging.
    """

    strokes: tuple[np.ndarray, ...]
    extent: float
    source: str

    @property
    def length(self) -> float:
        """Total ink path length in unit-box units."""
        return float(sum(np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in self.strokes))


def check_char(char: object) -> str:
    """Return ``char`` if it is one of the 52 letters, else raise ValueError naming it."""
    if not isinstance(char, str) or len(char) != 1 or char not in LETTERS:
        raise ValueError(f"cannot draw {char!r}: expected one of the 52 letters A-Z, a-z")
    return char


def check_style(style: object) -> str:
    """Return ``style`` if it is a supported Hershey style, else raise ValueError listing them."""
    if not isinstance(style, str) or style not in HERSHEY_STYLES:
        valid = ", ".join(sorted(HERSHEY_STYLES))
        raise ValueError(f"unknown handwriting style {style!r}; valid styles: {valid}")
    return style


# --------------------------------------------------------------------------------------------
# Hershey fonts


@functools.cache
def _font(style: str):
    # Imported here so that importing the package costs nothing until a letter is drawn.
    from HersheyFonts import HersheyFonts

    font = HersheyFonts()
    font.load_default_font(style)
    return font


@functools.cache
def _cap_height(style: str) -> float:
    pts = np.array([p for seg in _font(style).lines_for_text("H") for p in seg], dtype=float)
    return float(np.ptp(pts[:, 1]))


def join_segments(segments, tol: float = 1e-6, max_turn_deg: float = 50.0) -> list[np.ndarray]:
    """Chain line segments into polylines wherever their endpoints meet.

    At a point where exactly two segments meet they are always chained (that is how the font's
    pen moved). Where three or more meet (a 'T' junction, the apex of an 'A'), only the straightest
    continuation is chained and only if it turns less than ``max_turn_deg``, so a stem stays a
    separate stroke from the bar it meets, the way people draw it.
    """
    segs = [(np.asarray(a, float), np.asarray(b, float)) for a, b in segments]
    segs = [s for s in segs if np.linalg.norm(s[1] - s[0]) > 1e-9]
    if not segs:
        return []

    def key(p):
        return (round(p[0] / max(tol, 1e-9)), round(p[1] / max(tol, 1e-9)))

    # Each endpoint's key is computed once (a glyph traced from pixels has hundreds of
    # segments, and the walk below asks for them again at every step).
    keys = [(key(a), key(b)) for a, b in segs]
    ends: dict[tuple, list[int]] = {}
    for i, (ka, kb) in enumerate(keys):
        ends.setdefault(ka, []).append(i)
        ends.setdefault(kb, []).append(i)
    used = [False] * len(segs)
    cos_limit = np.cos(np.radians(max_turn_deg))

    def extend(path: list[np.ndarray], path_keys: list[tuple]) -> None:
        # Grow the path (and its points' keys) at its tail until no segment continues it.
        while True:
            tail, tail_key = path[-1], path_keys[-1]
            meeting = ends[tail_key]
            cands = [i for i in meeting if not used[i]]
            if not cands:
                return
            direction = tail - path[-2]
            direction = direction / (np.linalg.norm(direction) + 1e-12)
            best, best_cos = -1, -2.0  # every cosine beats -2: some candidate is chosen
            for i in cands:
                a, b = segs[i]
                nxt = b if keys[i][0] == tail_key else a
                d = nxt - tail
                c = float(direction @ d / (np.linalg.norm(d) + 1e-12))
                if c > best_cos:
                    best, best_cos = i, c
            if len(meeting) > 2 and best_cos < cos_limit:
                return
            used[best] = True
            (a, b), (ka, kb) = segs[best], keys[best]
            path.append(b if ka == tail_key else a)
            path_keys.append(kb if ka == tail_key else ka)

    # Start from endpoints of degree 1 first so open strokes are traced end to end, not from the
    # middle; closed loops are picked up afterwards.
    order = sorted(range(len(segs)), key=lambda i: min(len(ends[keys[i][0]]), len(ends[keys[i][1]])))
    polylines = []
    for i in order:
        if used[i]:
            continue
        used[i] = True
        (a, b), (ka, kb) = segs[i], keys[i]
        if len(ends[kb]) == 1 and len(ends[ka]) != 1:
            a, b, ka, kb = b, a, kb, ka
        path, path_keys = [a, b], [ka, kb]
        extend(path, path_keys)
        path.reverse()
        path_keys.reverse()
        extend(path, path_keys)
        polylines.append(np.array(path))
    return polylines


def _resample(poly: np.ndarray, step: float) -> np.ndarray:
    """Insert points so no gap exceeds ``step``, keeping the original vertices (corners)."""
    out = [poly[:1]]
    for a, b in zip(poly[:-1], poly[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        t = np.arange(1, n + 1)[:, None] / n
        out.append(a + (b - a) * t)
    return np.concatenate(out)


def _dedupe_parallel(polylines: list[np.ndarray], radius: float, min_len: float) -> list[np.ndarray]:
    """Keep one line of each bundle of parallel lines (multi-line Hershey fonts).

    Longest strokes are kept first; later strokes keep only the runs that are farther than
    ``radius`` from what is already kept, including earlier parts of the same stroke (duplex fonts
    draw a stem up and back down in one polyline). Short covered stretches between free runs are
    crossings (the bar of a 't' over its stem), not duplicates, and are kept. Free runs shorter than
    ``min_len`` are dropped as slivers; each kept run is extended by one sample into the covered part
    so it still touches the stroke it branched from.
    """
    step = 0.25
    # Covered stretches up to this long between free runs are crossings or the start of a branch
    # leaving a stroke at a shallow angle (the arch of an 'h'), not duplicates.
    max_crossing = 3 * radius + 1.0
    polylines = sorted(polylines, key=lambda p: -np.linalg.norm(np.diff(p, axis=0), axis=1).sum())
    kept: list[np.ndarray] = []
    kept_dirs: list[np.ndarray] = []
    for poly in polylines:
        dense = _resample(poly, step)
        n = len(dense)
        dirs = _tangents(dense)
        free = np.ones(n, bool)
        if kept:
            kept_pts, kd = np.concatenate(kept), np.concatenate(kept_dirs)
            close = ((dense[:, None, :] - kept_pts[None, :, :]) ** 2).sum(-1) <= radius * radius
            # Only lines running alongside count as duplicates, not strokes crossing at an angle.
            parallel = np.abs(dirs @ kd.T) > 0.8
            free &= ~(close & parallel).any(1)
        # Self-coverage: a point near an earlier point of this stroke that is far along the path.
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
        near = ((dense[:, None, :] - dense[None, :, :]) ** 2).sum(-1) <= radius * radius
        far_along = (arc[:, None] - arc[None, :]) > 3 * radius + 1.0
        free &= ~(near & far_along & (np.abs(dirs @ dirs.T) > 0.8)).any(1)
        # Fill short covered gaps between free runs (crossings).
        edges = np.flatnonzero(np.diff(np.concatenate([[1], free.astype(np.int8), [1]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            if 0 < start and stop < n and arc[stop] - arc[start - 1] <= max_crossing:
                free[start:stop] = True
        edges = np.flatnonzero(np.diff(np.concatenate([[0], free.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            lo, hi = max(0, start - 1), min(n, stop + 1)
            run = dense[lo:hi]
            if len(run) < 2 or arc[hi - 1] - arc[lo] < min_len:
                continue
            kept.append(run)
            kept_dirs.append(dirs[lo:hi])
    return kept


def _tangents(p: np.ndarray) -> np.ndarray:
    """Unit direction of a polyline at each point (central differences)."""
    if len(p) < 2:
        return np.zeros_like(p)
    d = np.gradient(p, axis=0)
    return d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)


def _drop_serifs(polylines: list[np.ndarray], cap: float) -> list[np.ndarray]:
    """Remove printer's serifs, which no one writes by hand.

    Two kinds are recognised: a short straight bar centred on the end of another stroke (the feet
    of an italic 'H'), and a short straight tick hanging off the end of another stroke with its
    other end free (the ends of the arms of 'E', 'T'). A crossbar that meets a stem in its middle
    ('t', 'f') or starts at a stem ('E') is not touched.
    """
    lengths = [float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) for p in polylines]
    near = 0.09 * cap

    def dist_to_ends(pt, j):
        q = polylines[j]
        return min(np.linalg.norm(q[0] - pt), np.linalg.norm(q[-1] - pt))

    def dist_to_stroke(pt, j):
        return float(np.linalg.norm(_resample(polylines[j], 0.25) - pt, axis=1).min())

    keep = []
    for i, p in enumerate(polylines):
        chord = float(np.linalg.norm(p[-1] - p[0]))
        others = [j for j in range(len(polylines)) if j != i and lengths[j] > 0.5 * lengths[i]]
        if chord > 0.9 * lengths[i] and others:
            mid = 0.5 * (p[0] + p[-1])
            if lengths[i] < 0.4 * cap and any(dist_to_ends(mid, j) < near for j in others):
                continue
            if lengths[i] < 0.3 * cap:
                free = [min(dist_to_stroke(e, j) for j in range(len(polylines)) if j != i) > near for e in (p[0], p[-1])]
                hooked = [any(dist_to_ends(e, j) < near for j in others) for e in (p[0], p[-1])]
                if (hooked[0] and free[1]) or (hooked[1] and free[0]):
                    continue
        keep.append(_cut_end_ticks(p, 0.2 * cap))
    return keep


def _cut_end_ticks(p: np.ndarray, max_len: float) -> np.ndarray:
    """Cut a short straight tick that turns sharply off the end of a stroke (the end of an arm)."""
    for _ in range(2):
        if len(p) >= 3:
            a, b, c = p[-3], p[-2], p[-1]
            u, v = b - a, c - b
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            if 0 < nv < max_len and nu > nv and u @ v < np.cos(np.radians(70)) * nu * nv:
                p = p[:-1]
        p = p[::-1]
    return p


def simplify(poly: np.ndarray, eps: float) -> np.ndarray:
    """Douglas-Peucker simplification (keeps the end points)."""
    if len(poly) < 3:
        return poly
    a, b = poly[0], poly[-1]
    ab = b - a
    n = np.linalg.norm(ab)
    if n < 1e-12:
        d = np.linalg.norm(poly - a, axis=1)
    else:
        d = np.abs(ab[0] * (poly[:, 1] - a[1]) - ab[1] * (poly[:, 0] - a[0])) / n
    i = int(np.argmax(d))
    if d[i] <= eps:
        return np.stack([a, b])
    left = simplify(poly[: i + 1], eps)
    right = simplify(poly[i:], eps)
    return np.concatenate([left[:-1], right])


def normalise(polylines: list[np.ndarray], cap_height: float, source: str) -> Skeleton:
    pts = np.concatenate(polylines)
    lo, hi = pts.min(0), pts.max(0)
    side = float(max(hi - lo))
    if side <= 0:
        raise RuntimeError(f"degenerate skeleton from {source}")
    strokes = []
    for p in polylines:
        s = _resample((p - lo) / side, RESAMPLE_STEP)
        s.setflags(write=False)
        strokes.append(s)
    return Skeleton(strokes=tuple(strokes), extent=side / cap_height, source=source)


@functools.cache
def font_skeleton(style: str, char: str) -> Skeleton:
    """The skeleton of ``char`` in Hershey ``style`` (cached)."""
    check_style(style)
    check_char(char)
    lines = list(_font(style).lines_for_text(char))
    polylines = join_segments(lines)
    n_lines = HERSHEY_STYLES[style]
    if n_lines > 1:
        # Parallel lines of one stroke are 1 font unit apart (2 in triplex); the radius must
        # swallow them but not neighbouring strokes of the letter, which are >= ~2.5 units apart.
        polylines = _dedupe_parallel(polylines, radius=1.05 * (n_lines - 1) + 0.3, min_len=1.6)
        polylines = [simplify(p, 0.2) for p in polylines]
        polylines = join_segments([(a, b) for p in polylines for a, b in zip(p[:-1], p[1:])], tol=0.3)
        polylines = _drop_serifs(polylines, _cap_height(style))
    return normalise(polylines, _cap_height(style), style)


# --------------------------------------------------------------------------------------------
# Hand-made alternative forms. Coordinates: cap line y=0, x-height line y=0.35, baseline y=1,
# descender line y=1.35, in cap heights; x grows right.

XH = 0.35  # x-height line
BASE = 1.0
DESC = 1.35


def _arc(cx, cy, rx, ry, t0, t1, n=None):
    """Elliptic arc from angle t0 to t1 (degrees; 0 = right, 90 = down, -90 = up)."""
    n = n or max(4, int(abs(t1 - t0) / 12))
    t = np.radians(np.linspace(t0, t1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _line(*pts):
    return np.array(pts, float)


def _cat(*parts):
    return np.concatenate(parts)


def _bowl(cx=0.28, rx=0.27, top=XH, bottom=BASE, start=-15, end=-350):
    """A counter-clockwise (as drawn) bowl like the body of 'a', 'd', 'g', 'q'."""
    cy, ry = (top + bottom) / 2, (bottom - top) / 2
    return _arc(cx, cy, rx, ry, start, end)


def _hand_forms_table():
    # Functions so nothing is computed at import time. Form names are what the allograph table
    # (allographs.py) weighs and plots/allographs.png labels.
    xm = (XH + BASE) / 2
    return {
        "a": {
            # print single-storey 'a': round bowl then a straight stem on the right
            "single-storey": [_bowl(), _line((0.56, XH), (0.56, BASE))],
            # ...the stem drawn in the same stroke, ending with a small flick
            "single-storey, one stroke": [_cat(_bowl(start=-5, end=-355),
                                               _line((0.56, XH - 0.02), (0.56, 0.93), (0.62, BASE), (0.68, 0.96)))],
        },
        "g": {
            # single-storey 'g' with a descender hooking left
            "single-storey, hooked tail": [_bowl(bottom=0.95), _cat(_line((0.56, XH), (0.56, 1.15)), _arc(0.32, 1.15, 0.24, 0.2, 0, 150))],
            # '9'-like 'g' with a straight tail
            "single-storey, straight tail": [_bowl(bottom=0.95), _line((0.56, XH), (0.54, DESC))],
        },
        "q": {
            "straight tail": [_bowl(), _line((0.56, XH), (0.56, DESC))],
            "flicked tail": [_bowl(), _line((0.56, XH), (0.56, DESC - 0.05), (0.66, DESC - 0.12))],
        },
        "y": {
            # 'u'-shaped 'y' whose right stem carries on into a hooked descender
            "u with curved tail": [
                _cat(_line((0.04, XH), (0.04, 0.8)), _arc(0.28, 0.8, 0.24, 0.2, 180, 90), _arc(0.28, 0.8, 0.26, 0.2, 90, 0)[1:]),
                _cat(_line((0.54, XH), (0.54, 1.15)), _arc(0.3, 1.15, 0.24, 0.2, 0, 160)),
            ],
            "v with straight tail": [_line((0.0, XH), (0.3, BASE)), _line((0.6, XH), (0.12, DESC))],
        },
        "t": {
            "cross": [_line((0.22, 0.08), (0.22, BASE)), _line((0.0, XH), (0.46, XH))],
            "hooked foot": [_cat(_line((0.2, 0.08), (0.2, 0.88)), _arc(0.34, 0.88, 0.14, 0.12, 180, 45)), _line((0.0, XH), (0.44, XH))],
        },
        "z": {"crossed": [_line((0.0, XH), (0.52, XH), (0.0, BASE), (0.55, BASE)), _line((0.1, xm), (0.44, xm))]},
        "Z": {"crossed": [_line((0.02, 0.0), (0.66, 0.0), (0.0, BASE), (0.7, BASE)), _line((0.12, 0.5), (0.56, 0.5))]},
        "I": {"with bars": [_line((0.0, 0.0), (0.44, 0.0)), _line((0.22, 0.0), (0.22, BASE)), _line((0.0, BASE), (0.44, BASE))]},
        "J": {"with top bar": [_line((0.12, 0.0), (0.72, 0.0)), _cat(_line((0.45, 0.0), (0.45, 0.78)), _arc(0.24, 0.78, 0.21, 0.22, 0, 160))]},
        "G": {"no spur": [_cat(_arc(0.4, 0.5, 0.4, 0.5, -40, -355), _line((0.78, 0.56), (0.45, 0.56)))]},
        # epsilon-like cursive print 'E'
        "E": {"epsilon": [_cat(_arc(0.32, 0.26, 0.28, 0.24, -30, -270), _arc(0.34, 0.74, 0.32, 0.26, -90, -330)[1:])]},
        "l": {
            "hooked foot": [_cat(_line((0.08, 0.0), (0.08, 0.86)), _arc(0.2, 0.86, 0.12, 0.14, 180, 60))],
            "loop": [_line((0.0, 0.85), (0.12, 0.55), (0.2, 0.28), (0.22, 0.1), (0.16, 0.0), (0.09, 0.05),
                           (0.07, 0.3), (0.07, 0.88), (0.14, 0.99), (0.26, 0.95))],
        },
        "i": {"hooked foot": [_arc(0.1, 0.14, 0.035, 0.035, 0, 360, 9), _cat(_line((0.08, XH), (0.08, 0.88)), _arc(0.2, 0.88, 0.12, 0.12, 180, 60))]},
        "f": {"hooked top": [_cat(_arc(0.38, 0.16, 0.17, 0.16, -10, -180), _line((0.21, 0.16), (0.21, BASE))), _line((0.02, XH), (0.46, XH))]},
        "e": {"bar first": [_cat(_line((0.04, 0.68), (0.54, 0.68)), _arc(0.3, 0.68, 0.26, 0.33, 0, -300))]},
        "k": {"one-stroke arm": [_line((0.04, 0.0), (0.04, BASE)), _line((0.48, XH), (0.05, 0.72), (0.5, BASE))]},
        "Y": {"straight stem": [_line((0.0, 0.0), (0.35, 0.5)), _line((0.7, 0.0), (0.35, 0.5), (0.35, BASE))]},
        "M": {"one stroke, deep middle": [_line((0.0, BASE), (0.04, 0.0), (0.4, 0.7), (0.76, 0.0), (0.8, BASE))]},
        "W": {"one stroke, short middle": [_line((0.0, 0.0), (0.22, BASE), (0.45, 0.3), (0.68, BASE), (0.9, 0.0))]},
        "Q": {"crossing tail": [_arc(0.42, 0.5, 0.42, 0.5, -90, 270), _line((0.5, 0.72), (0.9, 1.08))]},
        "A": {"two strokes": [_line((0.0, BASE), (0.35, 0.0), (0.7, BASE)), _line((0.14, 0.62), (0.58, 0.62))]},
        "b": {"stem and bowl": [_line((0.04, 0.0), (0.04, BASE)), _arc(0.3, (XH + BASE) / 2, 0.26, (BASE - XH) / 2, 200, 525)]},
        "p": {"stem and bowl": [_line((0.04, XH), (0.04, DESC)), _arc(0.3, (XH + BASE) / 2, 0.26, (BASE - XH) / 2, 200, 525)]},
        "h": {"stem and arch": [_line((0.04, 0.0), (0.04, BASE)), _cat(_arc(0.27, 0.62, 0.23, 0.22, 190, 360), _line((0.5, BASE)))]},
        "n": {"stem and arch": [_line((0.04, XH), (0.04, BASE)), _cat(_arc(0.27, 0.62, 0.23, 0.22, 190, 360), _line((0.5, BASE)))]},
    }


@functools.cache
def hand_forms(char: str) -> dict[str, Skeleton]:
    """Hand-made forms of ``char`` by name (possibly none), cached."""
    check_char(char)
    forms = _hand_forms_table().get(char, {})
    return {name: normalise([np.asarray(p, float) for p in form], 1.0, f"hand:{char}:{name}")
            for name, form in forms.items()}


@functools.cache
def alternate_skeletons(char: str) -> tuple[Skeleton, ...]:
    """Hand-made alternative forms of ``char`` (possibly none), cached."""
    return tuple(hand_forms(char).values())
