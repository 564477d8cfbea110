"""Explanations: Grad-CAM and saliency heat maps, their pictures, and clear errors."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from handwriting.evaluation import explain as ex  # noqa: E402
from handwriting.labels import NUM_CLASSES  # noqa: E402
from handwriting.models import zoo  # noqa: E402

_MODELS: dict[tuple[str, int], keras.Model] = {}


def model(arch: str, size: int = 32) -> keras.Model:
    """A randomly initialised model, built once per (arch, size) for the whole file."""
    key = (arch, size)
    if key not in _MODELS:
        keras.utils.set_random_seed(7)  # fixed weights: the same maps on every run
        hparams = {"weights": None} if arch.startswith("vgg16") else {}
        _MODELS[key] = zoo.build(arch, (size, size, 1), NUM_CLASSES, **hparams)
    return _MODELS[key]


def scribble(size: int = 32, seed: int = 0) -> np.ndarray:
    """A few random strokes, white ink on black, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size), dtype=np.uint8)
    for _ in range(3):
        (x0, y0), (x1, y1) = rng.integers(size // 8, size - size // 8, (2, 2))
        cv2.line(image, (int(x0), int(y0)), (int(x1), int(y1)), 255, max(1, size // 12))
    return image.astype(np.float32) / 255.0


def blob(centre: tuple[int, int], size: int = 32, radius: int = 5) -> np.ndarray:
    image = np.zeros((size, size), dtype=np.uint8)
    cv2.circle(image, (centre[1], centre[0]), radius, 255, -1)
    return image.astype(np.float32) / 255.0


# Top-right and bottom-left: a transposed or flipped map would land in the wrong quadrant.
TOP_RIGHT, BOTTOM_LEFT = blob((8, 23)), blob((23, 8))


def top_right(heat: np.ndarray) -> float:
    return float(heat[:16, 16:].sum() / heat.sum())


def bottom_left(heat: np.ndarray) -> float:
    return float(heat[16:, :16].sum() / heat.sum())


@pytest.fixture(scope="module")
def location_model() -> keras.Model:
    """A 32x32 lenet5 whose weights are set so that its class-0 logit is the amount of ink in
    the top-right of the image and its class-1 logit the ink in the bottom-left.

    conv1 and conv2 each have one box filter (channel 0) and nothing else; fc1 unit 0 sums the
    top-right 2x2 cells of the pooled 5x5 map, unit 1 the bottom-left ones; fc2 and the last
    layer pass units 0 and 1 to classes 0 and 1. Batch norm keeps its identity initialisation.
    """
    net = zoo.build("lenet5", (32, 32, 1), NUM_CLASSES, dropout=0.0)

    def set_layer(name: str, fill) -> None:
        layer = net.get_layer(name)
        kernel, bias = (np.zeros_like(w) for w in layer.get_weights())
        fill(kernel)
        layer.set_weights([kernel, bias])

    def box(kernel):
        kernel[:, :, 0, 0] = 1.0 / 25.0

    def regions(kernel):
        # flatten of the (5, 5, 16) map: index (row * 5 + col) * 16 + channel
        for row, col in ((0, 3), (0, 4), (1, 3), (1, 4)):
            kernel[(row * 5 + col) * 16, 0] = 1.0
        for row, col in ((3, 0), (3, 1), (4, 0), (4, 1)):
            kernel[(row * 5 + col) * 16, 1] = 1.0

    def first_two(kernel):
        kernel[0, 0] = kernel[1, 1] = 1.0

    set_layer("conv1", box)
    set_layer("conv2", box)
    set_layer("fc1", regions)
    set_layer("fc2", first_two)
    set_layer("probabilities", first_two)
    probabilities = np.asarray(net(np.stack([TOP_RIGHT, BOTTOM_LEFT])[..., None], training=False))
    assert list(probabilities.argmax(axis=-1)) == [0, 1]  # the premise of the tests below
    return net


# --------------------------------------------------------------------------------------------
# Shapes and ranges
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("arch, method", [
    ("lenet5", "grad-cam"), ("lenet5_gru", "grad-cam"), ("vgg16", "grad-cam"),
    ("rescnn", "grad-cam"), ("gru", "saliency"),
])
def test_heat_map_has_the_image_shape_and_is_in_0_1(arch, method, size):
    net = model(arch, size)
    heat, used = ex.explain(net, scribble(size))
    assert used == method
    assert heat.shape == (size, size)
    assert heat.dtype == np.float32
    assert np.isfinite(heat).all()
    assert heat.min() >= 0.0
    assert heat.max() == pytest.approx(1.0)  # max-normalised, not merely bounded


def test_vgg16_gru_and_lstm_and_channel_axis():
    image = scribble(32, seed=3)
    heat = ex.grad_cam(model("vgg16_gru"), image[..., None])  # (H, W, 1) accepted too
    assert heat.shape == (32, 32) and 0.0 <= heat.min() and heat.max() == pytest.approx(1.0)
    heat = ex.saliency(model("lstm"), image)
    assert heat.shape == (32, 32) and 0.0 <= heat.min() and heat.max() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Which layer, which method
# --------------------------------------------------------------------------------------------


def test_last_conv_layer_names():
    assert ex.last_conv_layer(model("lenet5")) == "conv2"
    assert ex.last_conv_layer(model("lenet5_gru")) == "conv3"
    # A residual block's last convolution is not a cut: the sum with the shortcut is.
    assert ex.last_conv_layer(model("rescnn")) == "block3_add"
    assert ex.last_conv_layer(model("gru")) is None
    assert ex.last_conv_layer(model("lstm")) is None
    vgg = model("vgg16")
    name = ex.last_conv_layer(vgg)
    assert name is not None and name.startswith("block") and "_conv" in name
    base = vgg.get_layer(zoo.VGG_BASE_RANDOM)
    assert min(base.get_layer(name).output.shape[1:3]) >= 2
    # the last conv with a spatial map: nothing later in the base is a conv with one
    later = [layer for layer in base.layers[base.layers.index(base.get_layer(name)) + 1:]
             if isinstance(layer, keras.layers.Conv2D)]
    assert all(min(layer.output.shape[1:3]) < 2 for layer in later)


def test_last_conv_layer_skips_a_1x1_map():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="spatial")(inputs)  # 6x6
    x = keras.layers.Conv2D(4, 6, name="pointlike")(x)  # 1x1
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    assert ex.last_conv_layer(keras.Model(inputs, outputs)) == "spatial"


@pytest.mark.parametrize("arch", ["lenet5", "lenet5_gru", "vgg16", "gru", "lstm"])
def test_explain_picks_grad_cam_for_convolutions_and_saliency_otherwise(arch):
    net, image = model(arch), scribble(32, seed=1)
    heat, method = ex.explain(net, image)
    if arch in ("gru", "lstm"):
        assert method == "saliency"
        np.testing.assert_allclose(heat, ex.saliency(net, image), atol=1e-6)
    else:
        assert method == "grad-cam"
        np.testing.assert_allclose(heat, ex.grad_cam(net, image), atol=1e-6)


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_grad_cam_without_a_convolution_says_so(arch):
    with pytest.raises(ValueError, match=r"(?i)convolution.*saliency"):
        ex.grad_cam(model(arch), scribble())


def test_clear_errors_for_bad_arguments():
    net = model("lenet5")
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        ex.grad_cam(net, scribble(), layer_name="conv9")
    with pytest.raises(ValueError, match="32x32"):
        ex.grad_cam(net, scribble(48))
    with pytest.raises(ValueError, match="outside 0..51"):
        ex.saliency(net, scribble(), class_index=52)
    with pytest.raises(ValueError, match="grayscale"):
        ex.explain(net, np.zeros((32, 32, 3), np.float32))


# --------------------------------------------------------------------------------------------
# The maps are the right ones
# --------------------------------------------------------------------------------------------


def reference_grad_cam(lower, rest, image: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM written out by hand from two functions: input -> feature map -> logits."""
    features = lower(tf.constant(image[None, ..., None]))
    with tf.GradientTape() as tape:
        tape.watch(features)
        score = rest(features)[:, class_index]
    grads = tape.gradient(score, features)
    cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * features,
                                   axis=-1))[0].numpy()
    cam = cv2.resize(cam, image.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return cam / cam.max()


def logits_of(net: keras.Model, hidden):
    final = net.get_layer("probabilities")
    return tf.matmul(hidden, final.kernel) + final.bias


def test_grad_cam_matches_a_hand_written_reference_on_lenet5():
    net, image = model("lenet5"), scribble(seed=2)
    to_conv2 = keras.Model(net.inputs[0], net.get_layer("conv2").output)

    def rest(x):
        for name in ("bn2", "pool2", "flatten", "fc1", "fc2"):
            x = net.get_layer(name)(x, training=False)
        return logits_of(net, x)

    for class_index in (3, 40):
        expected = reference_grad_cam(to_conv2, rest, image, class_index)
        np.testing.assert_allclose(ex.grad_cam(net, image, class_index), expected, atol=1e-5)


def test_grad_cam_matches_a_hand_written_reference_inside_the_vgg_base():
    net, image = model("vgg16"), scribble(seed=4)
    base = net.get_layer(zoo.VGG_BASE_RANDOM)
    inner = [layer for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    layer_name = "block4_conv3"
    cut = [layer.name for layer in inner].index(layer_name) + 1

    def lower(x):
        x = net.get_layer("gray_to_3_channels")([x, x, x])
        x = net.get_layer("imagenet_mean")(net.get_layer("to_0_255")(x))
        for layer in inner[:cut]:
            x = layer(x)
        return x

    def rest(x):
        for layer in inner[cut:]:
            x = layer(x)
        return logits_of(net, net.get_layer("fc")(net.get_layer("global_pool")(x)))

    expected = reference_grad_cam(lower, rest, image, 11)
    actual = ex.grad_cam(net, image, class_index=11, layer_name=layer_name)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("arch, hidden", [("lenet5", "dropout2"), ("gru", "dropout2")])
def test_saliency_matches_a_hand_written_reference(arch, hidden):
    net, image = model(arch), scribble(seed=6)
    to_hidden = keras.Model(net.inputs[0], net.get_layer(hidden).output)
    x = tf.constant(image[None, ..., None])
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = logits_of(net, to_hidden(x, training=False))[:, 9]
    expected = np.abs(tape.gradient(score, x).numpy()[0, ..., 0])
    expected /= expected.max()
    np.testing.assert_allclose(ex.saliency(net, image, class_index=9), expected, atol=1e-5)


def test_the_default_class_is_the_predicted_one():
    net, image = model("lenet5"), scribble(seed=5)
    predicted = int(np.asarray(net(image[None, ..., None], training=False)).argmax())
    other = (predicted + 1) % NUM_CLASSES
    np.testing.assert_allclose(ex.grad_cam(net, image), ex.grad_cam(net, image, predicted))
    np.testing.assert_allclose(ex.saliency(net, image), ex.saliency(net, image, predicted))
    assert not np.allclose(ex.saliency(net, image), ex.saliency(net, image, other), atol=0.05)


@pytest.mark.parametrize("explainer", [ex.grad_cam, ex.saliency])
def test_the_heat_lies_where_the_ink_drives_the_class(location_model, explainer):
    top = explainer(location_model, TOP_RIGHT, class_index=0)
    bottom = explainer(location_model, BOTTOM_LEFT, class_index=1)
    assert top_right(top) > 0.8 and bottom_left(top) < 0.05
    assert bottom_left(bottom) > 0.8 and top_right(bottom) < 0.05
    # by default the predicted class is explained: the same maps
    np.testing.assert_allclose(explainer(location_model, TOP_RIGHT), top, atol=1e-6)
    np.testing.assert_allclose(explainer(location_model, BOTTOM_LEFT), bottom, atol=1e-6)


def test_saliency_tells_the_classes_apart_on_one_image(location_model):
    both = np.maximum(TOP_RIGHT, BOTTOM_LEFT)
    for_top = ex.saliency(location_model, both, class_index=0)
    for_bottom = ex.saliency(location_model, both, class_index=1)
    assert top_right(for_top) > 0.8 and bottom_left(for_bottom) > 0.8
    # Grad-CAM, in contrast, weighs whole channels: the one ink channel lights up both blobs.
    cam = ex.grad_cam(location_model, both, class_index=0)
    assert top_right(cam) > 0.3 and bottom_left(cam) > 0.3


def test_different_images_give_different_maps():
    first, second = scribble(seed=10), scribble(seed=11)
    for arch in ("lenet5", "gru"):
        net = model(arch)
        a, _ = ex.explain(net, first)
        b, _ = ex.explain(net, second)
        assert np.abs(a - b).max() > 0.2, arch


def test_a_blank_image_is_explained_differently_from_an_inked_one(location_model):
    blank = np.zeros((32, 32), np.float32)
    # no ink, no active unit: no gradient anywhere
    assert not ex.saliency(location_model, blank, class_index=0).any()
    assert ex.saliency(location_model, TOP_RIGHT, class_index=0).max() == pytest.approx(1.0)
    net = model("gru")
    assert np.abs(ex.saliency(net, blank) - ex.saliency(net, scribble())).max() > 0.2


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def test_overlay_blends_the_colormap_over_the_image():
    image = np.zeros((32, 48), np.float32)
    image[10:20, 10:30] = 1.0
    heat = np.zeros((32, 48), np.float32)
    heat[:, 24:] = 1.0
    rgb = ex.overlay(image, heat)
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    # jet: hot is red, cold is blue
    assert rgb[0, 40, 0] > rgb[0, 40, 2] and rgb[0, 5, 2] > rgb[0, 5, 0]
    # the image shows through: ink is brighter than background under the same heat
    assert rgb[15, 15].sum() > rgb[25, 15].sum()
    np.testing.assert_array_equal(ex.overlay(image[..., None], heat, alpha=0.0)[..., 1],
                                  (image * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="shape"):
        ex.overlay(image, heat[:16])
    with pytest.raises(ValueError, match="alpha"):
        ex.overlay(image, heat, alpha=1.5)


def red_pixels(path) -> int:
    bgr = cv2.imread(str(path)).astype(int)
    blue, green, red = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    return int(((red > 180) & (green < 60) & (blue < 60)).sum())


def test_explanation_grid_writes_one_row_per_image_and_marks_mistakes(tmp_path):
    net = model("lenet5")
    images = np.stack([scribble(seed=20 + k) for k in range(6)])
    predicted = np.asarray(net(images[..., None], training=False)).argmax(axis=-1)

    right, wrong = tmp_path / "right.png", tmp_path / "sub" / "wrong.png"
    ex.explanation_grid(net, images, predicted, right, "all right")
    ex.explanation_grid(net, images, (predicted + 1) % NUM_CLASSES, wrong, "all wrong")
    two = tmp_path / "two.png"
    ex.explanation_grid(net, images[:2], predicted[:2], two, "two")

    for path in (right, wrong, two):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        picture = cv2.imread(str(path))
        assert picture is not None and picture.ndim == 3
    # four more rows make the picture taller by at least four images' height
    assert cv2.imread(str(right)).shape[0] - cv2.imread(str(two)).shape[0] >= 4 * 32
    # same heat maps in both; only the marking of wrong predictions adds red
    assert red_pixels(wrong) > red_pixels(right) + 6 * 100


def test_explanation_grid_is_fast_and_accepts_letters(tmp_path):
    net = model("lenet5")
    images = np.stack([scribble(seed=k) for k in range(16)])
    labels = list("ABCDEFGHabcdefgh")
    ex.explanation_grid(net, images[:2], labels[:2], tmp_path / "warm.png", "warm-up")
    start = time.perf_counter()
    ex.explanation_grid(net, images[..., None], labels, tmp_path / "grid.png", "16 letters")
    assert time.perf_counter() - start < 10.0  # ~0.4 s here; one batched pass, not 16
    assert cv2.imread(str(tmp_path / "grid.png")) is not None
    with pytest.raises(ValueError, match="2 images but 3 true labels"):
        ex.explanation_grid(net, images[:2], [0, 1, 2], tmp_path / "bad.png", "bad")
