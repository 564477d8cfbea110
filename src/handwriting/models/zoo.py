"""The model zoo: one Keras 3 builder per architecture of the seed report.

Every builder has the signature ``build_<arch>(input_shape, num_classes, **hparams)`` with
explicit keyword hyperparameters, and returns an uncompiled :class:`keras.Model` that

* takes ``(H, W, 1)`` float32 images in [0, 1] with ink = 1 (H = W = ``base.image_size``,
  32 to 128),
* ends in ``Dense(num_classes, activation="softmax")``,
* is named after its architecture (``model.name == "lenet5"`` ...).

Sizes that depend on the image (a flatten, a reshape into a sequence) are read from the
actual feature-map shape, so every builder works for every image size from 32 to 128.

Pick an architecture by name with :func:`build` (which refuses unknown names and unknown
hyperparameters with a ValueError) or call a builder directly.

VGG-16 models and pretrained weights
------------------------------------
``build_vgg16`` and ``build_vgg16_gru`` embed the Keras VGG-16 convolutional base as a nested
model, frozen. Its ``weights`` hyperparameter is ``"imagenet"`` (download or Keras cache;
when neither is possible a loud warning goes to stderr and the base starts from random
weights), ``None`` (random) or the path of a local weights file. Whether the base actually
started from pretrained weights is recorded in the base layer's *name*
(``vgg16_base_pretrained`` or ``vgg16_base_random``), which survives ``.keras``
saving and loading; read it with :func:`is_pretrained`, or get it at build time from
:func:`build_with_info`. After training the head, :func:`unfreeze_top_vgg_blocks` makes the top
convolutional blocks trainable for fine-tuning (recompile the model afterwards).

Nothing is built at import time.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
from keras import layers

from handwriting.models.registry import REGISTRY

# The ImageNet channel means VGG-16 was trained with, in its BGR channel order ("caffe" mode
# of keras.applications.vgg16.preprocess_input), on a 0..255 scale.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
# File name of the Keras VGG-16 convolutional-base weights (what weights="imagenet" downloads).
VGG16_NOTOP_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    + VGG16_NOTOP_WEIGHTS_FILE
)
# The VGG base layer's name records whether it started from pretrained weights.
VGG_BASE_PRETRAINED = "vgg16_base_pretrained"
VGG_BASE_RANDOM = "vgg16_base_random"
VGG_BLOCKS = 5
# Smallest image side: VGG-16 needs 32 (five 2x2 poolings); the other models follow suit.
MIN_IMAGE_SIZE = 32
# Hidden width of the additive attention pooling.
ATTENTION_UNITS = 64


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------


def _image_input(input_shape: Sequence[int]) -> keras.KerasTensor:
    """``keras.Input`` for (H, W, 1) images, after checking the shape."""
    shape = tuple(int(side) for side in input_shape)
    if len(shape) != 3 or shape[-1] != 1:
        raise ValueError(
            f"input_shape must be (H, W, 1) for grayscale images; got {tuple(input_shape)}"
        )
    if min(shape[:2]) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"images must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}; "
            f"got input_shape {shape}"
        )
    return keras.Input(shape=shape, name="image")


def _classifier(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """The final layer every model shares: class probabilities."""
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def _recurrent(
    cell: type[layers.Layer], units: int, *, return_sequences: bool, bidirectional: bool,
    name: str,
) -> layers.Layer:
    """An LSTM or GRU layer, optionally wrapped in Bidirectional."""
    layer = cell(units, return_sequences=return_sequences, name=name)
    if bidirectional:
        return layers.Bidirectional(layer, name=f"bidirectional_{name}")
    return layer


def _attention_pooling(sequence: keras.KerasTensor, name: str = "attention") -> keras.KerasTensor:
    """Additive attention pooling: (batch, steps, features) -> (batch, features).

    score_t = v . tanh(W h_t + b); weights = softmax of the scores over time; the output is the
    weighted sum of the h_t. Standard layers only (no Lambda), so the model saves as ``.keras``.
    """
    features = sequence.shape[-1]
    hidden = layers.Dense(ATTENTION_UNITS, activation="tanh", name=f"{name}_hidden")(sequence)
    scores = layers.Dense(1, use_bias=False, name=f"{name}_scores")(hidden)  # (batch, steps, 1)
    weights = layers.Softmax(axis=1, name=f"{name}_weights")(scores)  # over the time steps
    context = layers.Dot(axes=1, name=f"{name}_sum")([weights, sequence])  # (batch, 1, features)
    return layers.Reshape((features,), name=f"{name}_pooled")(context)


def _sequence_summary(
    sequence: keras.KerasTensor, cell: type[layers.Layer], units: int, *, bidirectional: bool,
    attention: bool, name: str,
) -> keras.KerasTensor:
    """The last recurrent layer: its final state, or attention pooling over all its states."""
    x = _recurrent(cell, units, return_sequences=attention, bidirectional=bidirectional,
                   name=name)(sequence)
    if attention:
        x = _attention_pooling(x)
    return x


def _vgg_preprocessing(image: keras.KerasTensor) -> keras.KerasTensor:
    """Grayscale [0, 1] -> what VGG-16 expects: 3 channels on 0..255, ImageNet BGR means removed.

    The same as ``keras.applications.vgg16.preprocess_input`` on the image scaled to 0..255 and
    replicated to 3 channels (the RGB->BGR flip changes nothing on a gray image), but done with
    layers so it is part of the model, in training and in serving alike.
    """
    x = layers.Concatenate(axis=-1, name="gray_to_3_channels")([image, image, image])
    x = layers.Rescaling(255.0, name="to_0_255")(x)
    return layers.Normalization(
        mean=list(IMAGENET_BGR_MEAN), variance=[1.0, 1.0, 1.0], name="imagenet_mean"
    )(x)


# --------------------------------------------------------------------------------------------
# VGG-16 base and weights
# --------------------------------------------------------------------------------------------


def _warn_no_imagenet(error: BaseException) -> None:
    """The loud warning for ImageNet weights that could not be loaded."""
    bar = "!" * 78
    print(
        f"\n{bar}\n"
        "WARNING: the ImageNet weights of VGG-16 could not be loaded:\n"
        f"    {type(error).__name__}: {error}\n"
        "The VGG-16 base starts from RANDOM initialisation (pretrained=False); with its base\n"
        "frozen it will learn little. Two remedies:\n"
        "  1. run once with network access, so that Keras downloads the weights and caches\n"
        f"     them in ~/.keras/models/{VGG16_NOTOP_WEIGHTS_FILE}; or\n"
        f"  2. download {VGG16_NOTOP_WEIGHTS_FILE}\n"
        f"     (from {VGG16_NOTOP_WEIGHTS_URL})\n"
        "     and set the `weights` hyperparameter to its path.\n"
        f"{bar}\n",
        file=sys.stderr,
        flush=True,
    )


def vgg16_base(
    input_shape: Sequence[int], weights: str | Path | None = "imagenet"
) -> tuple[keras.Model, bool]:
    """The Keras VGG-16 convolutional base for images of ``input_shape[:2]``, and whether it is
    pretrained.

    ``input_shape`` is the image's (H, W, ...) shape; the base always takes 3 channels.
    ``weights``:

    * ``"imagenet"``: ``keras.applications.VGG16(weights="imagenet")``, which downloads the
      weights once and caches them in ``~/.keras/models``. When that fails (no network and no
      cache) a loud warning naming the remedies goes to stderr and the base starts from random
      weights: returns ``(base, False)``.
    * ``None``: random initialisation, ``(base, False)``.
    * a path: a local weights file, such as ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``
      (legacy ``.h5`` layout) or a ``.weights.h5`` file written by ``base.save_weights``:
      ``(base, True)``. A missing file raises FileNotFoundError naming the path; a file that
      does not fit raises ValueError.

    The base is returned trainable; the builders freeze it. Its name is ``vgg16_base_pretrained``
    or ``vgg16_base_random`` (see :func:`is_pretrained`).
    """
    shape = (int(input_shape[0]), int(input_shape[1]), 3)

    def vgg(weights_arg: str | None, pretrained: bool) -> keras.Model:
        return keras.applications.VGG16(
            include_top=False,
            weights=weights_arg,
            input_shape=shape,
            name=VGG_BASE_PRETRAINED if pretrained else VGG_BASE_RANDOM,
        )

    if weights is None:
        return vgg(None, pretrained=False), False

    if isinstance(weights, str) and weights == "imagenet":
        try:
            return vgg("imagenet", pretrained=True), True
        except Exception as error:  # offline and not cached (or a corrupt cache)
            _warn_no_imagenet(error)
            # An error that has nothing to do with the weights happens again here and surfaces.
            return vgg(None, pretrained=False), False

    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG-16 weights file not found: {path} "
            '(weights must be "imagenet", None or the path of an existing weights file, '
            f"such as {VGG16_NOTOP_WEIGHTS_FILE})"
        )
    try:
        return vgg(str(path), pretrained=True), True
    except Exception as error:
        raise ValueError(
            f"could not load VGG-16 weights from {path}: {type(error).__name__}: {error}"
        ) from error


def find_vgg_base(model: keras.Model) -> keras.Model | None:
    """The nested VGG-16 base of a model, or None."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(
            sub.name == "block5_conv3" for sub in layer.layers
        ):
            return layer
    return None


