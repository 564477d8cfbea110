"""Why did the model say that? Heat maps of the pixels behind a prediction.

* :func:`grad_cam`: Grad-CAM (Selvaraju et al., 2017) on the last spatial convolution of the
  CNN models (``lenet5``, ``vgg16``) and of the CNN part of the hybrids (``lenet5_gru``,
  ``vgg16_gru``); :func:`last_conv_layer` picks that layer.
* :func:`saliency`: vanilla gradient saliency, ``|d score / d input|``, for every model; the
  only choice for the purely recurrent ``lstm`` and ``gru``.
* :func:`explain`: whichever of the two fits the model.
* :func:`overlay` and :func:`explanation_grid`: pictures of the heat maps.

Images are ``(H, W)`` or ``(H, W, 1)`` floats in [0, 1] with ink = 1, as the models take them;
heat maps are ``(H, W)`` float32 in [0, 1]. The class score that is differentiated is the
pre-softmax logit of the final ``Dense(softmax)`` layer when the model has one (a confident
softmax saturates and its gradients vanish), else the model's output.

Grad-CAM splits the model at the chosen convolution: a model from the input to that feature
map, and the rest of the network run on the map inside a ``tf.GradientTape``. A convolution
inside a nested sub-model (the Keras VGG-16 base) is reached by splitting the sub-model the
same way, because Keras 3 does not expose a nested model's inner tensors in the outer graph.

Nothing is built at import time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handwriting.labels import char_of, index_of

if TYPE_CHECKING:
    import keras

GRAD_CAM = "grad-cam"
SALIENCY = "saliency"
# A 1x1 feature map carries no "where"; Grad-CAM needs at least this many cells a side.
MIN_CAM_SIDE = 2
COLORMAP = "jet"

Tensor = Any  # a backend tensor
Piece = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _to_float(array: np.ndarray) -> np.ndarray:
    """float32; integer images (0..255) are rescaled to [0, 1]."""
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return (array / (1 if array.dtype == bool else 255.0)).astype(np.float32)
    return array.astype(np.float32, copy=False)


def _as_batch(images: Any) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, 1)`` -> ``(N, H, W, 1)`` float32."""
    batch = _to_float(np.asarray(images))
    if batch.ndim == 3:
        batch = batch[..., np.newaxis]
    if batch.ndim != 4 or batch.shape[-1] != 1:
        raise ValueError(
            f"images must be (N, H, W) or (N, H, W, 1) grayscale; got shape {batch.shape}"
        )
    return batch


def _as_image(image: Any) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 1)`` -> ``(1, H, W, 1)`` float32."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"image must be (H, W) or (H, W, 1) grayscale; got shape {array.shape}")
    return _to_float(array)[np.newaxis, ..., np.newaxis]


def _check_fits(model: keras.Model, batch: np.ndarray) -> None:
    """The images have the size the model was built for."""
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; expected one")
    expected = tuple(model.inputs[0].shape[1:3])
    actual = tuple(batch.shape[1:3])
    if any(e is not None and e != a for e, a in zip(expected, actual)):
        raise ValueError(
            f"model {model.name!r} takes {expected[0]}x{expected[1]} images; "
            f"got {actual[0]}x{actual[1]}"
        )


def _class_indices(
    class_index: int | Sequence[int] | np.ndarray | None, count: int, num_classes: int
) -> np.ndarray | None:
    """Validated class indices, one per image, or None for "the predicted class"."""
    if class_index is None:
        return None
    indices = np.broadcast_to(np.asarray(class_index), (count,)).astype(np.int64)
    bad = indices[(indices < 0) | (indices >= num_classes)]
    if bad.size:
        raise ValueError(f"class index {int(bad[0])} is outside 0..{num_classes - 1}")
    return indices


# --------------------------------------------------------------------------------------------
# Finding and splitting at a layer
# --------------------------------------------------------------------------------------------


def _walk(model: keras.Model, prefix: tuple = ()) -> Iterator[tuple]:
    """Paths ``(outer, ..., layer)`` to every layer, nested models included, in graph order."""
    import keras

    for layer in model.layers:
        path = (*prefix, layer)
        yield path
        if isinstance(layer, keras.Model):
            yield from _walk(layer, path)


