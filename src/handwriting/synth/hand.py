"""The simulated hand: a random "writer" that turns a clean skeleton into a hand-drawn trace.

A :class:`Writer` is drawn fresh for every sample, so each image has its own hand: its slant,
proportions, how shaky and how smooth its strokes are, how carefully strokes meet, what pen it
holds and how evenly it presses. :meth:`Writer.write` then applies that hand to a skeleton.

All lengths here are in cap heights of the letter's style (a capital 'H' is 1 tall), so a writer's
wobble or pen width means the same on every letter, whatever its bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .skeletons import RESAMPLE_STEP, Skeleton

# Tool kinds and how often they occur. A mouse in a paint program gives shaky, even-width, often
# jagged lines; a pen or tablet stylus gives smooth lines whose width follows the pressure; a
# marker gives fat, fairly even lines.
_DEVICES = ("mouse", "pen", "marker")
_DEVICE_P = (0.35, 0.45, 0.20)


@dataclass(frozen=True, eq=False)  # arrays inside: compare by identity
class Trace:
    """A letter as the hand drew it: stroke centre lines with a pen width and ink amount per point.

    Attributes:
        strokes: (N, 2) float arrays of (x, y) in cap heights, y down.
        widths: per-point pen widths (same lengths as ``strokes``), in cap heights.
        inks: per-point ink amount in (0, 1] (1 = full ink), from the pressure.
        aliased: draw without anti-aliasing (a paint program's hard pencil tool).
    """

    strokes: tuple[np.ndarray, ...]
    widths: tuple[np.ndarray, ...]
    inks: tuple[np.ndarray, ...]
    aliased: bool = False


@dataclass(frozen=True)
class Writer:
    """One person's hand for one sample. Build with :meth:`Writer.sample`."""

    device: str
    slant: float  # shear of x by y (positive leans right)
    rotation: float  # radians
    aspect: float  # width multiplier
    rounding: int  # half-window (in skeleton samples) of the smoothing that rounds sharp corners
    wobble: float  # amplitude of the slow per-stroke drift
    wobble_wavelength: float
    warp: float  # amplitude of the smooth whole-letter distortion
    tremor: float  # amplitude of the fast shake (mouse)
    join_jitter: float  # how far strokes are displaced from where they should meet
    stroke_jitter: float  # how much each stroke's own size and angle differ from the model
    overshoot: float  # scale of how far stroke ends over- or undershoot
    pen_width: float
    pressure: float  # how much the width varies along a stroke
    ink_variation: float  # how much the ink amount varies along a stroke
    taper: float  # fraction of width lost at stroke ends (pen lifting)
    aliased: bool
    # How this person sizes small letters against capitals, with the same pen: the stroke-weight
    # cue of real small letters. Written alone, small letters are not as much smaller as a font
    # makes them (an 'o' is drawn bigger than the x-height, a 'y' or 'l' shorter than the
    # font's ascender or descender): see :meth:`write`.
    small_size: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator, pen_scale: float = 1.0) -> Writer:
        """Draw a random writer; ``pen_scale`` multiplies the pen width."""
        device = _DEVICES[int(rng.choice(len(_DEVICES), p=_DEVICE_P))]
        # Slant: most people lean slightly right, some upright, a few left.
        slant = float(np.clip(rng.normal(0.12, 0.17), -0.35, 0.55))
        rotation = float(np.clip(rng.normal(0.0, 0.06), -0.18, 0.18))
        aspect = float(np.clip(np.exp(rng.normal(0.0, 0.15)), 0.72, 1.4))
        if device == "mouse":
            tremor = float(rng.uniform(0.002, 0.010))
            pen = float(np.exp(rng.uniform(np.log(0.06), np.log(0.18))))
            pressure, ink_var, taper = (float(rng.uniform(0.0, 0.08)),
                                        float(rng.uniform(0.0, 0.1)), 0.0)
            rounding = int(rng.integers(0, 2))
            aliased = bool(rng.random() < 0.2)
        elif device == "pen":
            tremor = float(rng.uniform(0.0, 0.003))
            pen = float(np.exp(rng.uniform(np.log(0.04), np.log(0.16))))
            pressure, ink_var = float(rng.uniform(0.1, 0.45)), float(rng.uniform(0.0, 0.45))
            taper = float(rng.uniform(0.0, 0.6)) if rng.random() < 0.6 else 0.0
            rounding = int(rng.integers(0, 4))
            aliased = False
        else:  # marker
            tremor = float(rng.uniform(0.0, 0.004))
            pen = float(rng.uniform(0.1, 0.18))
            pressure, ink_var, taper = (float(rng.uniform(0.0, 0.15)),
                                        float(rng.uniform(0.0, 0.2)), 0.0)
            rounding = int(rng.integers(1, 4))
            aliased = False
        # Some people write carefully, some scrawl: one factor scales every kind of irregularity.
        sloppy = float(np.clip(np.exp(rng.normal(0.0, 0.35)), 0.5, 1.7))
        return cls(
            device=device,
            slant=slant,
            rotation=rotation,
            aspect=aspect,
            rounding=rounding,
            wobble=sloppy * float(rng.uniform(0.006, 0.03)),
            wobble_wavelength=float(rng.uniform(0.7, 2.2)),
            warp=sloppy * float(rng.uniform(0.0, 0.05)),
            tremor=tremor,
            join_jitter=sloppy * float(rng.uniform(0.0, 0.025)),
            stroke_jitter=sloppy * float(rng.uniform(0.0, 0.06)),
            overshoot=sloppy * float(rng.uniform(0.0, 0.06)),
            pen_width=pen * pen_scale,
            pressure=pressure,
            ink_variation=ink_var,
            taper=taper,
            aliased=aliased,
            small_size=float(rng.uniform(0.8, 1.0)),
        )

    def write(self, skeleton: Skeleton, rng: np.random.Generator, *, small: bool = False) -> Trace:
        """Draw ``skeleton`` with this hand; the rng supplies this sample's own irregularities.

        ``small``: the skeleton is a small letter, written at this hand's ``small_size``.
        """
        # A small letter's written size: the font's size pulled towards the capitals' (square
        # root) and kept below 0.8 of a capital (so most small letters, 'o' as much as 'l', end
        # near 0.8: written alone, people draw them at much the same size), then shrunk by this
        # writer's own factor.
        scale = (self.small_size * min(np.sqrt(skeleton.extent), 0.8) if small
                 else skeleton.extent)
        # A pen is as wide on an 'o' as on an 'H', but not so wide that it fills in a small letter.
        pen_width = min(self.pen_width, 0.28 * scale)
        strokes = [np.asarray(s, float) * scale for s in skeleton.strokes]
        step = RESAMPLE_STEP * scale

        strokes = [self._round_corners(s) for s in strokes]
        strokes = [self._fix_ends(s, rng, step) for s in strokes]

        lengths = [len(s) for s in strokes]
        ids = np.repeat(np.arange(len(strokes)), lengths)
        pts = np.concatenate(strokes)
        n_strokes = len(strokes)
        # Arc length within each stroke (reset at every stroke start).
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        seg = np.concatenate([[0.0], seg])
        starts = np.cumsum([0] + lengths[:-1])
        seg[starts] = 0.0
        cum = np.cumsum(seg)
        arc = cum - cum[starts][ids]
        total = np.add.reduceat(seg, starts)  # stroke lengths

        # Each stroke is placed, sized and angled a little differently from the font (a crossbar
        # too high, an arm too long) and lands a little off where it should (imperfect joins).
        if n_strokes > 1:
            centres = np.array([s.mean(0) for s in strokes])[ids]
            ang = rng.normal(0.0, self.stroke_jitter, n_strokes)[ids]
            size = np.exp(rng.normal(0.0, self.stroke_jitter, n_strokes))[ids]
            rel = pts - centres
            ca, sa = np.cos(ang) * size, np.sin(ang) * size
            pts = centres + np.stack([ca * rel[:, 0] - sa * rel[:, 1],
                                      sa * rel[:, 0] + ca * rel[:, 1]], 1)
        pts = pts + rng.normal(0.0, self.join_jitter, (n_strokes, 2))[ids]

        # Slow drift along each stroke: two sinusoids per axis with random phases per stroke.
        phase = rng.uniform(0, 2 * np.pi, (n_strokes, 4))[ids]
        wl = self.wobble_wavelength * rng.uniform(0.7, 1.4, 2)
        k1, k2 = 2 * np.pi / wl[0], 2 * np.pi / wl[1]
        amp = self.wobble * rng.uniform(0.5, 1.0, 2)
        pts[:, 0] += (amp[0] * np.sin(k1 * arc + phase[:, 0])
                      + 0.5 * amp[1] * np.sin(k2 * arc + phase[:, 1]))
        pts[:, 1] += (amp[0] * np.sin(k1 * arc + phase[:, 2])
                      + 0.5 * amp[1] * np.sin(k2 * arc + phase[:, 3]))

        # Fast shake, smoothed over a few samples so it reads as tremor, not pixel noise.
        if self.tremor > 0:
            noise = rng.normal(0.0, 1.0, pts.shape)
            kernel = np.array([0.25, 0.5, 0.25])
            noise[:, 0] = np.convolve(noise[:, 0], kernel, mode="same")
            noise[:, 1] = np.convolve(noise[:, 1], kernel, mode="same")
            pts += noise * (self.tremor * 1.6)

        # Smooth distortion of the whole letter (the writer's hand, not the font's geometry).
        centre = 0.5 * (pts.min(0) + pts.max(0))
        rel = pts - centre
        if self.warp > 0:
            direction = rng.normal(0.0, 1.0, (3, 2))
            freq = (rng.uniform(1.5, 4.5, (3, 1)) * direction
                    / np.linalg.norm(direction, axis=1, keepdims=True))
            amps = rng.normal(0.0, self.warp, (3, 2))
            ph = rng.uniform(0, 2 * np.pi, 3)
            rel = rel + np.sin(rel @ freq.T + ph) @ amps

        # Affine part of the hand: proportions, slant, tilt.
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        m = np.array([[c, -s], [s, c]]) @ np.array([[self.aspect, -self.slant], [0.0, 1.0]])
        pts = rel @ m.T

        # Pressure: a slow random signal along each stroke drives width and ink amount.
        pphase = rng.uniform(0, 2 * np.pi, (n_strokes, 2))[ids]
        pk = 2 * np.pi / rng.uniform(0.4, 1.5, 2)
        signal = (0.65 * np.sin(pk[0] * arc + pphase[:, 0])
                  + 0.35 * np.sin(pk[1] * arc + pphase[:, 1]))
        width = pen_width * np.clip(1.0 + self.pressure * signal, 0.4, 1.8)
        ink = np.clip(1.0 - self.ink_variation * (0.5 + 0.5 * signal), 0.3, 1.0)
        if self.taper > 0:
            # The pen lands and lifts over a short distance at each stroke end.
            ramp = 0.12
            to_end = np.minimum(arc, total[ids] - arc)
            width = width * (1.0 - self.taper * np.clip(1.0 - to_end / ramp, 0.0, 1.0))
        width = np.maximum(width, 0.25 * pen_width)

        bounds = np.cumsum(lengths)[:-1]
        return Trace(
            strokes=tuple(np.split(pts, bounds)),
            widths=tuple(np.split(width, bounds)),
            inks=tuple(np.split(ink, bounds)),
            aliased=self.aliased,
        )

    def _round_corners(self, s: np.ndarray) -> np.ndarray:
        """Moving average along the stroke: a quick hand cuts corners, a careful one does not."""
        k = self.rounding
        if k <= 0 or len(s) < 3:
            return s
        n = len(s)
        c = np.concatenate([np.zeros((1, 2)), np.cumsum(s, axis=0)])
        i = np.arange(n)
        lo = np.maximum(i - k, 0)
        hi = np.minimum(i + k, n - 1)
        out = (c[hi + 1] - c[lo]) / (hi - lo + 1)[:, None]
        # Keep the true ends so strokes still reach where they were aimed.
        out[0], out[-1] = s[0], s[-1]
        return out

    def _fix_ends(self, s: np.ndarray, rng: np.random.Generator, step: float) -> np.ndarray:
        """Overshoot or undershoot each stroke end a little (strokes rarely meet exactly)."""
        if len(s) < 2:
            return s
        ext = rng.normal(0.0, self.overshoot, 2)
        seg = np.linalg.norm(np.diff(s, axis=0), axis=1)
        length = float(seg.sum())
        if length < 1e-9:
            return s
        # Never cut away more than a fifth of a stroke, so dots and short strokes survive.
        ext = np.maximum(ext, -0.2 * length)
        out = s
        for end in (0, 1):
            e = ext[end]
            pts = out if end == 1 else out[::-1]
            if e > 0:
                d = pts[-1] - pts[-2]
                n = np.linalg.norm(d)
                if n > 1e-9:
                    k = max(1, int(np.ceil(e / step)))
                    t = np.arange(1, k + 1)[:, None] * (e / k)
                    pts = np.concatenate([pts, pts[-1] + d / n * t])
            elif e < 0:
                back = np.cumsum(np.linalg.norm(np.diff(pts[::-1], axis=0), axis=1))
                drop = int(np.searchsorted(back, -e))
                if drop > 0 and len(pts) - drop >= 2:
                    pts = pts[: len(pts) - drop]
            out = pts if end == 1 else pts[::-1]
        return out