def is_pretrained(model: keras.Model) -> bool:
    """Whether the model's VGG-16 base started from pretrained weights.

    Read from the base layer's name, so it also holds for a model loaded from ``.keras``.
    Models without a VGG-16 base (trained from scratch) give False.
    """
    base = find_vgg_base(model)
    return base is not None and base.name == VGG_BASE_PRETRAINED


def _block_of(layer_name: str) -> int | None:
    match = re.match(r"block(\d+)_", layer_name)
    return int(match.group(1)) if match else None


def unfreeze_top_vgg_blocks(model: keras.Model, blocks: int) -> list[str]:
    """Make the top ``blocks`` convolutional blocks of the VGG-16 base trainable, for fine-tuning.

    ``blocks=3`` (as in the seed) unfreezes block5, block4 and block3 and keeps block1 and
    block2 frozen; ``blocks=0`` freezes the whole base again. Works on ``vgg16`` and
    ``vgg16_gru`` models. Compile the model again afterwards (Keras reads trainability at
    compile time), usually with a smaller learning rate. Returns the names of the trainable
    convolution layers of the base.
    """
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 0 <= blocks <= VGG_BLOCKS:
        raise ValueError(f"blocks must be an integer from 0 to {VGG_BLOCKS}; got {blocks!r}")
    base = find_vgg_base(model)
    if base is None:
        raise ValueError(f"model {model.name!r} has no VGG-16 base to unfreeze")
    first_trainable = VGG_BLOCKS - blocks + 1
    base.trainable = True  # then freeze the lower blocks layer by layer
    for layer in base.layers:
        block = _block_of(layer.name)
        layer.trainable = block is not None and block >= first_trainable
    return [
        layer.name for layer in base.layers
        if layer.trainable and isinstance(layer, layers.Conv2D)
    ]


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def build_lenet5(
    input_shape: Sequence[int], num_classes: int, *, dropout: float = 0.3
) -> keras.Model:
    """LeNet-5 with batch normalisation and dropout.

    Conv 6@5x5 -> BN -> pool -> Conv 16@5x5 -> BN -> pool -> Dense 120 -> Dense 84 -> softmax,
    with ``dropout`` after each hidden Dense. Valid convolutions, as in LeNet-5 (32x32 -> 5x5x16).
    """
    inputs = _image_input(input_shape)
    x = layers.Conv2D(6, 5, activation="relu", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 5, activation="relu", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Dense(84, activation="relu", name="fc2")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="lenet5")