def _map_size(layer: Any) -> tuple[int | None, int | None] | None:
    """(h, w) of a layer's 4-D output in its own graph, or None when it has none."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError, RuntimeError):  # unbuilt, or used more than once
        return None
    if len(shape) != 4:
        return None
    return shape[1], shape[2]


def _conv_paths(model: keras.Model) -> list[tuple]:
    import keras

    return [path for path in _walk(model) if isinstance(path[-1], keras.layers.Conv2D)]


def last_conv_layer(model: keras.Model) -> str | None:
    """The name of the layer Grad-CAM should look at, or None for a model without convolutions.

    That is the last ``Conv2D`` layer (nested models such as the VGG-16 base included) whose
    feature map is at least ``MIN_CAM_SIDE`` x ``MIN_CAM_SIDE``: ``conv2`` for ``lenet5``,
    ``conv3`` for ``lenet5_gru``, ``block5_conv3`` for ``vgg16`` (2x2 at 32x32 input). Only
    when every convolution ends in a 1x1 map is the last one returned anyway. When the rest of
    the network also needs tensors from before that convolution (a residual block adds its
    input), it is the block's output after it instead (``block3_out`` for ``rescnn``). None for
    the purely recurrent ``lstm`` and ``gru``.
    """
    paths = _conv_paths(model)
    if not paths:
        return None
    chosen = paths[-1]
    for path in reversed(paths):
        size = _map_size(path[-1])
        if size is None or all(side is None or side >= MIN_CAM_SIDE for side in size):
            chosen = path
            break
    if _is_cut(model, chosen):
        return chosen[-1].name
    walk = list(_walk(model))
    after = walk[next(i for i, path in enumerate(walk) if path == chosen) + 1:]
    for path in after:
        if len(path) == len(chosen) and _map_size(path[-1]) is not None \
                and _is_cut(model, path):
            return path[-1].name
    return chosen[-1].name


def _is_cut(model: keras.Model, path: tuple) -> bool:
    """Whether the rest of the network needs nothing but this layer's output."""
    try:
        _split(model, path, model.outputs[0])
    except ValueError:
        return False
    return True


def _find(model: keras.Model, layer_name: str) -> tuple:
    """The path to the layer of that name; the outermost one when a name repeats."""
    matches = [path for path in _walk(model) if path[-1].name == layer_name]
    if not matches:
        convs = ", ".join(path[-1].name for path in _conv_paths(model)) or "none"
        raise ValueError(
            f"model {model.name!r} has no layer named {layer_name!r} "
            f"(its convolution layers: {convs})"
        )
    return min(matches, key=len)


def outer_tensors(sub: keras.Model) -> tuple[Tensor, Tensor]:
    """The tensors that enter and leave a nested model in its parent's graph.

    A Keras 3 Functional's own ``.input``/``.output`` name its *internal* tensors, so the
    parent-graph ones are read from the single node that calls it.
    """
    nodes = getattr(sub, "_inbound_nodes", None) or []
    if len(nodes) != 1:
        raise ValueError(
            f"cannot split at a layer inside {sub.name!r}: the nested model is called "
            f"{len(nodes)} times in its parent (Grad-CAM needs exactly one call)"
        )
    inputs, outputs = list(nodes[0].input_tensors), list(nodes[0].output_tensors)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"cannot split at a layer inside {sub.name!r}: it has {len(inputs)} inputs and "
            f"{len(outputs)} outputs (Grad-CAM needs one of each)"
        )
    return inputs[0], outputs[0]


def model_piece(inputs: Tensor, outputs: Tensor) -> Piece:
    """The part of a graph from ``inputs`` to ``outputs``, run in inference mode."""
    import keras

    if outputs is inputs:
        return lambda x: x
    try:
        # Keras 3 accepts an intermediate tensor as input (it clones the graph from there).
        part = keras.Model(inputs, outputs)
    except ValueError as error:
        raise ValueError(
            "cannot split the model there: the rest of the network also needs tensors from "
            f"before that layer ({error})"
        ) from error
    return lambda x: part(x, training=False)


