"""Random variants of a preprocessed letter: rotation, translation and scaling (the seed's
three) plus shear, elastic distortion, stroke thickness and noise.

Rotation, shear, stretch, elastic distortion and thickness are applied on a canvas twice the
image's size, so no stroke is cut off, and the result goes back through the shared crop/pad/resize
(:func:`handwriting.imaging.fit_to_square`): a variant is framed exactly as the preprocessing
would frame a letter drawn that way. Translation comes last, in the final frame, standing for
the imperfect framing of real inputs (a stray mark widening the bounding box). A uniform scale
would be undone by the reframing, so ``scale`` stretches width and height independently.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from handwriting.imaging import ImageError, fit_to_square, to_uint8
from handwriting.params import Augment, Params


@dataclass(frozen=True)
class AugmentSettings(Augment):
    """Ranges of the random transformations: params.yaml's ``augment`` section (its fields,
    ``copies`` included) and the preprocessing's margin, which frames a variant as the
    preprocessing frames a letter (:meth:`from_params`)."""

    margin: float

    @classmethod
    def from_params(cls, params: Params) -> AugmentSettings:
        """The ranges of params.yaml: the augment stage's copies and the training's on-the-fly
        variants use them alike."""
        return cls(**vars(params.augment), margin=params.preprocess.margin)


def _geometric(canvas: np.ndarray, rng: np.random.Generator, s: AugmentSettings) -> np.ndarray:
    size = canvas.shape[0]
    centre = size / 2.0
    angle = np.deg2rad(rng.uniform(-s.rotation_degrees, s.rotation_degrees))
    shear = rng.uniform(-s.shear, s.shear)
    stretch = 1.0 + rng.uniform(-s.scale, s.scale, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    # rotation @ shear @ diag(stretch); scaling the columns is that last product, exactly.
    linear = (np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])) \
        * stretch
    matrix = np.empty((2, 3), dtype=np.float32)
    matrix[:, :2] = linear
    matrix[:, 2] = np.array([centre, centre]) - linear @ np.array([centre, centre])
    return cv2.warpAffine(canvas, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@functools.cache
def _pixel_grid(size: int) -> np.ndarray:
    """The (x, y) coordinates of every pixel of a ``size`` square, float32 [size, size, 2]."""
    grid_x, grid_y = np.meshgrid(np.arange(size, dtype=np.float32),
                                 np.arange(size, dtype=np.float32))
    grid = np.stack([grid_x, grid_y], axis=-1)
    grid.flags.writeable = False
    return grid


def _elastic(canvas: np.ndarray, rng: np.random.Generator, alpha: float) -> np.ndarray:
    size = canvas.shape[0]
    # Smooth random displacement: coarse noise upsampled, so the strokes bend rather than jitter.
    coarse = rng.uniform(-1.0, 1.0, size=(2, 5, 5)).astype(np.float32)
    shift = np.empty((size, size, 2), dtype=np.float32)  # (dx, dy) of every pixel
    for axis, noise in enumerate(coarse):  # one resize per axis: a two-channel resize rounds
        shift[..., axis] = cv2.resize(noise, (size, size),  # differently
                                      interpolation=cv2.INTER_CUBIC) * alpha * size
    return cv2.remap(canvas, _pixel_grid(size) + shift, None, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _thickness(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    if rng.random() < 0.5:
        return cv2.dilate(canvas, kernel)
    thinner = cv2.erode(canvas, kernel)
    # A thin pen would vanish: keep the original stroke rather than lose the letter.
    return thinner if (thinner > 0.5).sum() >= 0.3 * (canvas > 0.5).sum() else canvas


def augment_image(image: np.ndarray, rng: np.random.Generator,
                  settings: AugmentSettings) -> np.ndarray:
    """One random variant of a preprocessed image (float in [0, 1], ink = 1, square).

    Returns an image of the same shape, quantised to 1/255 steps like the preprocessing output.
    """
    framed = _variant(image, rng, settings)
    return (np.round(np.clip(framed, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def augment_uint8(image: np.ndarray, rng: np.random.Generator,
                  settings: AugmentSettings) -> np.ndarray:
    """:func:`augment_image` as uint8 (the same draws and pixels, one rounding fewer)."""
    return to_uint8(_variant(image, rng, settings))


def one_opencv_thread() -> None:
    """Run OpenCV on one thread in this process: on a letter's 64-pixel canvas its thread pool
    costs more than it saves (on one thread a variant takes about half the CPU time:
    ``benchmarks/augment_speed.py``), and training needs the cores. The pixels are the same
    either way."""
    cv2.setNumThreads(1)


def _variant(image: np.ndarray, rng: np.random.Generator,
             settings: AugmentSettings) -> np.ndarray:
    """The transformed image, not yet clipped or quantised."""
    size = image.shape[0]
    canvas = cv2.copyMakeBorder(image.astype(np.float32), size // 2, size // 2, size // 2,
                                size // 2, cv2.BORDER_CONSTANT, value=0)
    canvas = _geometric(canvas, rng, settings)
    if settings.elastic_alpha > 0:
        canvas = _elastic(canvas, rng, settings.elastic_alpha)
    if rng.random() < settings.thickness_probability:
        canvas = _thickness(canvas, rng)
    try:
        framed = fit_to_square(canvas, size, margin=settings.margin)
    except ImageError:  # the transformations erased the letter: keep the original
        framed = image.astype(np.float32)
    shift = rng.uniform(-settings.translation, settings.translation, size=2) * size
    matrix = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], dtype=np.float32)
    framed = cv2.warpAffine(framed, matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if settings.noise_std > 0:
        framed = framed + rng.normal(0.0, settings.noise_std, size=framed.shape)
    return framed