def build_vgg16(
    input_shape: Sequence[int], num_classes: int, *,
    weights: str | Path | None = "imagenet", dropout: float = 0.5,
) -> keras.Model:
    """VGG-16 transfer learning: the frozen VGG-16 convolutional base and a small head.

    Gray -> 3 channels and ImageNet scaling (inside the model) -> VGG-16 base (frozen) ->
    global average pooling -> Dense 256 -> Dropout -> softmax. ``weights``: see
    :func:`vgg16_base`; read back whether they loaded with :func:`is_pretrained`.
    """
    inputs = _image_input(input_shape)
    x = _vgg_preprocessing(inputs)
    base, _ = vgg16_base(input_shape, weights)
    base.trainable = False
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dense(256, activation="relu", name="fc")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="vgg16")


def _build_rnn(
    cell: type[layers.Layer], name: str, input_shape: Sequence[int], num_classes: int, *,
    units: int, dropout: float, bidirectional: bool, attention: bool,
) -> keras.Model:
    """The row-sequence recurrent model shared by ``lstm`` and ``gru``."""
    inputs = _image_input(input_shape)
    height, width, channels = inputs.shape[1:]
    x = layers.Reshape((height, width * channels), name="rows_as_steps")(inputs)
    x = _recurrent(cell, units, return_sequences=True, bidirectional=bidirectional,
                   name=f"{name}1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Dropout(0.3, name="dropout1")(x)
    x = _sequence_summary(x, cell, units, bidirectional=bidirectional, attention=attention,
                          name=f"{name}2")
    x = layers.Dense(256, activation="relu", name="fc")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def build_lstm(
    input_shape: Sequence[int], num_classes: int, *, units: int = 128, dropout: float = 0.5,
    bidirectional: bool = False, attention: bool = False,
) -> keras.Model:
    """An LSTM reading the image row by row (H time steps of W pixels).

    LSTM(units, sequences) -> BN -> Dropout 0.3 -> LSTM(units) -> Dense 256 -> Dropout -> softmax.
    ``bidirectional`` wraps both LSTMs in Bidirectional; ``attention`` replaces the last LSTM's
    final state by additive attention pooling over all its states.
    """
    return _build_rnn(layers.LSTM, "lstm", input_shape, num_classes, units=units,
                      dropout=dropout, bidirectional=bidirectional, attention=attention)


def build_gru(
    input_shape: Sequence[int], num_classes: int, *, units: int = 128, dropout: float = 0.5,
    bidirectional: bool = False, attention: bool = False,
) -> keras.Model:
    """A GRU reading the image row by row: :func:`build_lstm` with GRU layers."""
    return _build_rnn(layers.GRU, "gru", input_shape, num_classes, units=units,
                      dropout=dropout, bidirectional=bidirectional, attention=attention)


def _gru_head(x: keras.KerasTensor, *, units: int, fc_units: int, dropout: float,
              bidirectional: bool, attention: bool) -> keras.KerasTensor:
    """The recurrent head of the hybrids over a (batch, steps, features) sequence:
    GRU(units, sequences) -> BN -> GRU(units) or attention pooling -> BN -> Dense(fc_units) ->
    Dropout."""
    x = _recurrent(layers.GRU, units, return_sequences=True, bidirectional=bidirectional,
                   name="gru1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = _sequence_summary(x, layers.GRU, units, bidirectional=bidirectional,
                          attention=attention, name="gru2")
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Dense(fc_units, activation="relu", name="fc")(x)
    return layers.Dropout(dropout, name="dropout")(x)


def build_lenet5_gru(
    input_shape: Sequence[int], num_classes: int, *, units: int = 128, dropout: float = 0.0,
    bidirectional: bool = False, attention: bool = False,
) -> keras.Model:
    """LeNet-style convolutions, then a GRU over the rows of the feature map.

    Three blocks (6, 16, 32 filters of 5x5, same padding, ReLU, BN, 2x2 pool), the (h, w, c) map
    as h steps of w*c features, GRU(units, sequences) -> BN -> GRU(units) -> BN -> Dense 84 ->
    Dropout(``dropout``) -> softmax. ``bidirectional`` and ``attention`` as in :func:`build_lstm`.
    """
    inputs = _image_input(input_shape)
    x = inputs
    for block, filters in enumerate((6, 16, 32), start=1):
        x = layers.Conv2D(filters, 5, padding="same", activation="relu", name=f"conv{block}")(x)
        x = layers.BatchNormalization(name=f"conv_bn{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    height, width, channels = x.shape[1:]
    x = layers.Reshape((height, width * channels), name="rows_as_steps")(x)
    x = _gru_head(x, units=units, fc_units=84, dropout=dropout,
                  bidirectional=bidirectional, attention=attention)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="lenet5_gru")


def build_vgg16_gru(
    input_shape: Sequence[int], num_classes: int, *,
    weights: str | Path | None = "imagenet", units: int = 128, dropout: float = 0.3,
    bidirectional: bool = False, attention: bool = False,
) -> keras.Model:
    """The frozen VGG-16 base, then a GRU over its spatial positions.

    Gray -> 3 channels and ImageNet scaling -> VGG-16 base (frozen) -> the (h, w, 512) map as
    h*w steps of 512 features -> GRU(units, sequences) -> BN -> GRU(units) -> BN -> Dense 256 ->
    Dropout -> softmax. ``weights`` as in :func:`build_vgg16`; ``bidirectional`` and
    ``attention`` as in :func:`build_lstm`. At 32x32 the VGG map is 1x1, a single step, so
    attention has nothing to choose from (Keras warns about a softmax over one element).
    """
    inputs = _image_input(input_shape)
    x = _vgg_preprocessing(inputs)
    base, _ = vgg16_base(input_shape, weights)
    base.trainable = False
    x = base(x)
    height, width, channels = x.shape[1:]
    x = layers.Reshape((height * width, channels), name="positions_as_steps")(x)
    x = _gru_head(x, units=units, fc_units=256, dropout=dropout,
                  bidirectional=bidirectional, attention=attention)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="vgg16_gru")