def _split(model: keras.Model, path: tuple, end: Tensor) -> tuple[Piece, Piece]:
    """(input -> the output of ``path[-1]``, that output -> ``end``), through nested models."""
    if len(path) == 1:
        target = path[0].output
        return model_piece(model.inputs[0], target), model_piece(target, end)
    sub = path[0]
    entering, leaving = outer_tensors(sub)
    before, after = model_piece(model.inputs[0], entering), model_piece(leaving, end)
    sub_lower, sub_upper = _split(sub, path[1:], sub.outputs[0])
    return (lambda x: sub_lower(before(x))), (lambda a: after(sub_upper(a)))


def _score_head(model: keras.Model) -> tuple[Tensor, Piece]:
    """(tensor, function of it giving the class scores): the logits where they can be had.

    For a final ``Dense(softmax)`` the tensor is that layer's input and the function its
    affine part; otherwise the tensor is the model's output and the function the identity.
    """
    import keras
    from keras import ops

    output = model.outputs[0]
    for layer in reversed(model.layers):
        try:
            produces_output = layer.output is output
        except (AttributeError, ValueError, RuntimeError):
            continue
        if not produces_output:
            continue
        activation = getattr(getattr(layer, "activation", None), "__name__", None)
        if isinstance(layer, keras.layers.Dense) and activation == "softmax":
            def logits(h: Tensor, dense: Any = layer) -> Tensor:
                z = ops.matmul(h, dense.kernel)
                return z + dense.bias if dense.bias is not None else z
            return layer.input, logits
        break
    return output, lambda y: y


def _selected_scores(scores: Tensor, classes: np.ndarray | None) -> tuple[Tensor, np.ndarray]:
    """Sum over the batch of each image's class score, and the classes used."""
    import tensorflow as tf

    num_classes = int(scores.shape[-1])
    chosen = _class_indices(classes, int(scores.shape[0]), num_classes)
    if chosen is None:
        chosen = np.argmax(np.asarray(scores), axis=-1)
    picked = tf.gather(scores, tf.constant(chosen, dtype=tf.int32), axis=1, batch_dims=1)
    return tf.reduce_sum(picked), chosen


# --------------------------------------------------------------------------------------------
# Heat maps, batched
# --------------------------------------------------------------------------------------------


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum: [0, 1]; an all-zero map stays zero."""
    maps = np.maximum(np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    peak = maps.max(axis=(1, 2), keepdims=True)
    scaled = maps / np.where(peak > 0, peak, 1.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _grad_cam_batch(
    model: keras.Model, batch: np.ndarray, class_index: Any = None, layer_name: str | None = None
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) of a (N, H, W, 1) batch."""
    import cv2
    import tensorflow as tf

    _check_fits(model, batch)
    if layer_name is None:
        layer_name = last_conv_layer(model)
        if layer_name is None:
            raise ValueError(
                f"Grad-CAM needs a convolution layer and model {model.name!r} has none "
                "(a purely recurrent model?); use saliency() or explain() instead"
            )
    lower, upper, head = _grad_cam_pieces(model, layer_name)

    # The feature map is a source of the gradient, so nothing before it need be recorded.
    features = lower(tf.constant(batch))
    with tf.GradientTape() as tape:
        tape.watch(features)
        total, _ = _selected_scores(head(upper(features)), class_index)
    grads = tape.gradient(total, features)
    if grads is None:
        raise ValueError(f"the class score of model {model.name!r} does not depend on layer "
                         f"{layer_name!r}")
    # Channel weights: the gradient averaged over the map (Grad-CAM's alpha_k).
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy().astype(np.float32)
    height, width = batch.shape[1:3]
    resized = np.stack([
        cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR) for cam in cams
    ])
    return _normalise(resized)


# The pieces of each model cut at a layer, kept while the model lives: cutting clones part of
# the graph (keras.Model of intermediate tensors), which costs more than explaining a batch.
_PIECES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _grad_cam_pieces(model: keras.Model, layer_name: str) -> tuple[Piece, Piece, Piece]:
    """(input -> the layer's feature map, that map -> the scores' tensor, that tensor -> class
    scores) of ``model``, built once per model and layer."""
    pieces = _PIECES.setdefault(model, {})
    if layer_name not in pieces:
        path = _find(model, layer_name)
        if _map_size(path[-1]) is None:
            raise ValueError(
                f"layer {layer_name!r} of model {model.name!r} has no (batch, h, w, channels) "
                "feature map; Grad-CAM needs a convolution layer"
            )
        end, head = _score_head(model)
        lower, upper = _split(model, path, end)
        pieces[layer_name] = (lower, upper, head)
    return pieces[layer_name]


