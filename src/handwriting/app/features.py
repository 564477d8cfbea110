"""What a model sees inside: feature maps of its first convolutions, and the Grad-CAM overlay.

:func:`feature_maps` runs the image up to each of the first ``count`` convolution layers
(including those inside a nested model, such as the Keras VGG-16 base) and returns their
activations; :func:`mosaic` tiles them into one picture. :func:`explanation` wraps
:func:`handwriting.evaluation.explain.explain` (Grad-CAM, or gradient saliency for the purely
recurrent models) and its overlay, enlarged for the screen.

Keras and TensorFlow are imported only when a function needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    import keras

# Enough to see what the first filters pick up (strokes, edges, directions) without a wall of
# tiles: LeNet-5's first layer has 6 filters, VGG-16's 64.
MAX_CHANNELS = 16
DISPLAY_SIDE = 160


@dataclass(frozen=True)
class LayerMaps:
    """The activations of one convolution for one image."""

    layer: str
    maps: np.ndarray  # (h, w, channels) float32, at most MAX_CHANNELS channels
    channels: int     # how many the layer has in all


def _conv_paths(model: keras.Model, prefix: tuple = ()) -> Iterator[tuple]:
    """Paths ``(outer, ..., conv)`` to every 2-D convolution, nested models included, in
    graph order."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _conv_paths(layer, (*prefix, layer))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                keras.layers.SeparableConv2D)):
            yield (*prefix, layer)


def conv_layers(model: keras.Model) -> list[str]:
    """Names of the model's 2-D convolutions in graph order (empty for ``lstm`` / ``gru``)."""
    return [path[-1].name for path in _conv_paths(model)]


def _extractor(model: keras.Model, path: tuple) -> Callable[[Any], Any]:
    """A function from the model's input to the output of ``path[-1]``.

    A layer inside a nested model is reached through the tensor that enters that model in the
    outer graph, the way Grad-CAM splits models in :mod:`handwriting.evaluation.explain`
    (Keras 3 does not expose a nested model's inner tensors in the outer graph).
    """
    # Private helpers of explain.py, reused so that feature maps and Grad-CAM split models
    # the same way.
    from handwriting.evaluation.explain import model_piece, outer_tensors

    head, *rest = path
    if not rest:
        return model_piece(model.inputs[0], head.output)
    entering, _ = outer_tensors(head)
    before = model_piece(model.inputs[0], entering)
    inner = _extractor(head, tuple(rest))
    return lambda x: inner(before(x))


def feature_maps(model: keras.Model, image: np.ndarray, count: int = 2) -> list[LayerMaps]:
    """Activations of the first ``count`` convolutions for one (S, S) image in [0, 1].

    Returns an empty list for a model without convolutions.
    """
    batch = np.asarray(image, dtype=np.float32).reshape(1, *np.shape(image)[:2], 1)
    found = []
    for path in list(_conv_paths(model))[:count]:
        output = np.asarray(_extractor(model, path)(batch))[0]
        found.append(LayerMaps(path[-1].name, output[..., :MAX_CHANNELS].astype(np.float32),
                               int(output.shape[-1])))
    return found


def mosaic(maps: np.ndarray, *, columns: int = 8, tile: int = 64, gap: int = 4) -> np.ndarray:
    """(h, w, c) activations as one uint8 grayscale picture: a grid of ``tile``-pixel tiles,
    each channel scaled to its own range (bright = strong response), on a white background."""
    height, width, channels = maps.shape
    columns = max(1, min(columns, channels))
    rows = -(-channels // columns)
    picture = np.full((rows * (tile + gap) - gap, columns * (tile + gap) - gap), 255, np.uint8)
    for index in range(channels):
        channel = maps[..., index]
        low, high = float(channel.min()), float(channel.max())
        scaled = (channel - low) / (high - low) if high > low else np.zeros_like(channel)
        cell = cv2.resize((scaled * 255).astype(np.uint8), (tile, tile),
                          interpolation=cv2.INTER_NEAREST)
        y, x = (index // columns) * (tile + gap), (index % columns) * (tile + gap)
        picture[y:y + tile, x:x + tile] = cell
    return picture


def enlarge(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """A small image blown up with square pixels (browsers blur small images they scale)."""
    factor = max(1, side // max(image.shape[:2]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


@dataclass(frozen=True)
class Explanation:
    """The heat map of a prediction laid over the image."""

    method: str           # "grad-cam" or "saliency"
    overlay: np.ndarray   # (S, S, 3) uint8 RGB


def explanation(model: keras.Model, image: np.ndarray) -> Explanation:
    """Grad-CAM (or saliency for models without a convolution) of the predicted class."""
    from handwriting.evaluation.explain import explain, overlay

    heatmap, method = explain(model, image)
    return Explanation(method, overlay(image, heatmap))