def _residual_block(x: keras.KerasTensor, filters: int, *, stride: int,
                    name: str) -> keras.KerasTensor:
    """Two 3x3 convolutions with batch normalisation, added to the input (projected by a
    strided 1x1 convolution when the shape changes), then ReLU."""
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 name=f"{name}_project")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_project_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def build_rescnn(
    input_shape: Sequence[int], num_classes: int, *, width: int = 24, dropout: float = 0.3,
) -> keras.Model:
    """A compact residual CNN, beyond the seed's six: built to read real handwriting fast.

    Stem: 3x3 convolution, stride 2, ``width`` filters, BN, ReLU -> three residual blocks of
    ``width``, 2x``width`` and 4x``width`` filters (the last two halve the map) -> global
    average pooling -> Dropout(``dropout``) -> softmax. Global pooling makes it work at every
    image size; at 32x32 and width 24 it costs about 7 million multiply-adds per image.
    """
    inputs = _image_input(input_shape)
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(
        inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for block, (factor, stride) in enumerate(((1, 1), (2, 2), (4, 2)), start=1):
        x = _residual_block(x, width * factor, stride=stride, name=f"block{block}")
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="rescnn")


# --------------------------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------------------------

# Every architecture of the registry (its metadata: handwriting.models.registry), by name, to
# its builder: the zoo's convention is one ``build_<name>`` per registered name.
ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    name: globals()[f"build_{name}"] for name in REGISTRY
}