def _saliency_batch(model: keras.Model, batch: np.ndarray, class_index: Any = None) -> np.ndarray:
    """Gradient saliency maps (N, H, W) of a (N, H, W, 1) batch."""
    import tensorflow as tf

    _check_fits(model, batch)
    end, head = _score_head(model)
    body = model_piece(model.inputs[0], end)
    x = tf.constant(batch)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total, _ = _selected_scores(head(body(x)), class_index)
    grads = tape.gradient(total, x)
    if grads is None:
        raise ValueError(f"the output of model {model.name!r} does not depend on its input")
    return _normalise(np.abs(grads.numpy()).max(axis=-1))


def _explain_batch(model: keras.Model, batch: np.ndarray, class_index: Any = None
                   ) -> tuple[np.ndarray, str]:
    """Grad-CAM maps of a batch when the model has a convolution, else saliency maps."""
    if last_conv_layer(model) is not None:
        return _grad_cam_batch(model, batch, class_index), GRAD_CAM
    return _saliency_batch(model, batch, class_index), SALIENCY


# --------------------------------------------------------------------------------------------
# Public API: one image
# --------------------------------------------------------------------------------------------


def grad_cam(
    model: keras.Model, image: np.ndarray, class_index: int | None = None,
    layer_name: str | None = None,
) -> np.ndarray:
    """Grad-CAM heat map of one image: (H, W) float32 in [0, 1], 1 where it matters most.

    ``image`` is (H, W) or (H, W, 1) in [0, 1], of the size the model takes. ``class_index``
    is the class to explain (default: the predicted one). ``layer_name`` is the convolution
    to look at (default: :func:`last_conv_layer`); a layer inside a nested model (the VGG-16
    base) is named by its own name, such as ``block4_conv3``. The coarse map of that layer is
    resized bilinearly to the image. An image with no positive evidence gives all zeros.

    Raises ValueError for a model without a convolution layer (``lstm``, ``gru``: use
    :func:`saliency`), an unknown layer, a wrong image shape or a class index out of range.
    """
    return _grad_cam_batch(model, _as_image(image), class_index, layer_name)[0]