def _builder(arch: str) -> Callable[..., keras.Model]:
    try:
        return ARCHITECTURES[arch]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown architecture {arch!r}; valid architectures: {', '.join(ARCHITECTURES)}"
        ) from None


def default_hparams(arch: str) -> dict[str, Any]:
    """The hyperparameters an architecture takes, with their defaults."""
    parameters = inspect.signature(_builder(arch)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build(arch: str, input_shape: Sequence[int], num_classes: int, **hparams: Any) -> keras.Model:
    """Build architecture ``arch`` (a key of :data:`ARCHITECTURES`) with the given hyperparameters.

    Raises ValueError for an unknown architecture or a hyperparameter it does not take, naming
    the valid ones.
    """
    builder = _builder(arch)
    valid = default_hparams(arch)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for architecture {arch!r}; "
            f"valid: {', '.join(valid) or '(none)'}"
        )
    return builder(input_shape, num_classes, **hparams)


def build_with_info(
    arch: str, input_shape: Sequence[int], num_classes: int, **hparams: Any
) -> tuple[keras.Model, dict[str, Any]]:
    """:func:`build`, plus ``{"pretrained": bool}``: whether a VGG-16 base started from
    pretrained weights (always False for the other architectures)."""
    model = build(arch, input_shape, num_classes, **hparams)
    return model, {"pretrained": is_pretrained(model)}