def saliency(model: keras.Model, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Vanilla gradient saliency of one image: ``|d score / d pixel|`` divided by its maximum.

    (H, W) float32 in [0, 1]; works for every model. ``image`` and ``class_index`` as in
    :func:`grad_cam`. A map whose gradient is zero everywhere stays all zeros.
    """
    return _saliency_batch(model, _as_image(image), class_index)[0]


def explain(
    model: keras.Model, image: np.ndarray, class_index: int | None = None
) -> tuple[np.ndarray, str]:
    """The fitting explanation of one image: ``(heat map, method)``.

    Grad-CAM (method ``"grad-cam"``) when the model has a convolution layer, else gradient
    saliency (``"saliency"``). The heat map is (H, W) float32 in [0, 1].
    """
    maps, method = _explain_batch(model, _as_image(image), class_index)
    return maps[0], method


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def _colourise(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float RGB in [0, 1] through the colormap."""
    from matplotlib import colormaps

    return colormaps[COLORMAP](np.clip(heatmap, 0.0, 1.0))[..., :3]


def _gray(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"image must be (H, W) or (H, W, 1) grayscale; got shape {array.shape}")
    return np.clip(_to_float(array), 0.0, 1.0)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map in colour (jet: blue = cold, red = hot) blended over the gray image.

    ``image`` (H, W) or (H, W, 1) in [0, 1]; ``heatmap`` (H, W) in [0, 1]; ``alpha`` the
    weight of the heat map, 0 (image only) to 1 (heat map only). Returns (H, W, 3) uint8 RGB.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1; got {alpha}")
    gray = _gray(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != gray.shape:
        raise ValueError(f"heat map shape {heat.shape} differs from image shape {gray.shape}")
    heat = np.nan_to_num(heat, nan=0.0)
    blended = (1.0 - alpha) * gray[..., np.newaxis] + alpha * _colourise(heat)
    return _to_uint8(blended)


def _labels(true_labels: Sequence[int | str], count: int) -> np.ndarray:
    labels = [index_of(t) if isinstance(t, str) else int(t) for t in true_labels]
    if len(labels) != count:
        raise ValueError(f"{count} images but {len(labels)} true labels")
    for label in labels:
        char_of(label)  # raises LabelError (a ValueError) outside 0..51
    return np.asarray(labels, dtype=np.int64)


def explanation_grid(
    model: keras.Model, images: Sequence[np.ndarray] | np.ndarray,
    true_labels: Sequence[int | str], path: str | Path, title: str,
) -> None:
    """Save a PNG grid explaining the model's predictions, one row per image.

    Each row: the input, the heat map of the predicted class (:func:`explain`: Grad-CAM or
    saliency), the overlay, and "true X / predicted Y (p=0.93)". Wrong predictions are framed
    and written in red, right ones in green. ``images`` is (N, H, W) or (N, H, W, 1) in [0, 1];
    ``true_labels`` are class indices (or letters). Predictions and heat maps are each
    computed in one batched pass.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    batch = _as_batch(images)
    count = batch.shape[0]
    if count == 0:
        raise ValueError("explanation_grid needs at least one image")
    truth = _labels(true_labels, count)
    _check_fits(model, batch)
    probabilities = np.asarray(model(batch, training=False))
    predicted = probabilities.argmax(axis=-1)
    confidence = probabilities[np.arange(count), predicted]
    heatmaps, method = _explain_batch(model, batch, predicted)

    height, width = batch.shape[1:3]
    scale = max(1, int(np.ceil(96 / max(height, width))))  # small letters stay visible
    tile_h, tile_w = height * scale, width * scale
    gap, frame, text_w, top = 10, 3, 300, 56
    row_h = tile_h + gap
    tiles_w = gap + 3 * (tile_w + gap)
    mosaic = np.full((top + count * row_h, tiles_w + text_w, 3), 255, dtype=np.uint8)

    def enlarge(tile: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)

    red, green = (0.85, 0.0, 0.0), (0.0, 0.45, 0.1)
    captions = []
    for row in range(count):
        gray = _gray(batch[row])
        tiles = (
            _to_uint8(np.repeat(gray[..., np.newaxis], 3, axis=-1)),
            _to_uint8(_colourise(heatmaps[row])),
            overlay(gray, heatmaps[row]),
        )
        y = top + row * row_h + gap // 2
        for column, tile in enumerate(tiles):
            x = gap + column * (tile_w + gap)
            mosaic[y:y + tile_h, x:x + tile_w] = enlarge(tile)
        wrong = predicted[row] != truth[row]
        if wrong:
            y0, y1 = y - gap // 2 + 1, y + tile_h + gap // 2 - 1
            x0, x1 = gap // 2, tiles_w - gap // 2
            colour = _to_uint8(np.asarray(red))
            mosaic[y0:y0 + frame, x0:x1] = colour
            mosaic[y1 - frame:y1, x0:x1] = colour
            mosaic[y0:y1, x0:x0 + frame] = colour
            mosaic[y0:y1, x1 - frame:x1] = colour
        text = (f"true {char_of(truth[row])} / predicted {char_of(predicted[row])} "
                f"(p={confidence[row]:.2f})")
        if wrong:
            text += "\nWRONG"
        captions.append((tiles_w + 4, y + tile_h / 2, text, red if wrong else green, wrong))

    dpi = 100
    figure = Figure(figsize=(mosaic.shape[1] / dpi, mosaic.shape[0] / dpi), dpi=dpi)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(mosaic, interpolation="nearest")
    axes.set_axis_off()
    axes.text(mosaic.shape[1] / 2, 6, title, ha="center", va="top", fontsize=11,
              fontweight="bold")
    headers = ("input", f"heat map ({method})", "overlay")
    for column, header in enumerate(headers):
        axes.text(gap + column * (tile_w + gap) + tile_w / 2, top - 6, header, ha="center",
                  va="bottom", fontsize=9)
    for caption_x, caption_y, text, caption_colour, wrong in captions:
        axes.text(caption_x, caption_y, text, ha="left", va="center", fontsize=10,
                  color=caption_colour,
                  fontweight="bold" if wrong else "normal")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
